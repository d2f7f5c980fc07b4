"""The engine: verify and issue tokens. Every entry point calls this module.

Verification follows SPEC §3 in order. The compact form is parsed once,
strictly, by ``jws.parse`` (steps 1–2); the signature is checked with the
keys the keyring parsed once, by ``hmac`` and ``cryptography`` directly.
What a verification leaves behind (the result, the memory of verified
tokens) is ``verified``. Nothing in this module logs token contents.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.hashes import SHA256

from . import clock, keyring, usage
from .conf import app_settings, register_cache
from .exceptions import ChatSecurityError, KeyStateError, KeyUnreadable, TokenError
from .jws import ParsedToken, parse
from .keyring import KIND_OF_ALGORITHM, KeyEntry, Snapshot
from .models import KeyKind
from .verified import (
    CONTAINERS,
    MEMORY,
    Remembered,
    VerifiedToken,
    cost_of,
    forget_verified,
    remember,
)

SUPPORTED_ALGORITHMS = ("HS256", "RS256")


def _hs256(signing_input: bytes, key: bytes, signature: bytes) -> bool:
    """RFC 7518 §3.2: HMAC SHA-256 of the signing input, compared in constant time."""
    return hmac.compare_digest(hmac.digest(key, signing_input, "sha256"), signature)


_PKCS1V15, _SHA256 = PKCS1v15(), SHA256()


def _rs256(signing_input: bytes, key: RSAPublicKey, signature: bytes) -> bool:
    """RFC 7518 §3.3: RSASSA-PKCS1-v1_5 with SHA-256, checked by ``cryptography``."""
    try:
        key.verify(signature, signing_input, _PKCS1V15, _SHA256)
    except InvalidSignature:
        return False
    return True


#: The signature check of each algorithm: the one-shot calls of the standard library
#: and ``cryptography`` (what PyJWT's algorithm objects wrap, minus their layers).
_VERIFIERS: dict[str, Callable[[bytes, Any, bytes], bool]] = {"HS256": _hs256, "RS256": _rs256}
_MAX_USER_ID = 255
_MAX_TIME = 10**300  # any NumericDate beyond this is absurd; keeps int + float finite
_MISSING = object()


# -- keys -----------------------------------------------------------------------


@lru_cache(maxsize=1)
def allowed_algorithms() -> frozenset[str]:
    """``ALLOWED_ALGORITHMS`` that this engine supports; cleared when settings change."""
    configured = app_settings.ALLOWED_ALGORITHMS
    return frozenset(a for a in configured if a in SUPPORTED_ALGORITHMS)


register_cache(allowed_algorithms.cache_clear)


def check_algorithm(header: dict[str, Any]) -> str:
    """Step 3: the key kind the token's alg asks for."""
    alg = header["alg"]
    if alg not in allowed_algorithms():
        raise TokenError(
            "algorithm_not_allowed", f"algorithm {alg[:20]!r} is not accepted", alg=alg
        )
    return KIND_OF_ALGORITHM[alg]


def not_configured() -> TokenError:
    """SPEC §5: until some key can verify, that is the one thing to fix, token or not."""
    return TokenError(
        "security_not_configured", "no usable signing secret or public key exists yet"
    )


def key_retired(entry: KeyEntry, now: float) -> TokenError:
    """``key_retired`` for a key that no longer verifies at ``now`` (revoked or retired)."""
    state = entry.state(now)
    return TokenError(
        "key_retired", f"key {entry.kid} is {state}", kid=entry.kid, state=state,
        since=entry.stopped_at(),
    )  # fmt: skip


def candidate_keys(header: dict[str, Any], kind: str, snap: Snapshot, now: float) -> list[KeyEntry]:
    """Step 4: the keys that may have signed this token."""
    kid = header.get("kid")
    if kid is None:
        usable = snap.usable(kind, now)
        if not usable:
            raise TokenError("security_not_configured", kind=kind)
        return usable
    entry = snap.by_kid.get(kid)
    if entry is None and not snap.usable(kind, now):
        # Nothing could verify this token whatever its kid: the real fix is a key.
        raise TokenError("security_not_configured", kind=kind)
    if entry is None or entry.kind == KeyKind.SERVICE_KEY:
        raise TokenError("unknown_key", f"no signing key has kid {kid[:80]!r}", kid=kid)
    if entry.kind != kind:
        raise TokenError(
            "algorithm_not_allowed",
            f"kid {kid} names a {entry.kind.replace('_', ' ')}, not usable with {header['alg']}",
            alg=header["alg"],
            kid=kid,
        )
    if not entry.usable(now):
        raise key_retired(entry, now)
    return [entry]


