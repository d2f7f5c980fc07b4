"""Live revocation across real ASGI server processes sharing one database (SPEC §10, §12).

Two daphne processes serve ``tests.asgi_app`` on one SQLite file; sockets are
opened on both with the subprotocol token; a CLI process revokes the key or
the user; every socket must be closed with 4401 and the right code within
``KEY_CACHE_SECONDS`` + 1 s (``KEY_CACHE_SECONDS`` is 1 s in these settings).
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .servers import serving
from .test_two_processes import KEY_CACHE_SECONDS, cli, env  # noqa: F401

BOUND = KEY_CACHE_SECONDS + 1.0


@pytest.fixture
def servers(env):  # noqa: F811
    daphne = ("-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "tests.asgi_app:application")
    with serving(env, *daphne) as first, serving(env, *daphne) as second:
        yield [first, second]


def open_socket(stack: contextlib.ExitStack, port: int, token: str):
    ws = stack.enter_context(
        connect(
            f"ws://127.0.0.1:{port}/ws/echo/",
            subprotocols=["chat-security", token],
            open_timeout=10,
        )
    )
    first = json.loads(ws.recv(timeout=10))
    assert first["type"] == "identified" and first["user"]["id"] == "alice", first
    return ws


def closed_with(ws, since: float) -> tuple[float, int | None, str | None]:
    """Wait (bounded) for the server to close ``ws``: seconds since ``since``, code, error."""
    error = None
    deadline = time.monotonic() + BOUND + 5
    while time.monotonic() < deadline:
        try:
            frame = json.loads(ws.recv(timeout=max(0.05, deadline - time.monotonic())))
        except ConnectionClosed:
            return time.monotonic() - since, ws.close_code, error
        except TimeoutError:
            break
        if frame.get("type") == "error":
            error = frame.get("error")
    ws.close()
    pytest.fail("the server never closed the socket")


def token_for(env) -> tuple[str, str]:  # noqa: F811
    kid = json.loads(cli(env, "generate-secret"))["kid"]
    return kid, cli(env, "issue", "--sub", "alice").strip()


@pytest.mark.parametrize(
    ("change", "code"),
    [("revoke-key", "key_retired"), ("revoke-user", "token_revoked")],
)
def test_a_cli_change_closes_sockets_on_every_server_within_the_bound(env, servers, change, code):  # noqa: F811
    kid, token = token_for(env)
    cli(env, "rotate-secret", "--grace", "1")  # the old key stays usable: only the revocation bites
    with contextlib.ExitStack() as stack:
        sockets = [open_socket(stack, port, token) for port in servers for _ in range(2)]
        for ws in sockets:  # the sockets work before the change
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=10))["user"] == "alice"
        cli(env, *(("revoke", kid) if change == "revoke-key" else ("revoke-user", "alice")))
        since = time.monotonic()
        results = [closed_with(ws, since) for ws in sockets]
    print(f"{change}: closed after", [round(r[0], 2) for r in results], "s")
    for seconds, close_code, error in results:
        assert close_code == 4401
        assert error == code
        assert seconds <= BOUND
