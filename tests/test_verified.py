"""What the verified-token memory charges (``verified.json_bytes``, ``verified.claims_bound``)."""

from __future__ import annotations

import base64
import json
import sys
import threading

import pytest

from chat_security import jws
from chat_security.verified import claims_bound, json_bytes


def bound(text: bytes) -> tuple[dict, int]:
    """The claims decoded from ``text`` and the bound the memory charges them."""
    claims, objects, _nested = jws._payload(text)
    return claims, claims_bound(text, objects)


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


# -- claims_bound: what the memory charges for ASCII payloads ---------------------------


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
def test_claims_bound_is_never_below_what_the_objects_hold(value, separators):
    text = json.dumps(value, separators=separators).encode()
    assert text.isascii() and b"\\u" not in text
    decoded, charged = bound(text)
    assert decoded == value
    assert charged >= json_bytes(decoded)
    if value is BOUND_SHAPES[1]:
        assert charged <= 1.35 * json_bytes(decoded)  # and not far above, for a typical token


def test_claims_bound_counts_only_this_payloads_objects():
    small = b'{"sub":"u"}'
    first = bound(small)[1]
    bound(b'{"a":{"b":{"c":{}}},"l":[{"x":1},{"y":2}]}')
    assert bound(small)[1] == first


def test_claims_bound_is_per_thread(monkeypatch):
    """Another thread decoding at the same moment does not change this one's bound."""
    text = b'{"sub":"u","l":[1,2,3],"d":{"k":"v"}}'
    alone = bound(text)[1]
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
        bound(b'{"many":{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7}}')
        other.set()

    worker = threading.Thread(target=decode_other)
    worker.start()
    assert bound(text)[1] == alone
    worker.join(10)
    assert other.is_set()


def test_the_memory_measures_exactly_when_the_text_is_not_plain_ascii(clock):
    for claims, plain in (({"name": "Zoë"}, False), ({"name": "Zoe"}, True)):
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        header = base64.urlsafe_b64encode(b'{"alg":"HS256"}').rstrip(b"=").decode()
        parsed = jws.parse(f"{header}.{payload}.")
        assert (claims_bound(parsed.payload, parsed.objects) > 0) is plain