def match_signature(parsed: ParsedToken, candidates: list[KeyEntry]) -> KeyEntry:
    """Step 5: the first candidate whose key verifies the signature."""
    if parsed.signature:
        verifier = _VERIFIERS[parsed.header["alg"]]
        for entry in candidates:
            key = entry.verify_key
            if key is not None and verifier(parsed.signing_input, key, parsed.signature):
                return entry
    unreadable = [e.kid for e in candidates if e.unreadable]
    if unreadable:
        # A usable key we cannot read might have signed it: unknown, not invalid.
        raise KeyUnreadable(unreadable)
    raise TokenError("invalid_signature", tried=[e.kid for e in candidates])


# -- claims ---------------------------------------------------------------------


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if type(value) is int:
        if -_MAX_TIME <= value <= _MAX_TIME:
            return value
        # Beyond float range: arithmetic with the float clock would overflow.
        raise TokenError("invalid_claim", f"{name} is out of range", claim=name)
    if value is None and name not in claims:
        return None
    if type(value) is not float or not math.isfinite(value):
        raise TokenError("invalid_claim", f"{name} must be a JSON number (seconds since epoch)")
    return value


def check_times(
    claims: dict[str, Any], now: float
) -> tuple[float | None, float | None, float | None]:
    """Step 6: exp / nbf / iat and the lifetime cap; returns the three numbers."""
    exp, nbf, iat = _number(claims, "exp"), _number(claims, "nbf"), _number(claims, "iat")
    leeway = app_settings.LEEWAY
    if exp is None:
        if app_settings.REQUIRE_EXP:
            raise TokenError("missing_claim", "the token has no exp claim", claim="exp")
    elif now > exp + leeway:
        raise TokenError("expired", exp=exp, now=now)
    for name, value in (("nbf", nbf), ("iat", iat)):
        if value is not None and value > now + leeway:
            raise TokenError(
                "not_yet_valid", f"{name} lies in the future", claim=name, at=value, now=now
            )
    if exp is not None:
        limit = app_settings.MAX_TOKEN_LIFETIME
        if (iat is not None and exp - iat > limit) or exp - now > limit + leeway:
            raise TokenError("lifetime_too_long", limit=limit, exp=exp, iat=iat)
    return exp, nbf, iat


def _accepted(expected: Any) -> tuple[Any, ...]:
    """AUDIENCE/ISSUER as a tuple; a value E009 rejects accepts nothing (fail closed)."""
    if isinstance(expected, str):
        return (expected,)
    return tuple(expected) if isinstance(expected, list | tuple) else ()


def _check_expected(claims: dict[str, Any], name: str, expected: Any) -> None:
    if expected is None:
        return
    if name not in claims:
        raise TokenError("missing_claim", f"the token has no {name} claim", claim=name)
    value = claims[name]
    accepted = _accepted(expected)
    if name == "aud" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        if any(v in accepted for v in value):
            return
    elif isinstance(value, str) and value in accepted:
        return
    raise TokenError("invalid_claim", f"{name} does not match this site", claim=name)


def user_id_of(claims: dict[str, Any]) -> str:
    """Step 7: ``sub`` or its alias ``userId`` as a safe header-field value."""
    sub = claims.get("sub", _MISSING)
    alias = claims.get("userId", _MISSING)
    if sub is _MISSING and alias is _MISSING:
        raise TokenError("missing_claim", "the token has no user id (sub or userId)", claim="sub")
    if sub is not _MISSING and alias is not _MISSING and sub != alias:
        raise TokenError("invalid_claim", "sub and userId differ", claim="sub")
    value = sub if sub is not _MISSING else alias
    if not isinstance(value, str):
        raise TokenError("invalid_claim", "the user id must be a string", claim="sub")
    if not 0 < len(value) <= _MAX_USER_ID:
        raise TokenError("invalid_claim", "the user id must be 1–255 characters", claim="sub")
    if not (value.isascii() and value.isprintable()) or value[0] == " " or value[-1] == " ":
        raise TokenError(
            "invalid_claim",
            "the user id must be printable ASCII without leading or trailing spaces",
            claim="sub",
        )
    return value


