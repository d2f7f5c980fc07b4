"""The byte-bounded least-recently-used memory behind the engine's verified tokens."""

from __future__ import annotations

import random
import sys
import threading

import pytest

from chat_security.lru import ByteBoundedLRU


def test_put_and_get():
    memory = ByteBoundedLRU(100)
    assert memory.put("a", 1, 10)
    assert memory.get("a") == 1
    assert memory.get("b") is None
    assert memory.get("b", "default") == "default"
    assert memory.bytes == 10
    assert "a" in memory and len(memory) == 1 and memory["a"] == 1


def test_the_least_recently_used_goes_first():
    memory = ByteBoundedLRU(30)
    for key in "abc":
        memory.put(key, key, 10)
    memory.get("a")  # now b is the oldest
    memory.put("d", "d", 10)
    assert set(memory) == {"a", "c", "d"}
    assert memory.bytes == 30
    memory.put("e", "e", 10)  # then c
    assert set(memory) == {"a", "d", "e"}


def test_one_large_entry_pushes_out_as_many_as_needed():
    memory = ByteBoundedLRU(100)
    for key in "abcde":
        memory.put(key, key, 20)
    memory.put("big", "big", 70)
    assert set(memory) == {"e", "big"}
    assert memory.bytes == 90


def test_membership_and_listing_do_not_reorder():
    memory = ByteBoundedLRU(20)
    memory.put("a", 1, 10)
    memory.put("b", 2, 10)
    assert "a" in memory and set(memory) == {"a", "b"} and len(memory) == 2
    memory.put("c", 3, 10)
    assert set(memory) == {"b", "c"}


def test_a_value_larger_than_the_budget_is_not_kept():
    memory = ByteBoundedLRU(100)
    memory.put("a", 1, 50)
    assert memory.put("huge", 2, 101) is False
    assert list(memory) == ["a"] and memory.bytes == 50


def test_replacing_a_key_recounts_its_bytes():
    memory = ByteBoundedLRU(100)
    memory.put("a", 1, 50)
    memory.put("a", 2, 30)
    assert memory.bytes == 30 and memory.get("a") == 2
    memory.put("a", 3, 500)  # too large now: the old value goes too
    assert "a" not in memory and memory.bytes == 0


def test_budget_changes_apply_at_the_next_put():
    memory = ByteBoundedLRU(100)
    for key in "abcd":
        memory.put(key, key, 25)
    memory.get("a")  # the most recently used survives the smaller budget
    memory.budget = 50
    memory.put("e", "e", 25)
    assert set(memory) == {"a", "e"} and memory.bytes == 50
    memory.budget = 20  # every entry is now larger than the whole budget
    assert memory.put("f", "f", 10)
    assert set(memory) == {"f"} and memory.bytes == 10


def test_mapping_interface_keeps_the_count():
    memory = ByteBoundedLRU(100, size_of=lambda key, value: len(value))
    memory["a"] = "x" * 40
    memory.update({"b": "y" * 40, "c": "z" * 40})
    assert set(memory) == {"b", "c"} and memory.bytes == 80 and memory["b"] == "y" * 40
    del memory["b"]
    assert memory.bytes == 40
    memory.clear()
    assert memory.bytes == 0 and memory == {}
    assert "entries" in repr(memory)


def test_item_assignment_needs_a_size_function():
    with pytest.raises(TypeError):
        ByteBoundedLRU(100)["a"] = 1


def test_threads_never_break_the_count():
    """Every call takes the lock, hits included: nothing relies on the GIL."""
    memory = ByteBoundedLRU(5_000)
    errors = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(3_000):
                key = rng.randrange(300)
                if rng.random() < 0.6:
                    memory.get(key)
                elif rng.random() < 0.95:
                    memory.put(key, key, rng.randrange(1, 400))
                else:
                    memory.clear()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert memory.bytes == sum(size for _value, size in memory._cache.values())
    assert memory.bytes <= memory.budget
    assert all(memory[key] == key for key in memory)


def test_no_call_relies_on_the_gil(monkeypatch):
    """Free-threaded builds: each public call holds the lock around the cache."""
    memory = ByteBoundedLRU(100, size_of=lambda key, value: 10)
    memory.put("a", 1, 10)
    seen = []

    class Watching:
        def __init__(self, cache):
            self.cache = cache

        def __getattr__(self, name):
            seen.append((name, memory._lock.locked()))
            return getattr(self.cache, name)

        def __getitem__(self, key):
            seen.append(("[]", memory._lock.locked()))
            return self.cache[key]

        def __setitem__(self, key, value):
            seen.append(("[]=", memory._lock.locked()))
            self.cache[key] = value

        def __delitem__(self, key):
            seen.append(("del", memory._lock.locked()))
            del self.cache[key]

        def __contains__(self, key):
            seen.append(("in", memory._lock.locked()))
            return key in self.cache

        def __iter__(self):
            seen.append(("iter", memory._lock.locked()))
            return iter(self.cache)

        def __len__(self):
            seen.append(("len", memory._lock.locked()))
            return len(self.cache)

    monkeypatch.setattr(memory, "_cache", Watching(memory._cache))
    memory.get("a")
    memory.put("b", 2, 10)
    memory["c"] = 3
    assert memory["a"] == 1 and "b" in memory and len(memory) == 3 and set(memory)
    del memory["c"]
    memory.clear()
    assert seen and all(locked for _name, locked in seen), seen
