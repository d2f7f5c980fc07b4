"""How a key-store change reaches every process: a counter in the shared cache.

The database stays the truth: ``SecurityConfig.version`` moves inside every
writer's transaction (``models.store_changed``). Reading it costs each worker
one small query per ``KEY_CACHE_SECONDS``. With a cache that all processes
share (Redis, Memcached, the database cache: ``KEY_CACHE_ALIAS``), a writer
also increments a counter there once its transaction has committed, and a
worker reads the counter instead of the database; only when the counter
moved (or cannot be read) does it ask the database.

Failure modes, each on the safe side:

* the cache is down or the key is missing: :func:`read_marker` answers None
  and the worker polls the database, as without a cache;
* the writer dies between its commit and the increment: the counter does not
  move, so every worker also checks the database at least every
  :data:`DATABASE_BACKSTOP_SECONDS`;
* a worker reads the counter before the database, so a change that commits
  in between is seen at the next interval at the latest.

A process-local cache (local memory, dummy) is not shared: it is ignored.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import InvalidCacheBackendError, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache

from .conf import app_settings

logger = logging.getLogger("chat_security.propagation")

COUNTER_KEY = "chat_security:key-store-changes"
#: Even with a counter that did not move, the database is asked this often.
DATABASE_BACKSTOP_SECONDS = 30.0


def shared_cache() -> Any:
    """The cache all processes share, or None (not configured, or local to a process)."""
    alias = app_settings.KEY_CACHE_ALIAS
    if not alias:
        return None
    try:
        cache = caches[alias]
    except InvalidCacheBackendError:
        return None  # E018 reports it
    if isinstance(cache, LocMemCache | DummyCache):
        return None
    return cache


def read_marker() -> int | None:
    """The change counter, or None when it cannot be read (then ask the database)."""
    cache = shared_cache()
    if cache is None:
        return None
    try:
        value = cache.get(COUNTER_KEY)
        if value is None:
            cache.add(COUNTER_KEY, 0, timeout=None)
            value = cache.get(COUNTER_KEY)
    except Exception:  # noqa: BLE001 — any cache failure means "ask the database"
        logger.debug("key-store change counter unreadable; polling the database")
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
        except ValueError:  # no counter yet
            if not cache.add(COUNTER_KEY, 1, timeout=None):
                cache.incr(COUNTER_KEY)
    except Exception:  # noqa: BLE001 — the database backstop still tells everybody
        logger.warning("key-store change not announced in the cache; workers will poll")