def check_revocation(user_id: str, claims: dict[str, Any], snap: Snapshot) -> None:
    """Step 8's user revocation: ``iat`` before the latest one, or no ``iat`` and an
    ``exp`` after the first one (or none). Times were checked to be numbers (step 6)."""
    if not snap.revoked_users:  # the usual case: nobody revoked
        return
    revoked_at = snap.revocation_refusing(user_id, claims.get("iat"), claims.get("exp"))
    if revoked_at is not None:
        raise TokenError("token_revoked", revoked_at=revoked_at)


def _verify_full(
    token: str | bytes | None, session_subject: str | None
) -> tuple[Remembered, float]:
    """Steps 1–8 for a token not remembered: the record to remember and the time."""
    parsed = parse(token)
    kind = check_algorithm(parsed.header)
    snap = keyring.get_snapshot()
    now = clock.now()
    entry = match_signature(parsed, candidate_keys(parsed.header, kind, snap, now))
    claims = parsed.claims
    exp, nbf, iat = check_times(claims, now)
    user_id = _check_identity(claims, session_subject, snap)
    private = service_key = None
    if "user_payload" in claims:
        from .payload import decrypt_with_key

        private, service_key = decrypt_with_key(claims["user_payload"], snap, now)
    nested = parsed.nested or type(private) in CONTAINERS
    # The latest of nbf and iat (-inf: neither), as Remembered.times_pass wants it.
    not_before = -math.inf if nbf is None else nbf
    if iat is not None and iat > not_before:
        not_before = iat
    remembered = Remembered(
        snap.keyset, parsed.header, claims, entry, user_id, private, service_key, nested,
        exp, not_before,
    )  # fmt: skip
    if isinstance(token, str):
        remembered.cost = cost_of(token, parsed, private)
    return remembered, now


def _check_identity(claims: dict[str, Any], session_subject: str | None, snap: Snapshot) -> str:
    """Steps 6–8 after the times: aud/iss, the user id, the session's subject, revocation."""
    _check_expected(claims, "aud", app_settings.AUDIENCE)
    _check_expected(claims, "iss", app_settings.ISSUER)
    user_id = user_id_of(claims)
    _check_subject_and_revocation(user_id, claims, session_subject, snap)
    return user_id


def _check_subject_and_revocation(
    user_id: str, claims: dict[str, Any], session_subject: str | None, snap: Snapshot
) -> None:
    """Step 8: what the session and the store say now (a remembered token too)."""
    if session_subject is not None and session_subject != user_id:
        raise TokenError("subject_changed", bound=session_subject)
    check_revocation(user_id, claims, snap)


def verify(
    token: str | bytes | None,
    *,
    session_subject: str | None = None,
    count_use: bool = True,
) -> VerifiedToken:
    """Verify ``token`` (SPEC §3). Raises :class:`TokenError` with the §4 code.

    ``session_subject`` is the user id the chat session is bound to, if any.
    Raises :class:`~chat_security.exceptions.KeyStoreUnavailable` when the
    key store cannot be read. The result's header, claims and private are
    deep copies: see :class:`VerifiedToken`.
    """
    result, now = verify_at(token, session_subject)
    if count_use:
        usage.record_use(result.kid, now)
    return result


def verify_at(
    token: str | bytes | None,
    session_subject: str | None = None,
    snap: Snapshot | None = None,
    now: float | None = None,
) -> tuple[VerifiedToken, float]:
    """:func:`verify` without counting the use; also returns the time it verified at.

    For callers that count the use themselves (the middleware counts it with
    the request) and may pass the key snapshot they hold and the time, already.
    """
    hit = MEMORY.get(token) if isinstance(token, str) else None
    if hit is not None:
        # A token verified before against the same keys: its signature, JWE and
        # every rule that depends only on the token and the settings still hold.
        # What depends on the time or the store is checked again: the key (and
        # service key) still usable, step 6, the session's subject, revocation.
        if now is None:
            now = clock.now()
        if snap is None:
            snap = keyring.get_snapshot()
        if (
            hit.keyset is snap.keyset
            and hit.key.usable(now)
            and (hit.service_key is None or hit.service_key.usable(now))
        ):
            if not hit.times_pass(now):
                check_times(hit.claims, now)  # raises the precise code
            _check_subject_and_revocation(hit.user_id, hit.claims, session_subject, snap)
            return VerifiedToken._sharing(hit, hit.key.usable_state(now)), now
        forget_verified()
    hit, now = _verify_full(token, session_subject)
    if hit.cost:
        remember(token, hit)  # type: ignore[arg-type]  # a str: it has a cost
    return VerifiedToken._sharing(hit, hit.key.usable_state(now)), now


