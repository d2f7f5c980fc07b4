"""A cache backend for in-process tests that stands for Redis: shared, and not local memory.

``chat_security`` never trusts a local-memory, dummy or file cache to announce
key-store changes (SPEC §12, check E019). Tests that exercise the announcement
inside one process need a cache it does trust; this one keeps its data in a
local-memory cache it wraps (so it costs no server), and is of its own class.
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.locmem import LocMemCache


class SharedInTests(BaseCache):
    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        self._data = LocMemCache(f"shared-in-tests:{location}", params)

    def add(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> bool:
        return self._data.add(key, value, timeout, version)

    def get(self, key: str, default: Any = None, version: Any = None) -> Any:
        return self._data.get(key, default, version)

    def set(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> None:
        self._data.set(key, value, timeout, version)

    def touch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> bool:
        return self._data.touch(key, timeout, version)

    def delete(self, key: str, version: Any = None) -> bool:
        return self._data.delete(key, version)

    def incr(self, key: str, delta: int = 1, version: Any = None) -> int:
        return self._data.incr(key, delta, version)

    def has_key(self, key: str, version: Any = None) -> bool:
        return self._data.has_key(key, version)

    def clear(self) -> None:
        self._data.clear()
