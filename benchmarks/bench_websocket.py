"""WebSocket middleware cost against the same consumer without it, measured in one run.

    .venv/bin/python benchmarks/bench_websocket.py [--messages 500] [--connects 50] [--rounds 40]

In process, through Channels' WebsocketCommunicator (no network), so the
figures isolate what the middleware adds:

* messages/second on an authenticated socket (one JSON message in, one out)
  against the same consumer with no middleware — target ≥ 0.95×;
* connect-and-identify time (until ``identified`` arrived, token as
  subprotocol or in an identify message) against a plain connect (until the
  accept) — target ≤ 1.3×.

Each case runs once per round, the cases interleaved so that load from
elsewhere hits them alike; the best round of each is compared. A first pass
uses the communicator's own methods, whose per-frame cost (they patch
``close_old_connections`` on every send and receive) is on both sides of
each ratio; a second pass drives the same communicator through asgiref's
base methods, leaving only the applications' work. On a shared machine the
ratios move by ±0.1 from run to run. Times nothing in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from django.conf import settings  # noqa: E402

# The middleware reads the key store in Channels' database thread: a file, not
# ":memory:" (which would be a different, empty database in that thread).
_DB_DIR = tempfile.mkdtemp(prefix="bench-ws-")
atexit.register(shutil.rmtree, _DB_DIR, ignore_errors=True)
settings.DATABASES["default"]["NAME"] = os.path.join(_DB_DIR, "bench.sqlite3")

import django  # noqa: E402

django.setup()

from asgiref.testing import ApplicationCommunicator as BaseCommunicator  # noqa: E402
from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from channels.testing import WebsocketCommunicator  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.urls import path  # noqa: E402

from chat_security import tokens  # noqa: E402
from chat_security.models import Key  # noqa: E402
from chat_security.websocket import ChatSecurityWebSocketMiddleware  # noqa: E402


class Echo(AsyncJsonWebsocketConsumer):
    """The same consumer for both: echoes the message and who sent it (if known)."""

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        identity = self.scope.get("chat_identity")
        await self.send_json({"echo": content, "user": identity.user_id if identity else None})


#: Wall time: it includes waiting for the database thread, as a client would.
CLOCK = time.perf_counter


def plain_app() -> Any:
    return URLRouter([path("ws/echo/", Echo.as_asgi())])


def guarded_app() -> Any:
    return ChatSecurityWebSocketMiddleware(plain_app())


class Frames:
    """How the benchmark exchanges events with the application.

    ``WebsocketCommunicator``'s own methods patch ``close_old_connections`` on
    every send and receive (a test convenience costing tens of µs per frame,
    which no server pays); ``raw`` drives the same communicator through the
    asgiref base methods, which leaves only the application's own work.
    """

    def __init__(self, raw: bool) -> None:
        self.raw = raw

    async def send(self, comm: WebsocketCommunicator, event: dict[str, Any]) -> None:
        await (BaseCommunicator.send_input(comm, event) if self.raw else comm.send_input(event))

    async def receive(self, comm: WebsocketCommunicator) -> dict[str, Any]:
        if self.raw:
            return await BaseCommunicator.receive_output(comm, 2)
        return await comm.receive_output(2)

    async def text(self, comm: WebsocketCommunicator, data: dict[str, Any]) -> None:
        await self.send(comm, {"type": "websocket.receive", "text": json.dumps(data)})

    async def json(self, comm: WebsocketCommunicator) -> dict[str, Any]:
        return json.loads((await self.receive(comm))["text"])


async def ready(frames: Frames, app: Any, token: str | None, via: str) -> WebsocketCommunicator:
    protocols = ["chat-security", token] if via == "subprotocol" else ["chat-security"]
    comm = WebsocketCommunicator(app, "/ws/echo/", subprotocols=protocols if token else None)
    await frames.send(comm, {"type": "websocket.connect"})
    accepted = await frames.receive(comm)
    assert accepted["type"] == "websocket.accept", accepted
    if token is not None:
        if via == "identify":
            await frames.text(comm, {"type": "identify", "token": token})
        identified = await frames.json(comm)
        assert identified["type"] == "identified", identified
    return comm


async def close(comm: WebsocketCommunicator) -> None:
    await comm.send_input({"type": "websocket.disconnect", "code": 1000})
    await comm.wait(2)


async def message_seconds(frames: Frames, app: Any, token: str | None, n: int) -> float:
    """Seconds per message round trip on one open (and, with a token, identified) socket."""
    comm = await ready(frames, app, token, "subprotocol")
    message = {"type": "message", "text": "hello there"}
    started = CLOCK()
    for _ in range(n):
        await frames.text(comm, message)
        await frames.receive(comm)
    spent = CLOCK() - started
    await close(comm)
    return spent / n


async def connect_seconds(frames: Frames, app: Any, token: str | None, via: str, n: int) -> float:
    """Seconds from a new socket to ready (accepted; with a token: ``identified`` received)."""
    spent = 0.0
    for _ in range(n):
        started = CLOCK()
        comm = await ready(frames, app, token, via)
        spent += CLOCK() - started
        await close(comm)
    return spent / n


async def best_of(rounds: int, cases: dict[str, Any]) -> dict[str, float]:
    """Each case once per round, interleaved (drift hits all alike); the best round of each."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, measure in cases.items():
            best[name] = min(best[name], await measure())
    return best


async def report(frames: Frames, args: argparse.Namespace, token: str) -> None:
    plain, guarded = plain_app(), guarded_app()
    n, m = args.messages, args.connects
    await message_seconds(frames, guarded, token, 200)  # warm up both paths
    await message_seconds(frames, plain, None, 200)
    msg = await best_of(
        args.rounds,
        {
            "plain": lambda: message_seconds(frames, plain, None, n),
            "guarded": lambda: message_seconds(frames, guarded, token, n),
        },
    )
    print(f"messages/s   no middleware          {1 / msg['plain']:8.0f}")
    print(f"messages/s   authenticated socket   {1 / msg['guarded']:8.0f}   "
          f"ratio {msg['plain'] / msg['guarded']:.3f}  (target ≥ 0.95)")  # fmt: skip
    con = await best_of(
        args.rounds,
        {
            "plain": lambda: connect_seconds(frames, plain, None, "plain", m),
            "subprotocol": lambda: connect_seconds(frames, guarded, token, "subprotocol", m),
            "identify": lambda: connect_seconds(frames, guarded, token, "identify", m),
        },
    )
    print(f"connect      plain                  {con['plain'] * 1e6:8.0f} µs")
    for via in ("subprotocol", "identify"):
        ratio = con[via] / con["plain"]
        print(
            f"connect+id   {via:<22} {con[via] * 1e6:8.0f} µs   ratio {ratio:.3f}  (target ≤ 1.3)"
        )


async def run(args: argparse.Namespace, token: str) -> None:
    for raw in (False, True):
        how = "asgiref base methods (no per-frame patching)" if raw else "WebsocketCommunicator"
        print(f"-- frames through {how}; best of {args.rounds} rounds")
        await report(Frames(raw), args, token)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=500, help="messages per round")
    parser.add_argument("--connects", type=int, default=50, help="connections per round")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    Key.objects.generate_secret()
    token = tokens.issue("bench-user", {"email": "a@example.com", "name": "Bench User"})
    asyncio.run(run(args, token))


if __name__ == "__main__":
    main()