# -- issuing ------------------------------------------------------------------------


def issue(sub: str, claims: dict[str, Any] | None = None, ttl: float | None = None) -> str:
    """Sign a token for ``sub`` with the active secret (``kid`` in the header).

    Extra ``claims`` are included as given; ``sub``, ``iat`` and ``exp`` are set
    here. Raises ChatSecurityError when no active secret exists or ``ttl`` is
    outside 1 s … MAX_TOKEN_LIFETIME. Never hands out a token its own verifier
    would refuse: a bad ``sub``, a claim that is no standard JSON value (a
    ``datetime``, NaN) or an ``iss`` that is no string is TokenError(invalid_claim),
    and the signed token goes through the verifier's own steps (not remembered as
    verified, no use counted), whose refusal is raised with its SPEC §4 code.
    """
    ttl = app_settings.DEFAULT_TOKEN_TTL if ttl is None else ttl
    limit = app_settings.MAX_TOKEN_LIFETIME
    if isinstance(ttl, bool) or not (isinstance(ttl, int | float) and 1 <= ttl <= limit):
        raise ChatSecurityError(f"ttl must be between 1 and {int(limit)} seconds")
    user_id_of({"sub": sub})
    snap = keyring.get_snapshot()
    now = clock.now()
    active = [k for k in snap.usable(KeyKind.SECRET, now) if k.state(now) == "active"]
    if not active:
        raise KeyStateError("no active signing secret; run generate-secret first")
    key = active[0]
    if key.verify_key is None:
        raise KeyUnreadable([key.kid])
    iat: float = int(now)
    if snap.revocation_refusing(sub, iat, None) is not None:
        # The user was revoked earlier in this very second: a whole-second iat
        # would make this fresh token look older than the revocation.
        iat = now
    payload = {**(claims or {}), "sub": sub, "iat": iat, "exp": int(now) + int(ttl)}
    payload.pop("userId", None)
    for name, expected in (("aud", app_settings.AUDIENCE), ("iss", app_settings.ISSUER)):
        accepted = _accepted(expected)
        if expected is not None and name not in payload and accepted:
            payload[name] = accepted[0]  # our own tokens must pass our own checks
    token = _sign(payload, key)
    # The same steps as every reader, so it raises the code they would get. Not
    # verify_at: an issued token is not a presented one, and must not push the
    # tokens clients do present out of the verified-token memory.
    _verify_full(token, None)
    return token


class _StandardJSON(json.JSONEncoder):
    """JSON as the verifier reads it: NaN and Infinity refused (``json`` writes them)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**{**options, "allow_nan": False})


#: What PyJWT and ``json`` raise for a value they cannot sign: a datetime, a set,
#: NaN, a cycle (ValueError), nesting beyond the stack, an ``iss`` that is no string.
_UNSIGNABLE = (TypeError, ValueError, RecursionError)


def _encode(payload: dict[str, Any], key: KeyEntry) -> str:
    return jwt.encode(
        payload, key.verify_key, algorithm="HS256", headers={"kid": key.kid},
        json_encoder=_StandardJSON,
    )  # fmt: skip


def _sign(payload: dict[str, Any], key: KeyEntry) -> str:
    """``payload`` signed, or TokenError(invalid_claim) naming the claim (never its value)."""
    try:
        return _encode(payload, key)
    except _UNSIGNABLE as exc:
        # Their messages are not ours to show: name the claim that fails alone instead.
        for name, value in payload.items():
            try:
                _encode({name: value}, key)
            except _UNSIGNABLE:
                label = repr(str(name)[:40])
                why = "must be a string" if name == "iss" else "is not a standard JSON value"
                detail = f"claim {label} {why} ({type(value).__name__})"
                raise TokenError("invalid_claim", detail, claim=name) from exc
        raise TokenError("invalid_claim", "the claims are not a JSON object") from exc
