"""Memory of one process that verifies a million distinct tokens.

    .venv/bin/python benchmarks/bench_memory.py [--count 1000000]

Verifies ``--count`` distinct HS256 tokens (a site's typical claims, each
for another user) through the engine, with a real key store: a temporary
SQLite database under the test settings. Prints the growth of the resident
set (``VmRSS`` in ``/proc/self/status``) from just before the first of them,
at each tenth of the run and at the end, with what the verified-token memory
holds; the target is under 50 MB after 1,000,000. The tokens are made one at
a time and dropped at once, so what grows is what the engine keeps.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import hashlib
import hmac
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

from django.conf import settings  # noqa: E402

_DB_DIR = tempfile.mkdtemp(prefix="bench-memory-")
atexit.register(shutil.rmtree, _DB_DIR, ignore_errors=True)
settings.DATABASES["default"]["NAME"] = os.path.join(_DB_DIR, "bench.sqlite3")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from chat_security import clock, tokens, usage, verified  # noqa: E402
from chat_security.models import Key  # noqa: E402

TARGET_MB = 50


def rss_bytes() -> int:
    """The resident set size, from the kernel."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Signer:
    """HS256 the way a site's backend signs its users' tokens; the key prepared once
    (PyJWT prepares it on every call, which would double the run's time)."""

    def __init__(self, secret: str, kid: str) -> None:
        self.mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
        self.header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())

    def token_for(self, i: int, now: int) -> str:
        claims = {
            "sub": f"user-{i}",
            "email": f"user{i}@example.com",
            "name": f"User Number {i}",
            "userData": {"plan": "Premium", "customerSince": "2021-05-04"},
            "iat": now,
            "exp": now + 3600,
        }
        signing_input = f"{self.header}.{b64url(json.dumps(claims).encode())}"
        mac = self.mac.copy()
        mac.update(signing_input.encode("ascii"))
        return f"{signing_input}.{b64url(mac.digest())}"


def report(done: int, base: int, began: float) -> int:
    growth = rss_bytes() - base
    memory = verified.MEMORY
    print(
        f"{done:>10,} tokens  {time.perf_counter() - began:7.1f} s  "
        f"RSS +{growth / 1e6:6.1f} MB  memory: {len(memory):,} entries, "
        f"{memory.bytes / 2**20:.1f} MiB counted",
        flush=True,
    )
    return growth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--count", type=int, default=1_000_000, help="distinct tokens (default 1000000)"
    )
    count = parser.parse_args().count
    call_command("migrate", verbosity=0)
    key, secret = Key.objects.generate_secret()
    signer = Signer(secret, key.kid)
    now = int(clock.now())
    # Warm every path (imports, the key snapshot, counters) before the baseline.
    for i in range(-100, 0):
        tokens.verify(signer.token_for(i, now))
    tokens.forget_verified()
    usage.flush_usage()
    base = rss_bytes()
    print(
        f"baseline RSS {base / 1e6:.1f} MB; memory budget "
        f"{verified.VERIFIED_MEMORY_BYTES / 2**20:g} MiB"
    )
    began = time.perf_counter()
    step = max(count // 10, 1)
    for i in range(count):
        if i % 50_000 == 0:
            now = int(clock.now())  # tokens stay fresh however long the run takes
        token = signer.token_for(i, now)
        if tokens.verify(token).user_id != f"user-{i}":
            raise SystemExit(f"token {i} verified as someone else")
        if (i + 1) % step == 0 and i + 1 < count:
            report(i + 1, base, began)
    del token
    growth = report(count, base, began)
    elapsed = time.perf_counter() - began
    print(
        f"{count:,} distinct tokens verified in {elapsed:.1f} s "
        f"({elapsed / count * 1e6:.0f} µs each, signing included); "
        f"RSS grew by {growth / 1e6:.1f} MB (target < {TARGET_MB} MB): "
        f"{'OK' if growth < TARGET_MB * 1e6 else 'OVER'}"
    )


if __name__ == "__main__":
    main()
