"""The token tester's explanation engine: the admin's **Test a JWT Token** and
the CLI's ``verify`` give the same explanations and hints.

The verdict is always the engine's: :func:`diagnose` calls ``tokens.verify``
(without counting a use) and only *explains* the outcome. To name the key a
token was signed with, it also tries the signature against every key of the
matching kind — retired and revoked ones too — through ``tokens.match_signature``,
so support staff can tell "your backend still signs with the old secret"
from "this was never signed by us". Nothing here stores or logs the token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import Error as DatabaseError

from . import clock, identity, jws, keyring, tokens
from .exceptions import (
    ERROR_CODES,
    HINTS,
    ChatSecurityError,
    KeySetStale,
    KeyStoreUnavailable,
    KeyUnreadable,
    TokenError,
)
from .integrations import select
from .keyring import KINDS_OF_ALGORITHM, KeyEntry
from .models import KeyKind, KeyState
from .timefmt import human_duration, relative, utc
from .verified import VerifiedToken

#: A token that expired (or starts) within this many seconds of "now" is
#: more likely a clock difference between servers than a stale token.
SKEW_WINDOW = 300
#: Times above this are almost certainly milliseconds, not seconds.
MILLISECONDS_THRESHOLD = 100_000_000_000

KIND_LABELS: dict[str, str] = {
    KeyKind.SECRET: "signing secret",
    KeyKind.PUBLIC_KEY: "public key",
    KeyKind.SERVICE_KEY: "service key",
    KeyKind.SIGNING_KEY: "site signing key",
    KeyKind.REMOTE_KEY: "identity provider key",
}
STATE_WORDS: dict[str, str] = {
    KeyState.ACTIVE: "active",
    KeyState.GRACE: "in grace",
    KeyState.RETIRED: "retired",
    KeyState.REVOKED: "revoked",
    KeyState.STAGED: "staged",
}
UNAVAILABLE = "unavailable"
#: preview entries shown in their own sections rather than as field rows
NOT_FIELD_ROWS = frozenset({"private_keys", "ignored"})


# -- time facts -----------------------------------------------------------------------


@dataclass(frozen=True)
class TimeFact:
    claim: str
    label: str  # "expires in 42 min"
    at: str  # "2027-01-15 10:02 UTC"


_TIME_VERBS = {
    "exp": ("expires", "expired"),
    "iat": ("will be issued", "issued"),
    "nbf": ("valid from", "valid since"),
}


_MAX_EPOCH = 253_402_300_799  # 9999-12-31T23:59:59Z


def time_facts(claims: dict[str, Any], now: float) -> list[TimeFact]:
    facts = []
    for name, (future, past) in _TIME_VERBS.items():
        value: Any = claims.get(name)  # any JSON value until its type is checked
        # Only times a calendar can show (year 1–9999); anything else is explained
        # by the engine's invalid_claim and must not crash the page.
        if type(value) not in (int, float) or not -_MAX_EPOCH < value < _MAX_EPOCH:
            continue
        verb = future if value >= now else past
        facts.append(TimeFact(name, f"{verb} {relative(value, now)}", utc(value)))
    return facts


# -- the result -------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """The key whose signature matches, whatever its state."""

    kid: str
    kind: str
    state: str
    since: str | None  # when it stopped being accepted, or grace end
    integration: str = "default"
    #: a fetched key's key set URL (SPEC §14: the tester names the IdP key that matched)
    source: str = ""

    @property
    def kind_label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind)

    @property
    def label(self) -> str:
        where = f" from {self.source}" if self.source else ""
        return f"{self.kind_label} {self.kid}{where}"

    @property
    def state_text(self) -> str:
        word = STATE_WORDS.get(self.state, self.state)
        if self.state == KeyState.GRACE and self.since:
            return f"{word} until {self.since}"
        if self.state in (KeyState.RETIRED, KeyState.REVOKED) and self.since:
            return f"{word} since {self.since}"
        return word


@dataclass
class Diagnosis:
    valid: bool
    code: str | None = None
    explanation: str = ""
    detail: str = ""
    hints: list[str] = field(default_factory=list)
    header: dict[str, Any] | None = None
    claims: dict[str, Any] | None = None
    times: list[TimeFact] = field(default_factory=list)
    signer: Signer | None = None
    user_id: str | None = None
    identity: dict[str, Any] | None = None
    private_keys: list[str] = field(default_factory=list)
    #: the integration whose keys and rules judged it (SPEC §13), when one was found
    integration: str | None = None

    @property
    def outcome(self) -> str:
        """What the audit log records: 'valid' or the error code — nothing else."""
        return "valid" if self.valid else (self.code or "invalid")

    @property
    def identity_rows(self) -> list[tuple[str, str]]:
        """The preview's non-empty fields, in SPEC §8 order, as display strings."""
        if not isinstance(self.identity, dict):
            return []
        rows = []
        for name, value in self.identity.items():  # preview() keeps SPEC §8 order
            if name not in NOT_FIELD_ROWS and value not in (None, "", [], {}):
                rows.append((name, value if isinstance(value, str) else _pretty(value)))
        return rows

    @property
    def ignored(self) -> list[dict[str, Any]]:
        items = self.identity.get("ignored") if isinstance(self.identity, dict) else None
        return [i for i in items or [] if isinstance(i, dict)]

    @property
    def header_json(self) -> str:
        return _pretty(self.header)

    @property
    def claims_json(self) -> str:
        return _pretty(self.claims)


