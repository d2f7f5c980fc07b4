"""``chat_security.jws``: the strict parser's header cache (issue 12's cold path)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat_security import jws
from chat_security.exceptions import TokenError


def b64(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


PAYLOAD = b64({"sub": "u"})


@pytest.fixture(autouse=True)
def _empty_cache():
    jws._HEADERS.clear()
    yield
    jws._HEADERS.clear()


def test_tokens_sharing_a_header_share_its_decoded_form_and_pay_for_it_once():
    header = b64({"alg": "HS256", "kid": "k1", "typ": "JWT"})
    first, second = jws.parse(f"{header}.{PAYLOAD}.c2ln"), jws.parse(f"{header}.{PAYLOAD}.c2ln")
    assert first.header is second.header
    assert first.header_decoded and not second.header_decoded


@pytest.mark.parametrize(
    "header",
    [{"alg": "HS256", "crit": ["exp"]}, {"kid": "k"}, {"alg": 5}, {"alg": "HS256", "kid": 1}],
)
def test_a_refused_header_is_refused_every_time(header):
    for _ in range(2):
        with pytest.raises(TokenError) as info:
            jws.parse(f"{b64(header)}.{PAYLOAD}.c2ln")
        assert info.value.code == "malformed"
    assert jws._HEADERS == {}


def test_the_header_cache_is_bounded():
    for i in range(jws._HEADERS_MAX * 3):
        jws.parse(f"{b64({'alg': 'HS256', 'kid': f'k{i}'})}.{PAYLOAD}.c2ln")
        assert len(jws._HEADERS) <= jws._HEADERS_MAX
    long_header = b64({"alg": "HS256", "x": "y" * 600})
    jws.parse(f"{long_header}.{PAYLOAD}.c2ln")
    assert long_header.encode() not in jws._HEADERS  # long headers are decoded each time, not kept


@pytest.mark.parametrize(
    "token",
    ["a.b.c.d", "a..c", ".b.c", "a.b", "a.b+.c", "a.b/c.d", "a.b=.c", "ä.b.c", "a b.c.d"],
)
def test_the_compact_shape_check_agrees_with_the_documented_pattern(token):
    assert (jws._segments(token.encode()) is not None) == bool(jws.COMPACT_JWS.fullmatch(token))


@pytest.mark.parametrize(
    ("header", "claims", "nested"),
    [
        ({"alg": "HS256"}, {"sub": "u", "exp": 1}, False),
        ({"alg": "HS256"}, {"sub": "u", "userData": {"plan": "pro"}}, True),
        ({"alg": "HS256"}, {"sub": "u", "roles": ["a"]}, True),
        ({"alg": "HS256"}, {"sub": "u", "roles": []}, True),
        ({"alg": "HS256", "x5c": ["MIIB"]}, {"sub": "u"}, True),
        ({"alg": "HS256", "jwk": {"kty": "RSA"}}, {"sub": "u"}, True),
        ({"alg": "HS256"}, {"sub": "[not a list]"}, True),  # errs on the copying side
    ],
)
def test_the_parser_says_whether_results_must_copy_deeply(header, claims, nested):
    """Results copy nested values all the way down (flat ones with one dict()): never say flat
    when something nested is there, from a decoded header or from the cache alike."""
    for _ in range(2):
        assert jws.parse(f"{b64(header)}.{b64(claims)}.c2ln").nested is nested


# -- the strict decoder against the standard library's ------------------------------------


def _no_constant(name: str):
    raise ValueError(f"{name} is not standard JSON")


_REFERENCE = json.JSONDecoder(
    object_pairs_hook=lambda pairs: _reference_object(pairs), parse_constant=_no_constant
)


def _reference_object(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate")
    return obj


def _reference(text: str):
    """What ``json`` itself says under the same rules, or ``"refused"``."""
    try:
        value = _REFERENCE.decode(text)
    except (ValueError, RecursionError):
        return "refused"
    if any(isinstance(v, float) and v in (float("inf"), float("-inf")) for v in _leaves(value)):
        return "refused"
    return value


def _leaves(value):
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def _ours(text: str):
    try:
        return jws._decode(text, [])
    except (TokenError, ValueError, RecursionError):
        return "refused"


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)
_spaces = st.sampled_from(["", " ", "\t", "\n", "\r\n", "  "])
# As in the security suite's CI profile: the same examples on every run, so that a
# CI failure reproduces locally, and no example database written into the checkout.


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(_json_values, _spaces, _spaces, st.booleans())
def test_the_decoder_agrees_with_json_on_valid_text(value, before, after, compact):
    text = before + json.dumps(value, separators=(",", ":") if compact else None) + after
    assert _ours(text) == _reference(text)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet='{}[]",:0123456789.eE+-truefalsnNIiy \t\\u\n', max_size=40))
def test_the_decoder_agrees_with_json_on_any_text(text):
    """Same verdict and value as json (duplicates, NaN/Infinity and overflow refused)."""
    assert _ours(text) == _reference(text)


@pytest.mark.parametrize(
    "text", ['{"a":1,"a":2}', '{"a":{"b":1,"b":1}}', "[NaN]", '{"x":-Infinity}', "[1e400]", ""]
)
def test_the_decoder_refuses_what_the_parser_must(text):
    assert _ours(text) == "refused"
