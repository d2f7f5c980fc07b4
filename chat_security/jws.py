"""Steps 1–2 of SPEC §3: the compact JWS, parsed strictly before any library sees it.

Exactly three segments of unpadded, canonical base64url; header and payload
UTF-8 JSON objects under standard JSON (no NaN/Infinity, no duplicate member
names, nesting ≤ 32); header members of the right types, no ``crit``. No key
is consulted here; ``tokens`` does the rest.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .base64url import ALPHABET, CHARACTER
from .conf import app_settings
from .exceptions import TokenError

#: The shape of a compact JWS (the admin's tester uses it for a hint, never a verdict).
COMPACT_JWS = re.compile(rf"{CHARACTER}+\.{CHARACTER}+\.{CHARACTER}*")
_MAX_DEPTH = 32
_JSON_SPACE = " \t\n\r"
_COMPACT_ALPHABET = ALPHABET + b"."


def _segments(token: bytes) -> list[bytes] | None:
    """The three parts of ``token`` if it matches ``COMPACT_JWS``, in a fraction of the time."""
    if not token.isascii() or token.count(b".") != 2:
        return None
    if token.translate(None, _COMPACT_ALPHABET):
        return None  # a character outside base64url
    parts = token.split(b".")
    return parts if parts[0] and parts[1] else None


_B64_VALUE = {c: i for i, c in enumerate(ALPHABET)}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
# By length % 4; a remainder of 1 is refused before either is read.
_PADDING = (b"", b"", b"==", b"=")
_UNUSED_BITS = (0, 0, 0b1111, 0b11)


def _b64decode(segment: bytes) -> bytes:
    """Strict base64url: the caller has checked the alphabet; padding is not allowed."""
    rest = len(segment) % 4
    if rest == 1:
        raise TokenError("malformed", "a token part has an impossible base64url length")
    # Canonical form: the bits the last character carries beyond the data are zero.
    if rest and _B64_VALUE[segment[-1]] & _UNUSED_BITS[rest]:
        raise TokenError("malformed", "a token part is not canonical base64url")
    return binascii.a2b_base64((segment + _PADDING[rest]).translate(_TO_STANDARD), strict_mode=True)


def _no_constants(name: str) -> Any:
    raise TokenError("malformed", f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON syntax but decodes to Infinity, which no JSON encoder
    # may write back (CLI output, JSONField): refuse it like the literal.
    value = float(text)
    if not math.isfinite(value):
        raise TokenError("malformed", "a JSON number is out of range")
    return value


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _decode(text: str, objects: list[dict[str, Any]]) -> Any:
    """``json.loads(text)`` under standard JSON, no duplicate names; every object into ``objects``.

    A decoder per call (the C scanner ``json.loads`` uses), so that ``objects``
    holds this text's objects alone, on any thread. The duplicate-name check
    sees every object anyway; recording them there lets the verified-token
    memory bound what the claims hold without walking them again
    (``verified.claims_bound``).
    """
    append = objects.append

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            raise TokenError("malformed", "duplicate member names in JSON")
        append(obj)
        return obj

    decoder = json.JSONDecoder(
        object_pairs_hook=no_duplicates,
        parse_float=_finite_float,
        parse_constant=_no_constants,
        strict=True,  # no control characters inside strings
    )
    start = len(text) - len(text.lstrip(_JSON_SPACE)) if text[:1] in _JSON_SPACE else 0
    value, end = decoder.raw_decode(text, start)  # JSONDecodeError is a ValueError
    if end != len(text) and text[end:].lstrip(_JSON_SPACE):
        raise ValueError("extra data after the JSON value")
    return value


def _json_object(raw: bytes, part: str, objects: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        value = _decode(text, objects)
    except TokenError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TokenError("malformed", f"the {part} is not UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise TokenError("malformed", f"the {part} is not a JSON object")
    if text.count("{") + text.count("[") > _MAX_DEPTH and _too_deep(value):
        raise TokenError("malformed", f"the {part} nests deeper than {_MAX_DEPTH} levels")
    return value


def _nests(raw: bytes, objects: list[dict[str, Any]]) -> bool:
    """Whether decoded JSON may hold objects or lists (a ``[`` inside a string only says yes)."""
    return len(objects) > 1 or b"[" in raw


def _payload(raw: bytes) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """The claims, every object the decoder built for them, and whether they nest."""
    objects: list[dict[str, Any]] = []
    claims = _json_object(raw, "payload", objects)
    return claims, objects, _nests(raw, objects)


@dataclass(slots=True)
class ParsedToken:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes
    #: what the parser saw, for the verified-token memory's charge
    #: (``verified.cost_of``): the payload's JSON text and every object decoded from it
    payload: bytes = b""
    objects: list[dict[str, Any]] = field(default_factory=list)
    #: whether this token decoded its header (False: shared from the header cache,
    #: charged to the token that decoded it)
    header_decoded: bool = True
    #: whether header or claims may hold objects or lists (results then copy deeply)
    nested: bool = True


#: Decoded and checked headers by their base64url text. The tokens of one site
#: share a few headers (alg, kid, typ), so most tokens skip decoding theirs.
#: Shared: nobody may change a header (results hand out copies). Bounded: it
#: starts again empty when full, so odd headers cannot grow it.
_HEADERS: dict[bytes, tuple[dict[str, Any], bool]] = {}
_HEADERS_MAX = 64
_HEADER_MAX_CHARS = 512


def _header(h64: bytes) -> tuple[dict[str, Any], bool, bool]:
    """The header, whether it was decoded now (not shared from the cache), and
    whether it holds objects or lists."""
    known = _HEADERS.get(h64)
    if known is not None:
        return known[0], False, known[1]
    objects: list[dict[str, Any]] = []
    raw = _b64decode(h64)
    header = _json_object(raw, "header", objects)
    nested = _nests(raw, objects)
    for name in ("alg", "kid", "typ", "cty"):
        if name in header and not isinstance(header[name], str):
            raise TokenError("malformed", f"the {name} header must be a string")
    if "alg" not in header:
        raise TokenError("malformed", "the header has no alg")
    if "crit" in header:
        raise TokenError("malformed", "critical header extensions (crit) are not supported")
    if len(h64) <= _HEADER_MAX_CHARS:
        if len(_HEADERS) >= _HEADERS_MAX:
            _HEADERS.clear()
        _HEADERS[h64] = header, nested
    return header, True, nested


def parse(token: str | bytes | None) -> ParsedToken:
    """Steps 1–2 plus header strictness; no key is consulted."""
    if token is None or token == "" or token == b"":
        raise TokenError("missing_token")
    if not isinstance(token, str | bytes):
        raise TokenError("malformed", "the token must be a string")
    if isinstance(token, bytes):
        data, size = token, len(token)
    elif token.isascii():
        data, size = token.encode("ascii"), len(token)
    else:
        data, size = b"\xff", len(token.encode("utf-8", "surrogatepass"))  # never compact
    if size > app_settings.MAX_TOKEN_BYTES:
        raise TokenError("token_too_large", limit=app_settings.MAX_TOKEN_BYTES, size=size)
    segments = _segments(data)
    if segments is None:
        raise TokenError("malformed", "the token is not three base64url parts separated by dots")
    h64, p64, s64 = segments
    try:
        header, header_decoded, header_nested = _header(h64)
        raw = _b64decode(p64)
        claims, objects, claims_nested = _payload(raw)
        signature = _b64decode(s64) if s64 else b""
    except (binascii.Error, ValueError) as exc:
        if isinstance(exc, TokenError):
            raise
        raise TokenError("malformed", "a token part is not base64url") from exc
    return ParsedToken(
        header,
        claims,
        data[: len(h64) + 1 + len(p64)],
        signature,
        raw,
        objects,
        header_decoded,
        header_nested or claims_nested,
    )
