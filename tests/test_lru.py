"""The byte-bounded least-recently-used memory behind the engine's verified tokens."""

from __future__ import annotations

import random
import sys
import threading

import pytest

from chat_security import lru
from chat_security.lru import ByteBoundedLRU, json_bytes


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
    assert list(memory) == ["c", "a", "d"]
    assert memory.bytes == 30


def test_one_large_entry_pushes_out_as_many_as_needed():
    memory = ByteBoundedLRU(100)
    for key in "abcde":
        memory.put(key, key, 20)
    memory.put("big", "big", 70)
    assert list(memory) == ["e", "big"]
    assert memory.bytes == 90


def test_reading_by_index_or_membership_does_not_reorder():
    memory = ByteBoundedLRU(20)
    memory.put("a", 1, 10)
    memory.put("b", 2, 10)
    assert memory["a"] == 1 and "a" in memory and dict(memory) == {"a": 1, "b": 2}
    memory.put("c", 3, 10)
    assert list(memory) == ["b", "c"]


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
    memory.budget = 50
    memory.put("e", "e", 25)
    assert list(memory) == ["d", "e"] and memory.bytes == 50


def test_mapping_interface_keeps_the_count():
    memory = ByteBoundedLRU(100, size_of=lambda key, value: len(value))
    memory["a"] = "x" * 40
    memory.update({"b": "y" * 40, "c": "z" * 40})
    assert list(memory) == ["b", "c"] and memory.bytes == 80
    del memory["b"]
    assert memory.bytes == 40
    memory.clear()
    assert memory.bytes == 0 and memory == {}
    assert "entries" in repr(memory)


def test_item_assignment_needs_a_size_function():
    with pytest.raises(TypeError):
        ByteBoundedLRU(100)["a"] = 1


def test_a_hit_on_an_entry_evicted_meanwhile_is_still_a_hit(monkeypatch):
    memory = ByteBoundedLRU(100)
    memory.put("a", 1, 10)

    def evicted_meanwhile(key):
        raise KeyError(key)  # another thread evicted it between the read and the move

    monkeypatch.setattr(memory, "_touch", evicted_meanwhile)
    assert memory.get("a") == 1


def test_without_a_gil_the_move_takes_the_lock(monkeypatch):
    monkeypatch.setattr(lru, "_GIL", False)
    memory = ByteBoundedLRU(100)
    memory.put("a", 1, 10)
    memory.put("b", 2, 10)
    assert memory._touch == memory._locked_touch
    assert memory.get("a") == 1 and list(memory) == ["b", "a"]


@pytest.mark.parametrize("gil", [True, False])
def test_threads_never_break_the_count(monkeypatch, gil):
    monkeypatch.setattr(lru, "_GIL", gil)
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
    assert memory.bytes == sum(memory._sizes.values())
    assert set(memory._sizes) == set(memory._entries)
    assert memory.bytes <= memory.budget


# -- json_bytes ------------------------------------------------------------------------


def test_json_bytes_of_scalars_and_flat_objects():
    assert json_bytes("abc") == sys.getsizeof("abc")
    flat = {"sub": "user-1", "exp": 1_800_000_000}
    expected = sys.getsizeof(flat) + sum(map(sys.getsizeof, [*flat, *flat.values()]))
    assert json_bytes(flat) == expected


def test_json_bytes_counts_every_nested_container():
    nested = {"a": [{}, {"b": [1, 2]}], "c": []}
    inner = nested["a"][1]
    expected = sum(map(sys.getsizeof, [nested, "a", "c", nested["a"], nested["c"]])) + sum(
        map(sys.getsizeof, [{}, inner, "b", inner["b"], 1, 2])
    )
    assert json_bytes(nested) == expected


def test_json_bytes_of_many_empty_objects_is_not_their_text_length():
    many = [{} for _ in range(10_000)]
    assert json_bytes(many) >= 10_000 * sys.getsizeof({})


# -- json_bound: what the verified-token memory charges for ASCII payloads -----------------


BOUND_SHAPES = [
    {"sub": "u", "iat": 1_800_000_000, "exp": 1_800_003_600},
    {"sub": "user-1", "email": "someone@example.com", "userData": {"plan": "pro", "n": 3}},
    {"l": list(range(500))},
    {"l": [{}] * 300, "m": [[]] * 300},
    {"b": [True, False, None] * 100, "f": [1.5, -2.25e10] * 50},
    {"big": 10**300, "neg": -(10**40), "s": "x" * 5000},
    {f"k{i}": i for i in range(2000)},
    {"deep": [[[[[[{"a": [1, {"b": "c"}]}]]]]]]},
    {"esc": 'quote " back \\ slash / tab \t nl \n', ":": ": ,{[", "": ""},
]


@pytest.mark.parametrize("value", BOUND_SHAPES)
@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_json_bound_is_never_below_what_the_objects_hold(value, separators):
    import json

    from chat_security import jws

    text = json.dumps(value, separators=separators).encode()
    assert text.isascii() and b"\\u" not in text
    decoded, bound, _nested = jws._payload(text)
    assert decoded == value
    assert bound >= json_bytes(decoded)
    if value is BOUND_SHAPES[1]:
        assert bound <= 1.35 * json_bytes(decoded)  # and not far above, for a typical token


def test_json_bound_counts_only_this_payloads_objects():
    from chat_security import jws

    small = b'{"sub":"u"}'
    first = jws._payload(small)[1]
    jws._payload(b'{"a":{"b":{"c":{}}},"l":[{"x":1},{"y":2}]}')
    assert jws._payload(small)[1] == first


def test_json_bound_is_per_thread(monkeypatch):
    """Another thread decoding at the same moment does not change this one's bound."""
    import threading

    from chat_security import jws

    text = b'{"sub":"u","l":[1,2,3],"d":{"k":"v"}}'
    alone = jws._payload(text)[1]
    inside, other = threading.Event(), threading.Event()
    real = jws.json.JSONDecoder

    def slowed(*, object_pairs_hook, **options):
        def slow(pairs):
            obj = object_pairs_hook(pairs)
            if threading.current_thread() is threading.main_thread() and not inside.is_set():
                inside.set()
                assert other.wait(10)  # the other thread decodes while this one is mid-way
            return obj

        return real(object_pairs_hook=slow, **options)

    monkeypatch.setattr(jws.json, "JSONDecoder", slowed)

    def decode_other() -> None:
        assert inside.wait(10)
        jws._payload(b'{"many":{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7}}')
        other.set()

    worker = threading.Thread(target=decode_other)
    worker.start()
    assert jws._payload(text)[1] == alone
    worker.join(10)
    assert other.is_set()


def test_the_memory_charges_exactly_when_the_text_is_not_plain_ascii(clock):
    from chat_security import jws

    for claims, plain in (({"name": "Zoë"}, False), ({"name": "Zoe"}, True)):
        import base64
        import json

        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        header = base64.urlsafe_b64encode(b'{"alg":"HS256"}').rstrip(b"=").decode()
        parsed = jws.parse(f"{header}.{payload}.")
        assert (parsed.claims_bytes > 0) is plain
