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
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from jwt.algorithms import ECAlgorithm

from . import clock, keyring, usage
from .conf import app_settings, register_cache
from .exceptions import ChatSecurityError, KeySetStale, KeyStateError, KeyUnreadable, TokenError
from .integrations import DEFAULT, DEFAULT_INTEGRATION, select
from .jws import ParsedToken, parse
from .keyring import KIND_OF_ALGORITHM, IntegrationEntry, KeyEntry, RemoteSet, Snapshot
from .models import KeyKind
from .remote import sources
from .verified import (
    CONTAINERS,
    MEMORY,
    Remembered,
    VerifiedToken,
    cost_of,
    forget_verified,
    remember,
)

SUPPORTED_ALGORITHMS = ("HS256", "RS256", "ES256", "EdDSA")
#: The user id a chat session is bound to: one (the default user space's), or
#: one per user space (``session.bound_subjects``), or None.
Subject = str | dict[str, str] | None


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


_ES256 = ECAlgorithm(ECAlgorithm.SHA256)


def _es256(signing_input: bytes, key: Any, signature: bytes) -> bool:
    """RFC 7518 §3.4: ECDSA P-256 SHA-256 (the JWS r||s form), checked by PyJWT."""
    return bool(_ES256.verify(signing_input, key, signature))


_ED25519_SIGNATURE_BYTES = 64


def _eddsa(signing_input: bytes, key: Ed25519PublicKey, signature: bytes) -> bool:
    """RFC 8037 §3.1: Ed25519 over the signing input (64-byte signatures), by ``cryptography``."""
    if len(signature) != _ED25519_SIGNATURE_BYTES:
        return False
    try:
        key.verify(signature, signing_input)
    except InvalidSignature:
        return False
    return True


#: The signature check of each algorithm: the one-shot calls of the standard library
#: and ``cryptography`` (what PyJWT's algorithm objects wrap, minus their layers);
#: ES256 through PyJWT's own, which turns the JWS signature into what ``cryptography`` takes.
_VERIFIERS: dict[str, Callable[[bytes, Any, bytes], bool]] = {
    "HS256": _hs256,
    "RS256": _rs256,
    "ES256": _es256,
    "EdDSA": _eddsa,
}
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
    """Step 3: the token's alg, if accepted."""
    alg: str = header["alg"]
    if alg not in allowed_algorithms():
        raise TokenError(
            "algorithm_not_allowed", f"algorithm {alg[:20]!r} is not accepted", alg=alg
        )
    return alg


def not_configured() -> TokenError:
    """SPEC §5: until some key can verify, that is the one thing to fix, token or not."""
    return TokenError(
        "security_not_configured", "no usable signing secret or public key exists yet"
    )


def token_required(snap: Snapshot, names: Sequence[str], now: float) -> bool:
    """Whether a request or socket without a token is refused where ``names`` serve.

    True when the switch of one of them is on at ``now`` (SPEC §5, §13; a scheduled
    switch-on counts from its time, §15). Raises
    ``security_not_configured`` when such a one exists and none of those that
    are on has a key that can verify: the one thing to fix, token or not.
    """
    if len(names) == 1:  # the usual case: one integration here
        entry = snap.integrations.get(names[0])
        if entry is None:
            raise TokenError(
                "security_not_configured", f"no integration named {names[0][:50]!r} exists"
            )
        if entry.on(now):
            if not entry.can_verify(now):
                raise not_configured()
            return True
        return False
    on = [e for n in names if (e := snap.integrations.get(n)) is not None and e.on(now)]
    if on and not any(e.can_verify(now) for e in on):
        raise not_configured()
    return bool(on)


def letting_in(snap: Snapshot, names: Sequence[str], now: float) -> IntegrationEntry | None:
    """The integration (switch off at ``now``) that takes a visitor without a token where
    ``names`` serve: the first of them that is off (None if none is)."""
    for name in names:
        entry = snap.integrations.get(name)
        if entry is not None and not entry.on(now):
            return entry
    return None


def key_retired(entry: KeyEntry, now: float) -> TokenError:
    """``key_retired`` for a key that no longer verifies at ``now`` (revoked or retired)."""
    state = entry.state(now)
    return TokenError(
        "key_retired", f"key {entry.kid} is {state}", kid=entry.kid, state=state,
        since=entry.stopped_at(),
    )  # fmt: skip


