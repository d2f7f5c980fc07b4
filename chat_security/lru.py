"""A least-recently-used memory bounded in bytes, for per-process caches.

The caller says what each value costs (:func:`json_bytes` helps for decoded
JSON); the memory keeps the sum under ``budget`` by dropping the entries
used longest ago. Every change of contents takes one lock, held for a few
dictionary operations, so the byte count and the entries always agree. A
hit takes no lock: the read and the move to the recent end are single C
calls, atomic under the GIL (on a free-threaded build the move takes the
lock). Uncontended, the lock would cost a hit 4–5 times what the read and
the move cost together.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

#: The container types of decoded JSON (everything else in it is an immutable scalar).
CONTAINERS = (dict, list)
_ABSENT: Any = object()
#: Whether one dictionary operation is atomic (false on free-threaded builds).
_GIL = getattr(sys, "_is_gil_enabled", lambda: True)()


def _containers(value: Any) -> Iterator[Any]:
    """Every dict and list in decoded JSON, each once (``value`` first, if it is one)."""
    stack = [value] if type(value) in CONTAINERS else []
    while stack:
        item = stack.pop()
        yield item
        children = item.values() if type(item) is dict else item
        kinds = set(map(type, children))  # in C: most containers hold no containers
        if dict in kinds or list in kinds:
            stack.extend([c for c in children if type(c) in CONTAINERS])


def json_bytes(value: Any) -> int:
    """What decoded JSON holds, in bytes: ``sys.getsizeof`` of every object in it.

    Objects the interpreter shares (small ints, ``None``, one-letter strings)
    are counted at each use, so the figure errs high; and a token of a
    million empty lists costs what those lists really take, not its length.
    """
    total = sys.getsizeof(value)
    for item in _containers(value):
        if type(item) is dict:
            # Keys are strings: str.__sizeof__ is getsizeof without the lookup.
            total += sum(map(str.__sizeof__, item))
            item = item.values()
        # A container child is counted here (its own object), its contents in its turn.
        total += sum(map(sys.getsizeof, item))
    return total


#: The most an ASCII string, int, float, bool or None costs beyond its JSON text's
#: length: ``sys.getsizeof("")`` is 49; an int of d digits costs at most 32 + d/2.
SCALAR_OVERHEAD = 49
#: A list of n items built by appending holds at most ``_LIST_BASE + _LIST_SLOT * n``
#: bytes (CPython over-allocates by an eighth; checked for every n up to 200,000).
_LIST_BASE = 104
_LIST_SLOT = 10


def json_bound(text: bytes, object_commas: int, objects_bytes: int) -> int:
    """An upper bound of what the JSON ``text`` holds once decoded, without visiting it.

    Only for text that is ASCII without ``\\u`` escapes: then every string is
    one byte per character, and each scalar (key, value or item) costs at most
    ``SCALAR_OVERHEAD`` plus its own text. The decoder reports what it saw of
    the objects as it built them: the commas between their members (n - 1 for
    an object of n) and ``objects_bytes``, their ``sys.getsizeof`` plus their
    keys' and values' overhead. The lists are bounded from the text: they hold
    at most the other commas, and each list one item more than its commas.
    Brackets and commas inside strings only raise the bound.
    """
    total = len(text) + objects_bytes
    lists = text.count(b"[")
    if lists:
        items = text.count(b",") - object_commas + lists
        total += _LIST_BASE * lists + (_LIST_SLOT + SCALAR_OVERHEAD) * items
    return total


class ByteBoundedLRU(MutableMapping[K, V], Generic[K, V]):
    """``key -> value`` with a byte budget; ``get`` marks the entry recently used.

    ``put(key, value, size)`` is the way in; ``self[key] = value`` also works
    and charges ``size_of(key, value)``. A value larger than the whole budget is
    not kept at all (it would push everything else out and then go itself).
    """

    def __init__(self, budget: int, size_of: Callable[[K, V], int] | None = None) -> None:
        self.budget = budget
        self.bytes = 0
        self._size_of = size_of
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._sizes: dict[K, int] = {}  # changed only under the lock, never read by a hit
        self._lock = threading.Lock()
        # One C call that runs no Python code is atomic under the GIL, and a
        # reorder never changes which entries exist or what they weigh.
        self._touch = self._entries.move_to_end if _GIL else self._locked_touch

    # -- the hot path --------------------------------------------------------------

    def get(self, key: K, default: Any = None) -> Any:
        """The value (marked most recently used), or ``default``."""
        value = self._entries.get(key, _ABSENT)
        if value is _ABSENT:
            return default
        try:  # noqa: SIM105 - contextlib.suppress would cost the hit more than the move
            self._touch(key)
        except KeyError:  # another thread evicted it since the read: still a hit
            pass
        return value

    def _locked_touch(self, key: K) -> None:
        with self._lock:
            self._entries.move_to_end(key)

    # -- changes -------------------------------------------------------------------

    def put(self, key: K, value: V, size: int) -> bool:
        """Keep ``value``, dropping least recently used entries; False if it cannot fit."""
        with self._lock:
            if key in self._sizes:
                del self._entries[key]
                self.bytes -= self._sizes.pop(key)
            if size > self.budget:
                return False
            self._entries[key] = value
            self._sizes[key] = size
            self.bytes += size
            while self.bytes > self.budget:
                oldest, _value = self._entries.popitem(last=False)
                self.bytes -= self._sizes.pop(oldest)
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
            self.bytes = 0

    def __setitem__(self, key: K, value: V) -> None:
        if self._size_of is None:
            raise TypeError("this memory needs put(key, value, size)")
        self.put(key, value, self._size_of(key, value))

    def __delitem__(self, key: K) -> None:
        with self._lock:
            del self._entries[key]
            self.bytes -= self._sizes.pop(key)

    # -- reading without touching the order ----------------------------------------

    def __getitem__(self, key: K) -> V:
        return self._entries[key]

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries))  # a copy: safe while other threads change it

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {len(self)} entries, {self.bytes}/{self.budget} bytes>"
