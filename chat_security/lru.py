"""A least-recently-used memory bounded in bytes, for per-process caches.

``cachetools.LRUCache`` keeps the order, evicts and counts the bytes
(``getsizeof``); this class gives it the ``put(key, value, size)`` the
engine's memory uses and a budget read at each put. cachetools is not
thread-safe, so every call, hits included, holds one lock: correct with or
without a GIL (free-threaded builds), with no reliance on any single
operation being atomic. ``benchmarks/bench_lru.py`` measured what the lock
and cachetools cost a hit against the former hand-written, lock-free one:
about 0.3 µs, 0.2 % of a guarded request (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

from cachetools import LRUCache

K = TypeVar("K")
V = TypeVar("V")


def _size(entry: tuple[Any, int]) -> int:
    return entry[1]


class ByteBoundedLRU(MutableMapping[K, V], Generic[K, V]):
    """``key -> value`` with a byte budget; ``get`` marks the entry recently used.

    ``put(key, value, size)`` is the way in; ``self[key] = value`` also works
    and charges ``size_of(key, value)``. A value larger than the whole budget is
    not kept at all (it would push everything else out and then go itself).
    ``budget`` may be changed; the next put applies it.
    """

    def __init__(self, budget: int, size_of: Callable[[K, V], int] | None = None) -> None:
        self.budget = budget
        self._size_of = size_of
        self._lock = threading.Lock()
        # Each entry is (value, size): the size is the caller's, not recomputed.
        self._cache: LRUCache[K, tuple[V, int]] = LRUCache(budget, getsizeof=_size)

    def get(self, key: K, default: Any = None) -> Any:
        """The value (marked most recently used), or ``default``."""
        with self._lock:
            entry = self._cache.get(key)
        return default if entry is None else entry[0]

    def put(self, key: K, value: V, size: int) -> bool:
        """Keep ``value``, dropping least recently used entries; False if it cannot fit."""
        with self._lock:
            if self._cache.maxsize != self.budget:
                self._rebudget()
            self._cache.pop(key, None)  # a value too large now takes the old one with it
            if size > self.budget:
                return False
            self._cache[key] = (value, size)
        return True

    def _rebudget(self) -> None:
        """Move the entries to a cache of the new budget, least recently used first."""
        old, self._cache = self._cache, LRUCache(self.budget, getsizeof=_size)
        while old:
            key, entry = old.popitem()
            if entry[1] <= self.budget:
                self._cache[key] = entry

    @property
    def bytes(self) -> int:
        """What the entries are charged in all."""
        return int(self._cache.currsize)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __setitem__(self, key: K, value: V) -> None:
        if self._size_of is None:
            raise TypeError("this memory needs put(key, value, size)")
        self.put(key, value, self._size_of(key, value))

    def __delitem__(self, key: K) -> None:
        with self._lock:
            del self._cache[key]

    def __getitem__(self, key: K) -> V:
        with self._lock:
            return self._cache[key][0]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._cache

    def __iter__(self) -> Iterator[K]:
        with self._lock:
            return iter(list(self._cache))  # a copy: safe while other threads change it

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {len(self)} entries, {self.bytes}/{self.budget} bytes>"
