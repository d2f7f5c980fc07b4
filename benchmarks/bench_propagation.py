"""What the key-store propagation check costs a worker (SPEC §12, issue 12 (e)).

    .venv/bin/python benchmarks/bench_propagation.py [--checks 2000]
    bash scripts/services.sh .venv/bin/python benchmarks/bench_propagation.py  # Redis, PG

A worker asks "did the key store change?" at most once per
``KEY_CACHE_SECONDS``; in between, ``keyring.get_snapshot()`` answers from
memory. Printed, in µs:

* ``get_snapshot()`` between two checks (what every request pays);
* one check with a voucher in a shared cache (``KEY_CACHE_ALIAS``;
  Redis when ``CACHE_URL`` is set, else the test suite's in-process stand-in
  for a shared cache, since a file cache is never trusted, E019): no query;
* one check without a shared cache: a small query on the database (SQLite in
  a temporary file, PostgreSQL when ``DATABASE_URL`` is set);
* reading the store after a change: with the keys reused from the previous
  snapshot (``revoke-user``, the mode switch) and from nothing (every usable
  key decrypted or parsed; three keys here);

and what the checks add per request at 100 requests/s per worker (two checks
per second with a shared cache, one when polling; KEY_CACHE_SECONDS = 1).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_TMP = tempfile.mkdtemp(prefix="bench-propagation-")
os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.request_settings"
os.environ.setdefault("CHAT_BENCH_DB", os.path.join(_TMP, "bench.sqlite3"))

import django  # noqa: E402
import environ  # noqa: E402
from django.conf import settings  # noqa: E402

if os.environ.get("DATABASE_URL"):
    settings.DATABASES = {"default": environ.Env.db_url_config(os.environ["DATABASE_URL"])}
settings.CACHES = {
    "default": environ.Env.cache_url_config(os.environ["CACHE_URL"])
    if os.environ.get("CACHE_URL")
    else {"BACKEND": "tests.shared_cache.SharedInTests", "LOCATION": "bench"}
}
settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "KEY_CACHE_ALIAS": "default"}
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from benchmarks.bench_common import machine_line  # noqa: E402
from chat_security import keyring, propagation  # noqa: E402
from chat_security.models import Key  # noqa: E402


def per_call(fn, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def due_check() -> None:
    keyring._State.checked_at = -1e9  # the interval has passed
    keyring.get_snapshot()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=2000)
    n = max(10, parser.parse_args().checks)
    print(machine_line())
    print(f"database: {connection.vendor}; cache: {settings.CACHES['default']['BACKEND']}")
    call_command("migrate", verbosity=0)
    Key.objects.generate_secret("bench")
    Key.objects.rotate_secret(3600, "bench")  # two secrets: the active one and one in grace
    Key.objects.generate_service_keypair("bench")
    keyring.get_snapshot()

    between = per_call(keyring.get_snapshot, 200_000)
    assert propagation.shared_cache() is not None
    with_cache = per_call(due_check, n)
    with override_settings(CHAT_SECURITY={**settings.CHAT_SECURITY, "KEY_CACHE_ALIAS": None}):
        keyring.get_snapshot()
        polling = per_call(due_check, n)
    keyring.get_snapshot()

    snap = keyring.get_snapshot()
    reused = per_call(lambda: keyring._build(snap), max(10, n // 10))
    from_nothing = per_call(lambda: keyring._build(None), max(10, n // 10))
    print(f"\n{'get_snapshot() between checks (every request)':58s} {between:9.3f} µs")
    print(f"{'one due check, a voucher in the shared cache (no query)':58s} {with_cache:9.1f} µs")
    print(f"{'one due check, polling the database':58s} {polling:9.1f} µs")
    print(f"{'reading the store after revoke-user (keys reused)':58s} {reused:9.1f} µs")
    print(f"{'reading the store from nothing (keys decrypted)':58s} {from_nothing:9.1f} µs")
    rate = 100  # requests per second per worker; KEY_CACHE_SECONDS = 1
    for name, cost, checks in (("shared cache", with_cache, 2), ("polling", polling, 1)):
        added = between + cost * checks / rate
        print(
            f"per request at {checks} check/s and {rate} req/s per worker, {name}: {added:6.2f} µs"
        )


if __name__ == "__main__":
    main()
