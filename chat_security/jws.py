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
from dataclasses import dataclass
from typing import Any

from .conf import app_settings
from .exceptions import TokenError

#: The shape of a compact JWS (the admin's tester uses it for a hint, never a verdict).
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_MAX_DEPTH = 32


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_VALUE = {c: i for i, c in enumerate(_B64URL)}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = ("", None, "==", "=")
_UNUSED_BITS = (0, None, 0b1111, 0b11)


def _b64decode(segment: str) -> bytes:
    """Strict base64url: the caller has checked the alphabet; padding is not allowed."""
    rest = len(segment) % 4
    if rest == 1:
        raise TokenError("malformed", "a token part has an impossible base64url length")
    # Canonical form: the bits the last character carries beyond the data are zero.
    if rest and _B64_VALUE[segment[-1]] & _UNUSED_BITS[rest]:
        raise TokenError("malformed", "a token part is not canonical base64url")
    data = (segment + _PADDING[rest]).encode("ascii").translate(_TO_STANDARD)
    return binascii.a2b_base64(data, strict_mode=True)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise TokenError("malformed", "duplicate member names in JSON")
    return obj


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


_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_finite_float
)


def _json_object(raw: bytes, part: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        value = _DECODER.decode(text)
    except TokenError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TokenError("malformed", f"the {part} is not UTF-8 JSON") from exc
    if not isinstance(value, dict):
        raise TokenError("malformed", f"the {part} is not a JSON object")
    if text.count("{") + text.count("[") > _MAX_DEPTH and _too_deep(value):
        raise TokenError("malformed", f"the {part} nests deeper than {_MAX_DEPTH} levels")
    return value


@dataclass(frozen=True)
class ParsedToken:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse(token: str | bytes | None) -> ParsedToken:
    """Steps 1–2 plus header strictness; no key is consulted."""
    if token is None or token == "" or token == b"":
        raise TokenError("missing_token")
    if not isinstance(token, str | bytes):
        raise TokenError("malformed", "the token must be a string")
    if isinstance(token, bytes):
        size = len(token)
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            token = None
    else:
        size = len(token) if token.isascii() else len(token.encode("utf-8", "surrogatepass"))
    if size > app_settings.MAX_TOKEN_BYTES:
        raise TokenError("token_too_large", limit=app_settings.MAX_TOKEN_BYTES, size=size)
    if token is None or not COMPACT_JWS.fullmatch(token):
        raise TokenError("malformed", "the token is not three base64url parts separated by dots")
    h64, p64, s64 = token.split(".")
    try:
        header = _json_object(_b64decode(h64), "header")
        claims = _json_object(_b64decode(p64), "payload")
        signature = _b64decode(s64) if s64 else b""
    except (binascii.Error, ValueError) as exc:
        if isinstance(exc, TokenError):
            raise
        raise TokenError("malformed", "a token part is not base64url") from exc
    for name in ("alg", "kid", "typ", "cty"):
        if name in header and not isinstance(header[name], str):
            raise TokenError("malformed", f"the {name} header must be a string")
    if "alg" not in header:
        raise TokenError("malformed", "the header has no alg")
    if "crit" in header:
        raise TokenError("malformed", "critical header extensions (crit) are not supported")
    return ParsedToken(header, claims, f"{h64}.{p64}".encode("ascii"), signature)
