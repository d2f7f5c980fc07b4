"""A bounded load test of a running site's chat API, checking every answer.

    python benchmarks/load.py --url http://127.0.0.1:8000/chat/api/messages \\
        --secret SECRET [--kid KID] [--seconds 60] [--connections 8] [--json-out FILE]

``benchmarks/run_load.sh`` starts a server, makes the secret and runs this.

``--connections`` threads, each with its own ``http.client`` connection
(kept alive when the server allows it), send ``GET`` requests with
``Authorization: Bearer <token>`` for ``--seconds`` seconds, then stop. The
tokens are made here with PyJWT from ``--secret`` (the site's active secret,
as ``manage.py chat_security rotate-secret`` printed it) in this mix:

* valid (``--users`` users, each re-sending its own token, as widgets do)
  → must be ``200``;
* expired an hour ago, correctly signed → must be ``401`` with ``"error": "expired"``;
* forged: signed with another secret, same ``kid`` → ``401`` ``"invalid_signature"``.

Prints requests per second, p50/p99 latency, wrong answers (any other
status or code, 5xx included) and errors (no answer: refused, reset,
timeout). Exit status 1 if there was any wrong answer or error.
``--json-out FILE`` also writes the figures and every answer seen, by kind,
status and error code (``benchmarks/check_scrape.py`` compares them with the
site's metrics). Needs only PyJWT (a dependency of the package) and the
standard library; the client shares the machine with the server, so the
figures are a floor.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import jwt

#: kind -> (expected status, expected "error" code or None)
EXPECTED = {"valid": (200, None), "expired": (401, "expired"), "forged": (401, "invalid_signature")}


@dataclass
class Tally:
    """One thread's results, merged at the end (no lock on the hot path)."""

    latencies: list[float] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)
    #: (kind, status, error code or None) -> answers
    answers: Counter[tuple[str, int, str | None]] = field(default_factory=Counter)
    wrong: Counter[tuple[str, int, str | None]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


def make_tokens(
    secret: str, kid: str | None, users: int, count: int
) -> dict[str, list[tuple[str, str]]]:
    """kind -> [(token, its sub)]."""
    now = int(time.time())
    headers = {"kid": kid} if kid else None
    other = secrets.token_urlsafe(32)

    def sign(sub: str, iat: int, key: str = secret) -> tuple[str, str]:
        claims = {"sub": sub, "name": f"Load {sub}", "iat": iat, "exp": iat + 3600}
        return jwt.encode(claims, key, algorithm="HS256", headers=headers), sub

    return {
        "valid": [sign(f"load-{i}", now) for i in range(users)],
        "expired": [sign(f"expired-{i}", now - 7200) for i in range(count)],
        "forged": [sign(f"forged-{i}", now, other) for i in range(count)],
    }


def verdict(status: int, body: bytes, sub: str) -> tuple[int, str | None]:
    """``(status, error code)``; a 200 that names another user counts as a wrong answer.

    The code is None for a 200 whose body names no user or the right one
    (the demo's API answers ``{"user": {"id": ...}}``).
    """
    try:
        data = json.loads(body)
    except ValueError:
        return status, "<not JSON>"
    if not isinstance(data, dict):
        return status, "<not an object>"
    if status != 200:
        return status, str(data.get("error"))
    user = data.get("user")
    if isinstance(user, dict) and "id" in user and user["id"] != sub:
        return status, "<another user>"
    return status, None


class Client(threading.Thread):
    def __init__(
        self, args: argparse.Namespace, pool: dict[str, list[tuple[str, str]]], seed: int
    ) -> None:
        super().__init__(daemon=True)
        self.args, self.pool, self.tally = args, pool, Tally()
        self.rng = random.Random(seed)
        url = urlsplit(args.url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.path = url.path + (f"?{url.query}" if url.query else "")
        self.kinds, self.weights = zip(*args.mix.items(), strict=True)

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.args.timeout)

    def run(self) -> None:
        conn = self.connect()
        deadline = self.args.deadline
        while time.perf_counter() < deadline:
            kind = self.rng.choices(self.kinds, self.weights)[0]
            token, sub = self.rng.choice(self.pool[kind])
            began = time.perf_counter()
            try:
                conn.request("GET", self.path, headers={"Authorization": f"Bearer {token}"})
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.tally.errors[type(exc).__name__] += 1
                conn.close()
                conn = self.connect()
                continue
            self.tally.latencies.append(time.perf_counter() - began)
            self.tally.sent[kind] += 1
            got = verdict(response.status, body, sub)
            self.tally.answers[(kind, *got)] += 1
            if got != EXPECTED[kind]:
                self.tally.wrong[(kind, *got)] += 1
        conn.close()


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def parse_mix(text: str) -> dict[str, float]:
    try:
        valid, expired, forged = (float(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("--mix is three numbers: valid,expired,forged") from exc
    return {"valid": valid, "expired": expired, "forged": forged}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the chat API URL (a protected path)")
    parser.add_argument(
        "--secret",
        default=os.environ.get("CHAT_LOAD_SECRET"),
        help="the site's active HS256 secret (default: $CHAT_LOAD_SECRET, kept out of ps)",
    )
    parser.add_argument("--kid", default=None, help="the secret's kid (header); default none")
    parser.add_argument("--seconds", type=float, default=60, help="duration (default 60)")
    parser.add_argument("--connections", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--users", type=int, default=1000, help="valid tokens (default 1000)")
    parser.add_argument(
        "--mix", type=parse_mix, default="80,10,10", help="valid,expired,forged weights (80,10,10)"
    )
    parser.add_argument("--timeout", type=float, default=10, help="per-request timeout, s")
    parser.add_argument(
        "--json-out", metavar="FILE", help="also write the figures and the answers seen, as JSON"
    )
    args = parser.parse_args()
    if not args.secret:
        parser.error("give the site's secret with --secret or in CHAT_LOAD_SECRET")

    pool = make_tokens(args.secret, args.kid, args.users, count=200)
    clients = [Client(args, pool, seed) for seed in range(args.connections)]
    began = time.perf_counter()
    args.deadline = began + args.seconds
    for client in clients:
        client.start()
    for client in clients:
        client.join(args.seconds + args.timeout + 5)
    elapsed = time.perf_counter() - began

    total = Tally()
    for client in clients:
        total.latencies += client.tally.latencies
        total.sent.update(client.tally.sent)
        total.answers.update(client.tally.answers)
        total.wrong.update(client.tally.wrong)
        total.errors.update(client.tally.errors)
    latencies = sorted(total.latencies)
    answered = len(latencies)
    wrong, errors = sum(total.wrong.values()), sum(total.errors.values())
    figures = {
        "req_per_s": answered / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "mean_ms": statistics.fmean(latencies) * 1e3 if latencies else float("nan"),
    }
    print(f"{args.url}: {elapsed:.1f} s, {args.connections} connections")
    print(
        f"  {answered:,} answers, {figures['req_per_s']:,.1f} req/s; latency "
        f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
        f"mean {figures['mean_ms']:.1f} ms"
    )
    print("  " + ", ".join(f"{kind} {total.sent[kind]:,}" for kind in EXPECTED))
    print(f"  wrong answers: {wrong}, errors: {errors}")
    for (kind, status, code), n in total.wrong.most_common(10):
        print(f"    wrong: {n} × {kind} answered {status} {code}")
    for name, n in total.errors.most_common(10):
        print(f"    error: {n} × {name}")
    if args.json_out:
        report = {
            "url": args.url,
            "seconds": elapsed,
            "connections": args.connections,
            "answered": answered,
            **figures,
            "sent": {kind: total.sent[kind] for kind in EXPECTED},
            "answers": [
                {"kind": kind, "status": status, "code": code, "count": n}
                for (kind, status, code), n in total.answers.most_common()
            ],
            "wrong": wrong,
            "errors": dict(total.errors),
        }
        with open(args.json_out, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2)
    return 1 if wrong or errors or not answered else 0


if __name__ == "__main__":
    sys.exit(main())
