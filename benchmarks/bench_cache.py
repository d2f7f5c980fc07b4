"""Hit rate of the verified-token memory with many live users, old policy against new.

    .venv/bin/python benchmarks/bench_cache.py [--users 10000] [--minutes 15] [--ttl 3600]

Each user's widget re-sends its token every 2–8 s (a fresh random gap each
time, so users interleave at random) and renews it at 75 % of its lifetime;
at the start every user holds a token of a random age, as in a site that has
been up for a while. Time is virtual (the engine's clock seam), so an hour of
traffic takes a minute.

The same request stream is measured, in the same run, against:

* the old policy, simulated here: first-in-first-out, 1,024 entries;
* the new one: the engine itself (``tokens.verify`` with its default byte
  budget), a hit being a token found in ``verified.MEMORY`` before the call;
* the ideal: each token misses once, when first seen (no memory bound).

Requests in the first ``--warmup`` virtual seconds fill the memories and are
not counted. Times nothing in the test suite.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import sys
import time
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import jwt  # noqa: E402
from django.core.management import call_command  # noqa: E402

from chat_security import clock, tokens, verified  # noqa: E402
from chat_security.models import Key  # noqa: E402

RENEW_AT = 0.75
GAP = (2.0, 8.0)
START = 1_800_000_000.0


class FifoMemory:
    """The engine's memory before issue 11: a dict of 1,024 tokens, oldest insertion out."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[str, None] = OrderedDict()

    def hit(self, token: str) -> bool:
        if token in self.entries:
            return True
        if len(self.entries) >= self.capacity:
            self.entries.popitem(last=False)
        self.entries[token] = None
        return False


class Site:
    """The users' tokens, signed as a site's backend signs them (PyJWT, the active secret)."""

    def __init__(self, secret: str, kid: str, ttl: int) -> None:
        self.secret, self.kid, self.ttl = secret, kid, ttl

    def token(self, user: int, iat: float) -> str:
        claims = {
            "sub": f"user-{user}",
            "email": f"user{user}@example.com",
            "name": f"User Number {user}",
            "userData": {"plan": "Premium", "customerSince": "2021-05-04"},
            "iat": int(iat),
            "exp": int(iat) + self.ttl,
        }
        return jwt.encode(claims, self.secret, algorithm="HS256", headers={"kid": self.kid})


def run(users: int, minutes: float, ttl: int, warmup: float, seed: int) -> None:
    rng = random.Random(seed)
    now = [START]
    clock.now = lambda: now[0]  # the engine's time seam: virtual seconds
    call_command("migrate", verbosity=0)
    key, secret = Key.objects.generate_secret()
    site = Site(secret, key.kid, ttl)
    now[0] = START + ttl  # every token below is issued after the secret
    renew_after = RENEW_AT * ttl
    issued = [now[0] - rng.uniform(0, renew_after) for _ in range(users)]
    held = [site.token(u, issued[u]) for u in range(users)]
    queue = [(now[0] + rng.uniform(*GAP), u) for u in range(users)]
    heapq.heapify(queue)

    fifo, seen = FifoMemory(), set()
    counted = fifo_hits = engine_hits = ideal_hits = renewals = 0
    count_from, stop = now[0] + warmup, now[0] + warmup + minutes * 60
    began = time.perf_counter()
    while queue[0][0] < stop:
        at, user = heapq.heappop(queue)
        now[0] = at
        if at - issued[user] >= renew_after:
            issued[user] = at
            held[user] = site.token(user, at)
            renewals += at >= count_from
        token = held[user]
        was_remembered = token in verified.MEMORY
        fifo_hit = fifo.hit(token)
        ideal_hit = token in seen
        seen.add(token)
        assert tokens.verify(token, count_use=False).user_id == f"user-{user}"
        if at >= count_from:
            counted += 1
            engine_hits += was_remembered
            fifo_hits += fifo_hit
            ideal_hits += ideal_hit
        heapq.heappush(queue, (at + rng.uniform(*GAP), user))
    elapsed = time.perf_counter() - began

    memory = verified.MEMORY
    print(
        f"{users:,} live users, each re-sending its token every {GAP[0]:g}–{GAP[1]:g} s "
        f"in a random interleaving; tokens of {ttl} s renewed at {RENEW_AT:.0%} "
        f"(~{len(held[0])} characters)"
    )
    print(
        f"{minutes:g} virtual minutes after {warmup:g} s of warm-up: {counted:,} requests, "
        f"{renewals:,} renewals; {elapsed:.0f} s of wall time"
    )
    rows = [
        ("old: FIFO, 1,024 entries (simulated)", fifo_hits, f"{len(fifo.entries):,} entries"),
        (
            f"new: LRU, {verified.VERIFIED_MEMORY_BYTES / 2**20:g} MiB budget (the engine)",
            engine_hits,
            f"{len(memory):,} entries, {memory.bytes / 2**20:.1f} MiB",
        ),
        ("ideal: unbounded, first sight misses", ideal_hits, f"{len(seen):,} entries"),
    ]
    for name, hits, held_now in rows:
        print(f"  {name:44s} hit rate {hits / counted:7.2%}   held at the end: {held_now}")
    if fifo_hits:
        print(f"new / old hit rate: {engine_hits / fifo_hits:,.1f}x")
    else:
        print("the old policy never hit: every token was pushed out before it came back")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000, help="live users (default 10000)")
    parser.add_argument(
        "--minutes", type=float, default=15, help="virtual minutes measured (default 15)"
    )
    parser.add_argument("--ttl", type=int, default=3600, help="token lifetime, s (default 3600)")
    parser.add_argument(
        "--warmup", type=float, default=60, help="virtual seconds not counted (default 60)"
    )
    parser.add_argument("--seed", type=int, default=11, help="random seed (default 11)")
    args = parser.parse_args()
    run(args.users, args.minutes, args.ttl, args.warmup, args.seed)


if __name__ == "__main__":
    main()
