"""Settings for the second test lane: PostgreSQL, and Redis as cache and channel layer.

Same as ``tests.settings`` but the database is ``DATABASE_URL``, the cache
``CACHE_URL`` (``REDIS_URL`` when unset) and the channel layer ``REDIS_URL``:
the private instances ``scripts/services.sh`` starts. Without those variables
it refuses to load, so the lane never falls back to SQLite or local memory
without anyone noticing::

    DJANGO_SETTINGS_MODULE=tests.settings_pg bash scripts/services.sh .venv/bin/python -m pytest
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from tests.settings import *  # noqa: F403

HOW = "run this lane under `bash scripts/services.sh` (see scripts/test.sh)"


def required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ImproperlyConfigured(f"tests.settings_pg needs {name}: {HOW}")
    return value


def postgres(url: str) -> dict[str, Any]:
    """``postgres://user:password@host:port/name`` as a ``DATABASES`` entry."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        raise ImproperlyConfigured(f"DATABASE_URL is not a postgres:// URL: {HOW}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname,
        "PORT": str(parts.port or ""),
    }


def redis(name: str, url: str) -> str:
    if urlsplit(url).scheme not in ("redis", "rediss"):
        raise ImproperlyConfigured(f"{name} is not a redis:// URL: {HOW}")
    return url


REDIS_URL = redis("REDIS_URL", required("REDIS_URL"))
DATABASES = {"default": postgres(required("DATABASE_URL"))}
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": redis("CACHE_URL", os.environ.get("CACHE_URL") or REDIS_URL),
    }
}
# One Redis for every process: it may announce key-store changes (SPEC §12).
CHAT_SECURITY = {**CHAT_SECURITY, "KEY_CACHE_ALIAS": "default"}  # noqa: F405
# socket_timeout None, as before redis-py 8: its default of 5 s ends a receive that
# waits on an idle channel (BZPOPMIN, 5 s) with TimeoutError, and can swallow the
# cancellation of a consumer that disconnects, which then lingers for those 5 s.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}]},
    }
}
