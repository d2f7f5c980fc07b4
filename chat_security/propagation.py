"""How a key-store change reaches every process: a vouched version in the shared cache.

The database stays the truth: ``SecurityConfig.version`` moves inside every
writer's transaction (``models.store_changed``). Reading it costs each worker
one small query per ``KEY_CACHE_SECONDS``. With a cache that all processes
share (Redis, Memcached, the database cache: ``KEY_CACHE_ALIAS``), the
version read from the database is kept there with the time it was read, as a
*voucher*: "at this moment the store was at version V". A worker whose
snapshot has version V trusts a voucher for V that is younger than
:func:`voucher_lifetime` (half of ``KEY_CACHE_SECONDS``) and asks the
database only when there is none, it is older, or it names another version;
having asked, it writes a new voucher, so one query serves every worker of
every server. With a cache, a worker checks every half interval
(:func:`check_interval`).

Why a change is in force everywhere within ``KEY_CACHE_SECONDS``, whatever
fails: a worker checking at time c trusts only a voucher read from the
database after c − lifetime, and keeps its snapshot until c + half an
interval, so it never serves a state older than one interval. Nothing
depends on the writer reaching the cache: after its commit it deletes the
voucher (:func:`announce`), which makes the next check of every worker ask
the database at once, but when that fails (the cache down, a partition, the
writer dying right after its commit) the old voucher still expires in time.
A cache that comes back with its data holds only vouchers that have expired,
and a voucher written late with an older version (a reader racing a writer)
expires as quickly. The bound needs the servers' clocks to agree to well
within half an interval (NTP does).

Failure modes, each on the safe side:

* the cache is down: :func:`read_voucher` answers None and the worker polls
  the database, as without a cache; the cache is not asked again for
  :data:`CACHE_RETRY_SECONDS`, so an unreachable cache costs one failed call
  per process per interval, not one per request;
* the voucher is lost (cache restarted, key evicted): the next worker asks
  the database and writes it again.

Only a cache named in ``KEY_CACHE_ALIAS`` is used, and naming it is the
site's promise that every process of every server shares it (SPEC §12): with
a cache per server, a voucher written on one server would say nothing of
writes on another, though still never older than half an interval. Caches
that cannot be shared by several servers (local memory, dummy, a file cache)
are never used, and the system check ``chat_security.E019`` refuses them. By
default (None) every worker polls the database.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.cache import InvalidCacheBackendError, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache

from .conf import app_settings
from .log import get_logger

logger = get_logger("chat_security.propagation")

VOUCHER_KEY = "chat_security:key-store-version"
#: After a cache failure, the cache is left alone (the database is polled) this long.
CACHE_RETRY_SECONDS = 5.0


class _State:
    cache_down_until: float = 0.0


def wall_clock() -> float:
    """The time a voucher carries: the wall clock, which every server shares."""
    return time.time()


def voucher_lifetime() -> float:
    """How long a voucher is trusted: half of ``KEY_CACHE_SECONDS``."""
    return app_settings.KEY_CACHE_SECONDS / 2


def check_interval() -> float:
    """How often a worker checks the store: half an interval with a shared cache.

    With one, the state a worker serves is at most a voucher's lifetime old
    when it checks, and is served for at most this long: one interval in all.
    """
    seconds = app_settings.KEY_CACHE_SECONDS
    if shared_cache() is None or time.monotonic() < _State.cache_down_until:
        return seconds  # polling the database: once per interval is enough
    return seconds / 2


#: Cache backends that hold their data on one server (or nowhere): never trusted.
PER_SERVER_CACHES = (LocMemCache, DummyCache, FileBasedCache)


def shared_cache() -> Any:
    """The cache every server shares (``KEY_CACHE_ALIAS``), or None: poll the database."""
    alias = app_settings.KEY_CACHE_ALIAS
    if not alias:
        return None
    try:
        cache = caches[alias]
    except InvalidCacheBackendError:
        return None  # E018 reports it
    if isinstance(cache, PER_SERVER_CACHES):
        return None  # E019 reports it
    return cache


def read_voucher() -> int | None:
    """The version a fresh voucher in the shared cache names, or None: ask the database.

    None without a shared cache, while it is down, and when the voucher is
    missing, malformed or older than :func:`voucher_lifetime`.
    """
    cache = shared_cache()
    if cache is None or time.monotonic() < _State.cache_down_until:
        return None
    try:
        value = cache.get(VOUCHER_KEY)
    except Exception:  # noqa: BLE001 — any cache failure means "ask the database"
        _cache_failed("unreadable")
        return None
    if not (isinstance(value, tuple | list) and len(value) == 2):
        return None
    version, read_at = value
    if not isinstance(version, int) or not isinstance(read_at, int | float):
        return None
    age = wall_clock() - read_at
    return version if 0 <= age < voucher_lifetime() else None


def vouch(version: int, read_at: float) -> None:
    """Tell every process that the store was at ``version`` at ``read_at`` (wall clock).

    Called after reading the version from the database, with the time taken
    *before* that read. A failure only costs other workers a query.
    """
    cache = shared_cache()
    if cache is None or time.monotonic() < _State.cache_down_until:
        return
    try:
        cache.set(VOUCHER_KEY, (version, read_at), timeout=max(1, int(voucher_lifetime()) + 1))
    except Exception:  # noqa: BLE001
        _cache_failed("not written")


def announce() -> None:
    """After a commit: drop the voucher, so every worker asks the database at its next check.

    Only a speed-up: a voucher that cannot be dropped expires within the bound.
    """
    cache = shared_cache()
    if cache is None:
        return
    try:
        cache.delete(VOUCHER_KEY)
    except Exception:  # noqa: BLE001
        logger.warning("key-store change not announced in the cache; its voucher expires")


def _cache_failed(what: str) -> None:
    _State.cache_down_until = time.monotonic() + CACHE_RETRY_SECONDS
    logger.warning("key-store voucher %s; polling the database for %s s", what, CACHE_RETRY_SECONDS)


def reset() -> None:
    """Ask the cache again at the next check (tests, setting changes)."""
    _State.cache_down_until = 0.0
