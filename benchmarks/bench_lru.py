"""The verified-token memory: the hand-written LRU against a locked ``cachetools.LRUCache``.

    .venv/bin/python benchmarks/bench_lru.py [--rounds 40] [--batch 2000]

Three memories with the interface ``verified.py`` uses (``get``,
``put(key, value, size)``, ``clear``):

* **lock-free hits** (the baseline): the hand-written ``lru.ByteBoundedLRU``
  as it was before issue 17, copied here: an ``OrderedDict`` whose hits read
  and move the entry without the lock, atomic only under the GIL;
* **locked hits**: the same with the move under the lock, as it did on a
  free-threaded build;
* **cachetools + lock**: ``lru.ByteBoundedLRU`` now, ``cachetools.LRUCache``
  (``getsizeof``) with every call under one ``threading.Lock``.

Cases, µs per operation: a hit, a put into a full memory (one eviction), and
the hot path with each memory installed as the engine's: ``tokens.verify`` of
the same ~760-byte HS256 token (what ``bench_verify.py`` calls "engine
repeated") and a whole guarded Django request carrying it (as
``bench_request.py`` case 1, WSGI handler called directly). Every case runs in
many short rounds, the memories interleaved; each figure is the fastest round,
and each is printed as a ratio to the lock-free memory measured in the same run.
"""

from __future__ import annotations

import argparse
import atexit
import io
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
_TMP = tempfile.mkdtemp(prefix="bench-lru-")
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
os.environ["CHAT_BENCH_DB"] = os.path.join(_TMP, "bench.sqlite3")
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.request_settings"

import django  # noqa: E402

django.setup()

import cachetools  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.core.management import call_command  # noqa: E402

from benchmarks.bench_common import TokenMaker, machine_line  # noqa: E402
from chat_security import tokens, verified  # noqa: E402
from chat_security.lru import ByteBoundedLRU  # noqa: E402
from chat_security.models import Key  # noqa: E402

_ABSENT: Any = object()


class HandWritten:
    """The memory before issue 17 (``lru.py`` then): an ``OrderedDict``, sizes beside it,
    one lock for every change; with ``locked_hits=False`` a hit reads and moves the
    entry without the lock (atomic only under the GIL), as it did."""

    def __init__(self, budget: int, locked_hits: bool = False) -> None:
        self.budget, self.bytes = budget, 0
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._touch = self._locked_touch if locked_hits else self._entries.move_to_end

    def get(self, key: str, default: Any = None) -> Any:
        value = self._entries.get(key, _ABSENT)
        if value is _ABSENT:
            return default
        try:  # noqa: SIM105 - as it was
            self._touch(key)
        except KeyError:
            pass
        return value

    def _locked_touch(self, key: str) -> None:
        with self._lock:
            self._entries.move_to_end(key)

    def put(self, key: str, value: Any, size: int) -> bool:
        with self._lock:
            if key in self._sizes:
                del self._entries[key]
                self.bytes -= self._sizes.pop(key)
            if size > self.budget:
                return False
            self._entries[key] = value
            self._sizes[key] = size
            self.bytes += size
            while self.bytes > self.budget:
                oldest, _value = self._entries.popitem(last=False)
                self.bytes -= self._sizes.pop(oldest)
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self.bytes = 0


class _Valued:
    __slots__ = ("cost",)

    def __init__(self, cost: int) -> None:
        self.cost = cost


MEMORIES: dict[str, Callable[[int], Any]] = {
    "lock-free hits": HandWritten,
    "locked hits": lambda budget: HandWritten(budget, locked_hits=True),
    "cachetools + lock": ByteBoundedLRU,
}


def install(memory: Any) -> None:
    """Make ``memory`` the engine's verified-token memory (both modules hold the name)."""
    verified.MEMORY = memory
    tokens.MEMORY = memory


def environ(token: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/chat/api/whoami",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=2000, help="operations per case per round")
    args = parser.parse_args()
    rounds, batch = max(1, args.rounds), max(1, args.batch)
    print(machine_line())
    print(f"cachetools {cachetools.__version__}")
    call_command("migrate", verbosity=0)
    key, secret = Key.objects.generate_secret("bench")
    token = TokenMaker(secret, "HS256", key.kid).make(0)
    keys = [f"{token[:-40]}{i:040d}" for i in range(batch)]  # token-sized, distinct
    handler = WSGIHandler()

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        assert status.startswith("200"), status

    times: dict[tuple[str, str], list[float]] = {}

    def timed(case: str, name: str, run: Callable[[], object], n: int) -> None:
        began = time.perf_counter()
        run()
        times.setdefault((case, name), []).append((time.perf_counter() - began) / n * 1e6)

    requests = max(1, batch // 20)
    fresh = [f"{k}x" for k in keys]

    def hits(memory: Any) -> list[Any]:
        return [memory.get(k) for k in keys]

    def puts(memory: Any) -> list[bool]:
        return [memory.put(k, _Valued(100), 100) for k in fresh]

    def verifies() -> list[Any]:
        return [tokens.verify(token, count_use=False) for _ in range(batch)]

    def guarded_requests() -> list[bytes]:
        return [b"".join(handler(environ(token), start_response)) for _ in range(requests)]

    for _ in range(rounds):
        for name, make in MEMORIES.items():
            memory = make(10**9)
            for k in keys:
                memory.put(k, _Valued(100), 100)
            timed("hit", name, lambda m=memory: hits(m), batch)
            full = make(100 * batch)
            for k in keys:
                full.put(k, _Valued(100), 100)
            timed("put, one eviction", name, lambda m=full: puts(m), batch)
            install(make(verified.VERIFIED_MEMORY_BYTES))
            tokens.verify(token, count_use=False)
            timed("verify, same token", name, verifies, batch)
            timed("whole request", name, guarded_requests, requests)
    report(times, rounds, batch)


def report(times: dict[tuple[str, str], list[float]], rounds: int, batch: int) -> None:
    print(f"\nµs per operation (fastest of {rounds} rounds of {batch}; requests: {batch // 20})")
    cases = list(dict.fromkeys(case for case, _name in times))
    base = next(iter(MEMORIES))
    print(f"  {'case':20s}" + "".join(f"{name:>20s}" for name in MEMORIES))
    for case in cases:
        row = [min(times[case, name]) for name in MEMORIES]
        print(f"  {case:20s}" + "".join(f"{v:20.3f}" for v in row))
        first = min(times[case, base])
        ratios = "".join(f"{min(times[case, n]) / first:19.2f}x" for n in MEMORIES)
        print(f"  {'  ratio to ' + base:20s}"[:22] + ratios[2:])
    for name in list(MEMORIES)[1:]:
        extra = min(times["hit", name]) - min(times["hit", base])
        for case in ("verify, same token", "whole request"):
            share = extra / min(times[case, base]) * 100
            print(f"  {name}: its extra cost per hit is {share:4.1f} % of a {case} (lock-free)")


if __name__ == "__main__":
    main()