def _pretty(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# -- signer search ------------------------------------------------------------------


def find_signer(
    parsed: jws.ParsedToken, now: float, unreadable: list[str] | None = None
) -> Signer | None:
    """The key (any state) whose signature matches, or None.

    Retired and revoked keys are loaded from the store for this search only;
    the kids of keys that cannot be decrypted are appended to ``unreadable``.
    """
    alg = parsed.header.get("alg", "")
    kinds = KINDS_OF_ALGORITHM.get(alg)
    if kinds is None or not parsed.signature:
        return None
    entries: list[KeyEntry] = []
    try:
        for kind in kinds:  # every integration's: a key of another one is named as such
            found, failed = keyring.signer_entries(kind)
            entries += [e for e in found if e.alg == alg]
            if unreadable is not None:
                unreadable.extend(failed)
    except DatabaseError as exc:
        raise KeyStoreUnavailable("the chat key store cannot be read") from exc
    entries += _fetched_entries(alg)
    kid = parsed.header.get("kid")
    entries.sort(key=lambda e: e.kid != kid)  # the kid is the likeliest candidate: try it first
    try:
        entry = tokens.match_signature(parsed, entries)
    except TokenError:
        return None
    return _signer(entry, now)


def _fetched_entries(alg: str) -> list[KeyEntry]:
    """Every integration's fetched keys of ``alg`` in the snapshot (none if it cannot be read)."""
    try:
        snap = keyring.get_snapshot()
    except KeyStoreUnavailable:
        return []
    return [
        key
        for entry in snap.integrations.values()
        if entry.remote is not None
        for key in entry.remote.keys.values()
        if key.alg == alg
    ]


def _signer(entry: KeyEntry, now: float) -> Signer:
    state = entry.state(now)
    if state == KeyState.GRACE:
        since = entry.grace_until
    elif state in (KeyState.ACTIVE, KeyState.STAGED):
        since = None
    else:
        since = entry.stopped_at()
    when = utc(since) if since is not None else None
    if entry.kind == KeyKind.REMOTE_KEY:
        state, when = KeyState.ACTIVE, None  # a stale set answers 503 before any key
    return Signer(entry.kid, entry.kind, state, when, entry.integration, entry.source)


# -- hints --------------------------------------------------------------------------


def _ms_hint(value: Any) -> list[str]:
    if type(value) in (int, float) and value > MILLISECONDS_THRESHOLD:
        return ["This time looks like milliseconds; JWT times are seconds since the epoch."]
    return []


def _hint_expired(facts: dict[str, Any], now: float) -> list[str]:
    exp = facts["exp"]
    ago = now - exp
    hints = [
        f"Expired {human_duration(ago)} ago at {utc(exp, now)} — issue a new token; "
        "recommended lifetime 1 h."
    ]
    if ago < SKEW_WINDOW:
        hints.append(
            f"It expired only {human_duration(ago)} ago: if it was issued just now, the "
            "clocks of the signing server and this server may differ (check NTP)."
        )
    return hints


def _hint_not_yet_valid(facts: dict[str, Any], now: float) -> list[str]:
    at = facts["at"]
    hints = [
        f"{facts.get('claim', 'iat')} lies {human_duration(at - now)} in the future "
        f"({utc(at, now)}): the clocks of the signing server and this server may differ; "
        "check the signing server's clock (NTP)."
    ]
    return hints + _ms_hint(at)


def _hint_lifetime(facts: dict[str, Any]) -> list[str]:
    limit = human_duration(facts["limit"])
    exp, iat = facts.get("exp"), facts.get("iat")
    span = f" (this one: {human_duration(exp - iat)})" if iat is not None else ""
    return [f"Tokens may live at most {limit}{span}. {HINTS['lifetime_too_long']}", *_ms_hint(exp)]


def _hint_key_retired(facts: dict[str, Any], signer: Signer | None) -> list[str]:
    kid = str(facts.get("kid", ""))
    since = facts.get("since")
    state = STATE_WORDS.get(facts.get("state", ""), "retired")
    when = f" on {utc(since)}" if since else ""
    if signer is not None and signer.kid == kid:
        first = f"Signed with {signer.label}, {state}{when} — it is no longer accepted."
    else:
        first = f"The kid header names key {kid}, {state}{when}."
    return [f"{first} {HINTS['key_retired']}"]


def _hint_signature(header: dict[str, Any] | None, signer: Signer | None) -> list[str]:
    kid = (header or {}).get("kid")
    if signer is None:
        return [
            "The signature matches no key known here, usable or not. " + HINTS["invalid_signature"]
        ]
    if signer.state in (KeyState.RETIRED, KeyState.REVOKED):
        return [
            f"Signed with {signer.label}, {signer.state_text} — your backend still uses an "
            "old key; switch it to the active one shown on this page."
        ]
    if kid and kid != signer.kid:
        return [
            f"The signature matches {signer.label}, but the kid header says {kid!r}: fix the kid."
        ]
    return [HINTS["invalid_signature"]]


def _hints(exc: TokenError, diag: Diagnosis, now: float, raw: str) -> list[str]:
    code, facts = exc.code, exc.facts
    if code == "expired":
        return _hint_expired(facts, now)
    if code == "not_yet_valid":
        return _hint_not_yet_valid(facts, now)
    if code == "lifetime_too_long":
        return _hint_lifetime(facts)
    if code == "key_retired":
        return _hint_key_retired(facts, diag.signer)
    if code == "invalid_signature":
        return _hint_signature(diag.header, diag.signer)
    if code == "algorithm_not_allowed":
        allowed = ", ".join(sorted(tokens.allowed_algorithms())) or "none"
        alg = str(facts.get("alg", ""))[:20]
        return [f"Algorithm {alg!r} refused (accepted here: {allowed}). {HINTS[code]}"]
    if code == "unknown_key":
        kid = str(facts.get("kid", ""))[:80]
        signer = diag.signer
        if signer is not None and signer.integration != diag.integration:
            return [
                f"The signature matches {signer.label} of the integration "
                f"{signer.integration!r}, not of {diag.integration!r}, which judged it: send "
                f"it where {signer.integration!r} is served, or sign it with a key of "
                f"{diag.integration!r}."
            ]
        if signer is not None:
            return [
                f"kid {kid!r} is unknown, but the signature matches {signer.label}: "
                f"drop the kid header or set it to {signer.kid!r}."
            ]
        return [f"kid {kid!r} names no key here. {HINTS[code]}"]
    if code == "security_not_configured":
        kind = KIND_LABELS.get(facts.get("kind", ""), "key")
        return [f"No usable {kind} exists yet. {HINTS[code]}"]
    if code == "token_too_large":
        return [
            f"The token has {facts['size']} bytes; the limit is {facts['limit']}. {HINTS[code]}"
        ]
    if code == "token_revoked":
        return [f"Tokens for this user were revoked at {utc(facts['revoked_at'])}. {HINTS[code]}"]
    if code == "malformed":
        return _hint_malformed(raw)
    return [HINTS[code]]


def _hint_malformed(raw: str) -> list[str]:
    if raw[:7].lower() == "bearer ":
        return ["Remove the 'Bearer ' prefix: paste only the token itself."]
    if raw[:1] in "\"'" or raw[-1:] in "\"'":
        return ["Remove the quotes around the token."]
    if any(c.isspace() for c in raw) and jws.COMPACT_JWS.fullmatch("".join(raw.split())):
        return ["The token contains spaces or line breaks; paste it as one line."]
    if raw.count(".") == 4:
        return ["This looks like an encrypted JWE (five parts), not a signed JWT (three parts)."]
    return ["This is not a JWT. " + HINTS["malformed"]]


# -- the entry point ------------------------------------------------------------------


def displayable(value: Any) -> Any:
    """``value`` with lone surrogates spelled ``\\udXXX``, as JSON may send them:
    decoded, they are strings no page can be encoded with (a 500 in the tester)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {displayable(k): displayable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [displayable(v) for v in value]
    return value


def diagnose(token: str, integration: str | Sequence[str] | None = None) -> Diagnosis:
    """Verify ``token`` like the middleware would and explain the outcome, ready to show.

    ``integration``: the one to judge it by, or several of which its ``iss``
    picks one (SPEC §13); None: every integration of the site (by ``iss``).
    """
    return _displayable(_diagnose(token, integration))


def all_integrations() -> tuple[str, ...]:
    """Every integration's name (``default`` first): what ``iss`` picks from when the
    tester or the CLI is not told which one."""
    try:
        return tuple(keyring.get_snapshot().integrations)
    except KeyStoreUnavailable:
        return ("default",)


def explain_failure(
    exc: TokenError, token: str | bytes, integration: str | Sequence[str] | None = None
) -> Diagnosis:
    """Explain the refusal ``exc`` that ``tokens.verify`` raised for ``token``, as the
    tester would: for callers that verify themselves (the CLI's ``verify``)."""
    if isinstance(token, bytes):
        token = token.decode("utf-8", "replace")
    return _displayable(_explain_failure(exc, token, clock.now(), _names(integration)))


def _names(integration: str | Sequence[str] | None) -> tuple[str, ...]:
    if integration is None:
        return all_integrations()
    return (integration,) if isinstance(integration, str) else tuple(integration)


def _displayable(diag: Diagnosis) -> Diagnosis:
    for name in ("detail", "hints", "header", "claims", "user_id", "identity", "private_keys"):
        setattr(diag, name, displayable(getattr(diag, name)))
    return diag


def _diagnose(token: str, integration: str | Sequence[str] | None) -> Diagnosis:
    now = clock.now()
    names = _names(integration)
    try:
        result = tokens.verify(token, count_use=False, integration=names)
    except (KeyUnreadable, KeySetStale) as exc:
        return Diagnosis(valid=False, code=UNAVAILABLE, explanation=exc.detail)
    except KeyStoreUnavailable:
        return Diagnosis(
            valid=False,
            code=UNAVAILABLE,
            explanation="The key store cannot be read (is the database up?).",
        )
    except TokenError as exc:
        return _explain_failure(exc, token, now, names)
    diag = Diagnosis(
        valid=True,
        header=result.header,
        claims=result.claims,
        times=time_facts(result.claims, now),
        user_id=result.user_id,
        integration=result.integration,
    )
    snap = keyring.get_snapshot()
    judge = snap.integrations.get(result.integration)
    fetched = judge.remote.keys if judge is not None and judge.remote is not None else {}
    entry = fetched.get(result.kid) or snap.by_kid.get(result.kid)
    diag.signer = (
        _signer(entry, now) if entry else Signer(result.kid, result.key_kind, "active", None)
    )
    if diag.signer.state == KeyState.GRACE:
        diag.hints.append(
            f"The {diag.signer.label} is in grace until {diag.signer.since}: "
            "switch your backend to the active key before then."
        )
    diag.identity, diag.private_keys = _preview(result)
    return diag


def _explain_failure(
    exc: TokenError, token: str, now: float, names: tuple[str, ...] = ("default",)
) -> Diagnosis:
    diag = Diagnosis(
        valid=False, code=exc.code, explanation=ERROR_CODES[exc.code], detail=exc.detail
    )
    unreadable: list[str] = []
    try:
        parsed = jws.parse(token)
    except TokenError:
        parsed = None
    if parsed is not None:
        diag.header, diag.claims = parsed.header, parsed.claims
        diag.times = time_facts(parsed.claims, now)
        diag.integration = _selected(names, parsed.claims)
        try:
            diag.signer = find_signer(parsed, now, unreadable)
        except KeyStoreUnavailable:
            diag.signer = None
    diag.hints = _hints(exc, diag, now, token)
    if unreadable:
        diag.hints.append(
            f"Key(s) {', '.join(unreadable)} could not be checked: no ENCRYPTION_KEYS entry "
            "decrypts them (see the reencrypt command)."
        )
    return diag


def _selected(names: tuple[str, ...], claims: dict[str, Any]) -> str | None:
    """The integration that judged a refused token, when the store says which."""
    try:
        return select(keyring.get_snapshot().integrations, names, claims).name
    except (TokenError, KeyStoreUnavailable):
        return None


def _preview(result: VerifiedToken) -> tuple[dict[str, Any] | None, list[str]]:
    """What the contact record would receive; private data by key names only."""
    names = sorted(result.private) if isinstance(result.private, dict) else []
    try:
        preview = identity.preview(result.claims, result.private)
    except (NotImplementedError, ChatSecurityError):
        return None, names
    if isinstance(preview, dict):
        names = [str(n) for n in preview.get("private_keys", names)]
    return preview, names
