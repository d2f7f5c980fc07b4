"""How a key-store change reaches every process: a counter in the shared cache.

The database stays the truth: ``SecurityConfig.version`` moves inside every
writer's transaction (``models.store_changed``). Reading it costs each worker
one small query per ``KEY_CACHE_SECONDS``. With a cache that all processes
share (Redis, Memcached, the database cache: ``KEY_CACHE_ALIAS``), a writer
also increments a counter there once its transaction has committed, and a
worker reads the counter instead of the database; only when the counter
moved (or cannot be read) does it ask the database.

Failure modes, each on the safe side:

* the cache is down: :func:`read_marker` answers None and the worker polls
  the database, as without a cache; the cache is not asked again for
  :data:`CACHE_RETRY_SECONDS`, so an unreachable cache costs one failed call
  per process per interval, not one per request;
* the counter is lost (cache restarted, key evicted): it is created again at
  a random value, which no worker has seen, so every worker asks the database;
* the writer dies between its commit and the increment: the counter does not
  move, so every worker also checks the database at least every
  :data:`DATABASE_BACKSTOP_SECONDS`;
* a worker reads the counter before the database, so a change that commits
  in between is seen at the next interval at the latest.

Only a cache named in ``KEY_CACHE_ALIAS`` is used, and naming it is the
site's promise that every process of every server shares it (SPEC §12): a
cache per server would announce a change only on the server that made it,
and the others would learn of it from the database backstop, 30 s later
instead of ``KEY_CACHE_SECONDS``. Caches that cannot be shared by several
servers (local memory, dummy, a file cache) are never used, and the system
check ``chat_security.E019`` refuses them. By default (None) every worker
polls the database.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from django.core.cache import InvalidCacheBackendError, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache

from .conf import app_settings

logger = logging.getLogger("chat_security.propagation")

COUNTER_KEY = "chat_security:key-store-changes"
#: Even with a counter that did not move, the database is asked this often.
DATABASE_BACKSTOP_SECONDS = 30.0
#: After a cache failure, the cache is left alone (the database is polled) this long.
CACHE_RETRY_SECONDS = 5.0


class _State:
    cache_down_until: float = 0.0


def _new_counter() -> int:
    """A starting value no process has seen: a lost counter then reads as a change."""
    return secrets.randbits(62)


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


def read_marker() -> int | None:
    """The change counter, or None when it cannot be read (then ask the database)."""
    cache = shared_cache()
    if cache is None or time.monotonic() < _State.cache_down_until:
        return None
    try:
        value = cache.get(COUNTER_KEY)
        if value is None:
            cache.add(COUNTER_KEY, _new_counter(), timeout=None)
            value = cache.get(COUNTER_KEY)
    except Exception:  # noqa: BLE001 — any cache failure means "ask the database"
        _State.cache_down_until = time.monotonic() + CACHE_RETRY_SECONDS
        logger.warning(
            "key-store change counter unreadable; polling the database for %s s",
            CACHE_RETRY_SECONDS,
        )
        return None
    return value if isinstance(value, int) else None


def announce() -> None:
    """Tell every process that the key store changed (call after the commit)."""
    cache = shared_cache()
    if cache is None:
        return
    try:
        try:
            cache.incr(COUNTER_KEY)
        except ValueError:  # no counter (yet, or lost): any new value is a change
            if not cache.add(COUNTER_KEY, _new_counter(), timeout=None):
                cache.incr(COUNTER_KEY)
    except Exception:  # noqa: BLE001 — the database backstop still tells everybody
        logger.warning("key-store change not announced in the cache; workers will poll")


def reset() -> None:
    """Ask the cache again at the next check (tests, setting changes)."""
    _State.cache_down_until = 0.0
