"""Step 9: the encrypted ``user_payload`` claim (compact JWE).

Only RSA-OAEP-256 key wrapping with A256GCM content encryption is accepted,
and only with usable service keys (active or in grace). joserfc does the
cryptography; this module only reads the protected header first, strictly,
to pick the key and to refuse compression (a decompression bomb) and
critical extensions. The decrypted value is returned to the caller and never
logged, stored, or put in an error message.
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any

from joserfc import jwe
from joserfc.errors import JoseError

from .base64url import CHARACTER, decode_unpadded
from .exceptions import TokenError
from .keyring import KeyEntry, Snapshot
from .models import KeyKind

JWE_ALGORITHMS = ("RSA-OAEP-256", "A256GCM")
MAX_PAYLOAD_CHARS = 64 * 1024
# header . encrypted key . iv . ciphertext (may be empty) . tag
_B64 = CHARACTER
_COMPACT_JWE = re.compile(rf"{_B64}+\.{_B64}+\.{_B64}+\.{_B64}*\.{_B64}+")
_KNOWN_HEADERS = frozenset({"alg", "enc", "kid", "typ", "cty"})


def _failed(detail: str) -> TokenError:
    return TokenError("payload_decryption_failed", detail)


def protected_header(value: str) -> dict[str, Any]:
    """The JWE's protected header, checked against the accepted profile."""
    if not _COMPACT_JWE.fullmatch(value):
        raise _failed("user_payload is not a compact JWE (five base64url parts)")
    segment = value.split(".", 1)[0]
    try:
        raw = decode_unpadded(segment)
        header = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise _failed("the user_payload header is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise _failed("the user_payload header is not a JSON object")
    if header.get("alg") != JWE_ALGORITHMS[0] or header.get("enc") != JWE_ALGORITHMS[1]:
        raise _failed("user_payload must use RSA-OAEP-256 with A256GCM")
    unknown = sorted(set(header) - _KNOWN_HEADERS)
    if unknown:
        # zip (compression), crit and key-carrying headers are never honoured.
        raise _failed(f"user_payload header member {unknown[0][:20]!r} is not accepted")
    for name in ("kid", "typ", "cty"):
        if name in header and not isinstance(header[name], str):
            raise _failed(f"the user_payload {name} header must be a string")
    return header


def decrypt_with_key(
    value: Any, snap: Snapshot, now: float, integration: str = "default"
) -> tuple[Any, KeyEntry]:
    """Decrypt ``user_payload`` with a usable service key: the value (JSON parsed;
    plaintext that is not JSON as a string) and the key that decrypted it.

    The engine keeps that key with a remembered token: once the key stops
    being usable (its grace ends), the token must be refused again.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_PAYLOAD_CHARS:
        raise _failed("user_payload must be a compact JWE string")
    kid = protected_header(value).get("kid")
    candidates = snap.usable(KeyKind.SERVICE_KEY, now, integration)
    if kid is not None:
        candidates = [k for k in candidates if k.kid == kid]
    for entry in candidates:
        key = entry.private_key()
        if key is None:
            continue
        try:
            plaintext = jwe.decrypt_compact(value, key, algorithms=JWE_ALGORITHMS).plaintext
        except (JoseError, ValueError, TypeError, KeyError):
            continue
        text = (plaintext or b"").decode("utf-8", "replace")
        try:
            return json.loads(text), entry
        except (ValueError, RecursionError):
            return text, entry
    raise _failed("user_payload does not decrypt with any usable service key")