def candidate_keys(
    header: dict[str, Any],
    alg: str,
    snap: Snapshot,
    now: float,
    integration: IntegrationEntry | None = None,
) -> list[KeyEntry]:
    """Step 4: the keys of the integration (``default``) that may have signed this token."""
    if integration is None:
        integration = snap.integrations[DEFAULT_INTEGRATION]
    kind = KIND_OF_ALGORITHM[alg]
    kid = header.get("kid")
    usable = [k for k in integration.by_alg.get(alg, ()) if k.usable(now)]
    if kid is None:
        if not usable:
            raise TokenError("security_not_configured", kind=kind)
        return usable
    remote = integration.remote
    entry = remote.keys.get(kid) if remote is not None else None
    if entry is None:
        entry = snap.by_kid.get(kid)
    if entry is None and not usable:
        # Nothing could verify this token whatever its kid: the real fix is a key.
        raise TokenError("security_not_configured", kind=kind)
    if (
        entry is None
        or entry.kind == KeyKind.SERVICE_KEY
        or entry.integration != integration.name  # a key of another integration (§13)
    ):
        raise TokenError("unknown_key", f"no signing key has kid {kid[:80]!r}", kid=kid)
    if entry.alg != alg:
        raise TokenError(
            "algorithm_not_allowed",
            f"kid {kid} names a {entry.kind.replace('_', ' ')} ({entry.alg}), not usable "
            f"with {alg}",
            alg=alg,
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


def _check_expected(claims: dict[str, Any], name: str, accepted: tuple[str, ...] | None) -> None:
    """``aud``/``iss`` against what the integration accepts (None: not checked)."""
    if accepted is None:
        return
    if name not in claims:
        raise TokenError("missing_claim", f"the token has no {name} claim", claim=name)
    value = claims[name]
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


def check_revocation(
    user_id: str, claims: dict[str, Any], snap: Snapshot, user_space: str = "default"
) -> None:
    """Step 8's user revocation: ``iat`` before the latest one, or no ``iat`` and an
    ``exp`` after the first one (or none), in the token's user space. Times were
    checked to be numbers (step 6)."""
    if not snap.has_revocations():  # the usual case: nobody revoked
        return
    revoked_at = snap.revocation_refusing(user_id, claims.get("iat"), claims.get("exp"), user_space)
    if revoked_at is not None:
        raise TokenError("token_revoked", revoked_at=revoked_at)


def _verify_full(
    token: str | bytes | None,
    session_subject: Subject,
    names: Sequence[str] = DEFAULT,
) -> tuple[Remembered, float]:
    """Steps 1–8 for a token not remembered: the record to remember and the time.

    ``names``: the integrations serving where the token came (SPEC §13); the
    token's ``iss`` picks among several before anything else is checked.
    """
    parsed = parse(token)
    alg = check_algorithm(parsed.header)
    snap = keyring.get_snapshot()
    now = clock.now()
    if now >= snap.refresh_at:
        snap = sources.refresh_due(snap, now)
    integration = select(snap.integrations, names, parsed.claims)
    if integration.remote is not None:
        snap, integration = _fetched_keys(snap, integration, parsed.header.get("kid"), now)
    entry = match_signature(parsed, candidate_keys(parsed.header, alg, snap, now, integration))
    claims = parsed.claims
    exp, nbf, iat = check_times(claims, now)
    user_id = _check_identity(claims, session_subject, snap, integration)
    private = service_key = None
    if "user_payload" in claims:
        from .payload import decrypt_with_key

        private, service_key = decrypt_with_key(claims["user_payload"], snap, now, integration.name)
    nested = parsed.nested or type(private) in CONTAINERS
    # The latest of nbf and iat (-inf: neither), as Remembered.times_pass wants it.
    not_before = -math.inf if nbf is None else nbf
    if iat is not None and iat > not_before:
        not_before = iat
    remembered = Remembered(
        snap.keyset, parsed.header, claims, entry, user_id, private, service_key, nested,
        exp, not_before, integration.name, integration.user_space,
    )  # fmt: skip
    if isinstance(token, str):
        remembered.cost = cost_of(token, parsed, private)
    return remembered, now


def _fetched_keys(
    snap: Snapshot, integration: IntegrationEntry, kid: Any, now: float
) -> tuple[Snapshot, IntegrationEntry]:
    """Step 4 for an integration whose keys come from an identity provider (SPEC §14).

    A set older than JWKS_MAX_STALE answers 503. A kid the integration does not
    hold refetches the set when the cooldown allows; the snapshot and entry to
    look the kid up in come back.
    """
    remote = integration.remote
    assert remote is not None
    if remote.stale(now):
        snap = sources.fetch_now(snap, integration.name, now)
        integration = snap.integrations.get(integration.name, integration)
        remote = integration.remote
        if remote is None or remote.stale(now):
            raise KeySetStale(integration.name, remote.url if remote else "", _error(remote))
    if not isinstance(kid, str) or kid in remote.keys:
        return snap, integration
    own = snap.by_kid.get(kid)
    if own is not None and own.integration == integration.name:
        return snap, integration  # a pasted key of the same integration
    snap = sources.fetch_now(snap, integration.name, now)
    return snap, snap.integrations.get(integration.name, integration)


def _error(remote: RemoteSet | None) -> str:
    return remote.error if remote is not None else "the key source was removed"


def _check_identity(
    claims: dict[str, Any],
    session_subject: Subject,
    snap: Snapshot,
    integration: IntegrationEntry,
) -> str:
    """Steps 6–8 after the times: aud/iss, the user id, the session's subject, revocation."""
    _check_expected(claims, "aud", integration.audiences)
    _check_expected(claims, "iss", integration.issuers)
    user_id = user_id_of(claims)
    _check_subject_and_revocation(user_id, claims, session_subject, snap, integration.user_space)
    return user_id


def _check_subject_and_revocation(
    user_id: str,
    claims: dict[str, Any],
    session_subject: Subject,
    snap: Snapshot,
    user_space: str,
) -> None:
    """Step 8: what the session and the store say now (a remembered token too)."""
    bound = (
        session_subject.get(user_space) if isinstance(session_subject, dict) else session_subject
    )
    if bound is not None and bound != user_id:
        raise TokenError("subject_changed", bound=bound)
    check_revocation(user_id, claims, snap, user_space)


def _names(integration: str | Sequence[str] | None) -> Sequence[str]:
    if integration is None:
        return DEFAULT
    if isinstance(integration, str):
        return (integration,)
    return tuple(integration) or DEFAULT


def verify(
    token: str | bytes | None,
    *,
    session_subject: Subject = None,
    count_use: bool = True,
    integration: str | Sequence[str] | None = None,
) -> VerifiedToken:
    """Verify ``token`` (SPEC §3). Raises :class:`TokenError` with the §4 code.

    ``integration``: the integration whose keys and rules apply (default
    ``default``), or the names of several that serve where the token came, of
    which the token's ``iss`` picks one (SPEC §13; ``unknown_issuer``).
    ``session_subject`` is the user id the chat session is bound to, if any
    (in the user space of the integration that accepts the token).
    Raises :class:`~chat_security.exceptions.KeyStoreUnavailable` when the
    key store cannot be read. The result's header, claims and private are
    deep copies: see :class:`VerifiedToken`.
    """
    result, now = verify_at(token, session_subject, integration=_names(integration))
    if count_use and result.key_kind != KeyKind.REMOTE_KEY:  # fetched keys have no row
        usage.record_use(result.kid, now)
    return result


def verify_at(
    token: str | bytes | None,
    session_subject: Subject = None,
    snap: Snapshot | None = None,
    now: float | None = None,
    integration: Sequence[str] = DEFAULT,
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
        if now >= snap.refresh_at:
            snap = sources.refresh_due(snap, now)
        if (
            hit.keyset is snap.keyset
            and hit.key.usable(now)
            and (hit.service_key is None or hit.service_key.usable(now))
        ):
            # The same keyset means the same integrations: the one that judged it
            # judges it here too, if it is the one this place selects.
            if (
                integration[0] if len(integration) == 1 else _selected(snap, integration, hit)
            ) == hit.integration:
                if not hit.times_pass(now):
                    check_times(hit.claims, now)  # raises the precise code
                _check_subject_and_revocation(
                    hit.user_id, hit.claims, session_subject, snap, hit.user_space
                )
                return VerifiedToken._sharing(hit, hit.key.usable_state(now)), now
        else:
            forget_verified()
    hit, now = _verify_full(token, session_subject, integration)
    if hit.cost:
        remember(token, hit)  # type: ignore[arg-type]  # a str: it has a cost
    return VerifiedToken._sharing(hit, hit.key.usable_state(now)), now


def _selected(snap: Snapshot, names: Sequence[str], hit: Remembered) -> str | None:
    try:
        return select(snap.integrations, names, hit.claims).name
    except TokenError:
        return None  # verified again in full, which raises the code


# -- issuing ------------------------------------------------------------------------


def issue(
    sub: str,
    claims: dict[str, Any] | None = None,
    ttl: float | None = None,
    integration: str = DEFAULT_INTEGRATION,
) -> str:
    """Sign a token for ``sub`` with the integration's active signing key (``kid`` in the header).

    The active signing key pair (RS256 or ES256) when the integration has one,
    else its active secret (HS256). Extra ``claims`` are included as given;
    ``sub``, ``iat`` and ``exp`` are set here, and the integration's ``iss`` and
    ``aud`` when it has them and the claims do not. Raises ChatSecurityError
    when it has no active key or ``ttl`` is outside 1 s … MAX_TOKEN_LIFETIME.
    Never hands out a token its own verifier would refuse: a bad ``sub``, a
    claim that is no standard JSON value (a ``datetime``, NaN) or an ``iss``
    that is no string is TokenError(invalid_claim), and the signed token goes
    through the verifier's own steps (not remembered as verified, no use
    counted), whose refusal is raised with its SPEC §4 code.
    """
    ttl = app_settings.DEFAULT_TOKEN_TTL if ttl is None else ttl
    limit = app_settings.MAX_TOKEN_LIFETIME
    if isinstance(ttl, bool) or not (isinstance(ttl, int | float) and 1 <= ttl <= limit):
        raise ChatSecurityError(f"ttl must be between 1 and {int(limit)} seconds")
    user_id_of({"sub": sub})
    snap = keyring.get_snapshot()
    owner = snap.integrations.get(integration)
    if owner is None:
        raise KeyStateError(f"no integration named {integration!r}")
    now = clock.now()
    key = signing_key(snap, owner, now)
    iat: float = int(now)
    if snap.revocation_refusing(sub, iat, None, owner.user_space) is not None:
        # The user was revoked earlier in this very second: a whole-second iat
        # would make this fresh token look older than the revocation.
        iat = now
    payload = {**(claims or {}), "sub": sub, "iat": iat, "exp": int(now) + int(ttl)}
    payload.pop("userId", None)
    for name, value in (("aud", owner.audience), ("iss", owner.issuer)):
        if value is not None and name not in payload:
            payload[name] = value  # our own tokens must pass our own checks
    token = _sign(payload, key)
    # The same steps as every reader, so it raises the code they would get. Not
    # verify_at: an issued token is not a presented one, and must not push the
    # tokens clients do present out of the verified-token memory.
    _verify_full(token, None, (owner.name,))
    return token


def signing_key(snap: Snapshot, owner: IntegrationEntry, now: float) -> KeyEntry:
    """The key ``issue`` signs with: the active signing key pair, else the active secret."""
    for kind in (KeyKind.SIGNING_KEY, KeyKind.SECRET):
        active = [k for k in owner.by_alg.get(kind, ()) if k.state(now) == "active"]
        if active:
            if active[0].verify_key is None:
                raise KeyUnreadable([active[0].kid])
            return active[0]
    where = "" if owner.name == DEFAULT_INTEGRATION else f" --integration {owner.name}"
    raise KeyStateError(f"no active signing secret; run generate-secret{where} first")


class _StandardJSON(json.JSONEncoder):
    """JSON as the verifier reads it: NaN and Infinity refused (``json`` writes them)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**{**options, "allow_nan": False})


#: What PyJWT and ``json`` raise for a value they cannot sign: a datetime, a set,
#: NaN, a cycle (ValueError), nesting beyond the stack, an ``iss`` that is no string.
_UNSIGNABLE = (TypeError, ValueError, RecursionError)


def _encode(payload: dict[str, Any], key: KeyEntry, material: Any) -> str:
    return jwt.encode(
        payload, material, algorithm=key.alg or "HS256", headers={"kid": key.kid},
        json_encoder=_StandardJSON,
    )  # fmt: skip


def _sign(payload: dict[str, Any], key: KeyEntry) -> str:
    """``payload`` signed, or TokenError(invalid_claim) naming the claim (never its value)."""
    material = key.signing_pem() if key.kind == KeyKind.SIGNING_KEY else key.verify_key
    try:
        return _encode(payload, key, material)
    except _UNSIGNABLE as exc:
        # Their messages are not ours to show: name the claim that fails alone instead.
        for name, value in payload.items():
            try:
                _encode({name: value}, key, material)
            except _UNSIGNABLE:
                label = repr(str(name)[:40])
                why = "must be a string" if name == "iss" else "is not a standard JSON value"
                detail = f"claim {label} {why} ({type(value).__name__})"
                raise TokenError("invalid_claim", detail, claim=name) from exc
        raise TokenError("invalid_claim", "the claims are not a JSON object") from exc
