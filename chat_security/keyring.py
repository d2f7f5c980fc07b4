"""The key store's read side: a parsed, per-process snapshot.

Verifying a token must not query the database. The snapshot holds the mode,
the user revocations and every key's metadata; only keys that can still verify
or decrypt carry their material (HMAC secrets decrypted, RSA public keys
loaded, service private keys decrypted on first use). Retired and revoked
keys keep no material in memory, so one of them that no configured
``ENCRYPTION_KEYS`` entry can decrypt any more costs nothing; the admin's
tester loads such keys on demand (:func:`signer_entries`).

How a process learns of a change (STYLE habit 10):

* made by this process: the snapshot is dropped when the change commits
  (``invalidate``, from the model signals);
* made anywhere else: every writer bumps ``SecurityConfig.version`` inside its
  own transaction (``models.store_changed``); :func:`get_snapshot` compares
  that version with its snapshot's at most every ``KEY_CACHE_SECONDS`` — one
  small query per interval, never one per request, or with a shared cache a
  voucher that another process read it recently (:mod:`.propagation`) — and
  rebuilds on a change;
* the end of a grace period needs no writer: the snapshot is rebuilt at the
  first check after the earliest such moment, which drops the material of
  keys that stopped being usable. A scheduled switch-on (SPEC §15) neither:
  ``IntegrationEntry.on(now)`` turns on at its time in every process, and the
  snapshot is rebuilt then too, so open anonymous sockets are re-checked.

Usage counters (:mod:`chat_security.usage`) live in memory per thread and
are written out at most every ``USAGE_FLUSH_SECONDS``, and at exit.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import Error as DjangoDBError  # DatabaseError and InterfaceError alike
from django.db import transaction
from joserfc.jwk import RSAKey

from . import clock, keys, propagation, public_keys, usage
from .conf import register_cache
from .exceptions import ChatSecurityError, KeyStoreUnavailable, KeyUnreadable
from .integrations import DEFAULT_INTEGRATION, DEFAULT_USER_SPACE, accepted
from .log import get_logger
from .models import (
    Integration,
    Key,
    KeyKind,
    KeySource,
    KeyState,
    RevokedUser,
    SecurityConfig,
    key_state,
    stopped_at,
    usable_state,
    usable_until,
)

logger = get_logger("chat_security.keyring")

#: Longest wait between two attempts to read a key store that failed.
MAX_RETRY_SECONDS = 2.0
#: The first wait after a failure; it doubles with each failure up to the above.
FIRST_RETRY_SECONDS = 0.05
#: A snapshot is rebuilt from the database at least this often, whatever the
#: version says: a change written behind the store's back (``QuerySet.update``,
#: ``bulk_create``, raw SQL, a restored backup) moves no version, and is in force
#: on every worker within this many seconds.
MAX_SNAPSHOT_AGE = 60.0
#: Async callers (HTTP and WebSocket middleware) verify on the event loop only
#: when :func:`fresh_snapshot` says no deadline falls within IN_LOOP_MARGIN
#: seconds (so the check never meets one), and only tokens up to
#: IN_LOOP_MAX_TOKEN characters: an encrypted user_payload, which makes a token
#: that large, costs a ~1 ms RSA decryption that other requests should not wait for.
IN_LOOP_MARGIN = 0.1
IN_LOOP_MAX_TOKEN = 1024

#: The kinds of key that verify each algorithm (a key's ``alg`` pins it to one).
KINDS_OF_ALGORITHM = {
    "HS256": (KeyKind.SECRET,),
    "RS256": (KeyKind.PUBLIC_KEY, KeyKind.SIGNING_KEY),
    "ES256": (KeyKind.PUBLIC_KEY, KeyKind.SIGNING_KEY),
    "EdDSA": (KeyKind.PUBLIC_KEY,),
}
#: The kind a token's alg asks for first (what the explanations name).
KIND_OF_ALGORITHM = {alg: kinds[0] for alg, kinds in KINDS_OF_ALGORITHM.items()}


@dataclass(eq=False)
class KeyEntry:
    """One key, parsed and ready for the engine."""

    kid: str
    kind: str
    #: bytes (HS256), a cryptography public key (RS256, ES256), None (service); never in a repr
    verify_key: Any = field(repr=False)
    created_at: float
    grace_until: float | None
    retired_at: float | None
    revoked_at: float | None
    #: usable, but no configured ENCRYPTION_KEYS entry decrypts its material
    unreadable: bool = False
    #: the algorithm it verifies (or decrypts) with, and the integration it belongs to
    alg: str = ""
    integration: str = DEFAULT_INTEGRATION
    #: a signing key pair published before it signs: verifies, never signs
    staged: bool = False
    #: a usable signing key pair's public PEM, for its JWKS and PEM download (not in a repr)
    public_pem: str = field(default="", repr=False)
    #: a fetched key (``remote_key``): the URL of the set it came from
    source: str = ""
    _encrypted_private: str = field(default="", repr=False)
    _private_key: RSAKey | None = field(default=None, repr=False)
    #: what the entry was made from (:func:`_row`): equal rows give the same entry
    _row: tuple[Any, ...] = field(default=(), repr=False)
    #: until when it verifies (``models.usable_until``): set from the times above
    usable_until: float = field(init=False, default=-math.inf)

    def __post_init__(self) -> None:
        # usable(now) is on every request's path: one comparison, its bound worked
        # out once by the models' key-state rules.
        self.usable_until = usable_until(self.grace_until, self.retired_at, self.revoked_at)
        self._usable_state = KeyState.STAGED if self.staged else usable_state(self.grace_until)

    def state(self, now: float) -> str:
        state = key_state(now, self.grace_until, self.retired_at, self.revoked_at)
        return KeyState.STAGED if self.staged and state == KeyState.ACTIVE else state

    def usable(self, now: float) -> bool:
        """Whether the key verifies at ``now``: its state is active or in grace."""
        return now < self.usable_until

    def usable_state(self, now: float) -> str:
        """``state(now)`` of a key known to be usable at ``now`` (active, grace, staged)."""
        return self._usable_state

    def stopped_at(self) -> float | None:
        """When the key stopped being accepted (for the admin's explanations)."""
        return stopped_at(self.grace_until, self.retired_at, self.revoked_at)

    def signing_pem(self) -> str:
        """A signing key pair's private PEM (decrypted on each call: issuing is rare)."""
        try:
            return keys.decrypt(self._encrypted_private)
        except ChatSecurityError as exc:
            raise KeyUnreadable([self.kid]) from exc

    def private_key(self) -> RSAKey | None:
        """The service key's private JWK, loaded once (RSA keys are slow to load)."""
        if self._private_key is None and self._encrypted_private:
            try:
                pem = keys.decrypt(self._encrypted_private)
            except ChatSecurityError as exc:
                raise KeyUnreadable([self.kid]) from exc
            self._private_key = RSAKey.import_key(pem)
        return self._private_key


@dataclass(eq=False)
class RemoteSet:
    """An integration's fetched key set as this snapshot holds it (SPEC §14)."""

    source_id: int
    #: what the admin gave (a JWKS URL or an issuer), and the URL keys come from
    url: str
    jwks_uri: str
    #: kid -> key; each entry also sits in its integration's ``by_alg``
    keys: dict[str, KeyEntry]
    #: the last good fetch (None: never), and when the set stops serving (JWKS_MAX_STALE)
    fetched_at: float | None
    stale_at: float
    #: when this process next looks whether a scheduled refresh is due
    refresh_at: float
    #: what the last fetch said, if it failed
    error: str = ""

    def stale(self, now: float) -> bool:
        return now >= self.stale_at


@dataclass(eq=False)
class IntegrationEntry:
    """One integration, parsed for the engine (a snapshot holds one per row)."""

    name: str
    #: the iss values it accepts; None: no issuer check (and none picks it by iss)
    issuers: tuple[str, ...] | None
    #: the aud values of which one must be in the token's aud; None: no check
    audiences: tuple[str, ...] | None
    #: its switch when the snapshot was built (a scheduled switch-on then due counts)
    enabled: bool
    paths: tuple[str, ...]
    user_space: str
    #: alg -> the keys that verify it, and kind -> its keys (newest first)
    by_alg: dict[str, list[KeyEntry]] = field(default_factory=dict)
    #: until when some key of it can verify a token (-inf: none can)
    verifiable_until: float = float("-inf")
    #: what it was made from: equal rows give interchangeable entries
    row: tuple[Any, ...] = ()
    #: its fetched key set, if it takes keys from an identity provider
    remote: RemoteSet | None = None
    #: a scheduled switch-on still to come when the snapshot was built (SPEC §15)
    enforce_at: float | None = None
    #: from when a visitor needs a token: -inf (on), ``enforce_at``, or inf (off)
    on_from: float = field(init=False, default=math.inf)

    def __post_init__(self) -> None:
        # on(now) is on every request's path: one comparison, as a key's usable(now).
        if self.enabled:
            self.on_from = -math.inf
        elif self.enforce_at is not None:
            self.on_from = self.enforce_at
        else:
            self.on_from = math.inf

    def on(self, now: float) -> bool:
        """Whether its switch is on at ``now``: a scheduled switch-on takes effect at
        its time in every process, with no write and no rebuild needed."""
        return now >= self.on_from

    def can_verify(self, now: float) -> bool:
        return now < self.verifiable_until

    @property
    def issuer(self) -> str | None:
        """The ``iss`` it puts in the tokens it issues (the first accepted one)."""
        return self.issuers[0] if self.issuers else None

    @property
    def audience(self) -> str | None:
        return self.audiences[0] if self.audiences else None


@dataclass
class Snapshot:
    version: int
    #: the ``default`` integration's switch (``integrations`` holds every one's)
    enabled: bool
    #: every key of every integration (kids are unique across them)
    by_kid: dict[str, KeyEntry] = field(default_factory=dict)
    #: name -> integration, parsed (SPEC §13)
    integrations: dict[str, IntegrationEntry] = field(default_factory=dict)
    #: path prefix -> the integrations serving it, longest prefix first
    paths: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: user id -> its latest revocation in the default user space (tokens with
    #: an older iat are refused)
    revoked_users: dict[str, float] = field(default_factory=dict)
    #: user id -> its first revocation, where earlier than the latest (tokens
    #: without iat that expire after it are refused); see :func:`_revocations`
    revoked_first: dict[str, float] = field(default_factory=dict)
    #: the other user spaces: space -> (latest, first) as the two above
    other_spaces: dict[str, tuple[dict[str, float], dict[str, float]]] = field(default_factory=dict)
    #: the next moment a key leaves its grace period or a scheduled switch-on is
    #: due: rebuild then (so the WebSocket watcher re-checks anonymous sockets)
    rebuild_at: float = math.inf
    #: the first moment a fetched key set may be due for its refresh (``remote.sources``)
    refresh_at: float = math.inf
    #: how often the store is checked while this snapshot is current
    #: (:func:`propagation.check_interval`)
    interval: float = 0.0
    #: when (monotonic) it was read from the database (:data:`MAX_SNAPSHOT_AGE`)
    built_at: float = 0.0
    #: the same object for as long as every key entry is the same: a change
    #: that leaves the keys alone (revoke-user, the mode) keeps it, and with it
    #: the tokens the engine remembers (``tokens.verify``)
    keyset: object = field(default_factory=object)

    def usable(
        self, kind: str, now: float, integration: str = DEFAULT_INTEGRATION
    ) -> list[KeyEntry]:
        """The keys of ``kind`` of one integration that verify (or decrypt) at ``now``."""
        entry = self.integrations.get(integration)
        rows = entry.by_alg.get(kind, ()) if entry is not None else ()
        return [k for k in rows if k.usable(now)]

    def serving(self, path: str) -> tuple[str, ...]:
        """The integrations that guard ``path`` (empty: an unguarded path)."""
        for prefix, names in self.paths:
            if path.startswith(prefix):
                return names
        return ()

    def has_revocations(self) -> bool:
        return bool(self.revoked_users or self.other_spaces)

    def revocation_refusing(
        self, user_id: str, iat: Any, exp: Any, user_space: str = DEFAULT_USER_SPACE
    ) -> float | None:
        """The user revocation that refuses a token of ``user_id`` (SPEC §3 step 8), or None.

        ``iat`` and ``exp`` are the token's numbers (None: the claim is absent).
        Refused: an ``iat`` before the latest revocation; without ``iat``, no
        ``exp`` or an ``exp`` after the first revocation. The one place this
        comparison is made: the engine, the issuer and the kept token ask here.
        Revocations are per user space (SPEC §13): another space's are never asked.
        """
        if user_space == DEFAULT_USER_SPACE:
            latest, first = self.revoked_users, self.revoked_first
        else:
            latest, first = self.other_spaces.get(user_space, ({}, {}))
        revoked_at = latest.get(user_id)
        if revoked_at is None:
            return None
        if iat is not None:
            refused = iat < revoked_at
        else:
            refused = exp is None or exp > first.get(user_id, revoked_at)
        return revoked_at if refused else None


def _holds_material(key: Key, now: float) -> bool:
    """Whether the key can still verify or decrypt (its state never goes back)."""
    return key.is_usable(now)


#: Where ``_row`` holds the key's material (encrypted secret, public key PEM).
_MATERIAL = slice(8, 10)


def _row(key: Key, now: float) -> tuple[Any, ...]:
    """Everything an entry is made of: two equal rows make interchangeable entries."""
    return (
        key.kind,
        key.alg,
        key.integration_id,
        key.staged,
        key.created_at,
        key.grace_until,
        key.retired_at,
        key.revoked_at,
        key.encrypted_material,
        key.public_pem,
        _holds_material(key, now),
    )


def _entry(key: Key, now: float, before: KeyEntry | None = None) -> KeyEntry:
    """The entry for ``key``; material already loaded in ``before`` (same kid) is reused."""
    entry = KeyEntry(
        kid=key.kid,
        kind=key.kind,
        verify_key=None,
        created_at=key.created_at.timestamp(),
        grace_until=clock.timestamp(key.grace_until),
        retired_at=clock.timestamp(key.retired_at),
        revoked_at=clock.timestamp(key.revoked_at),
        alg=key.alg,
        integration=key.integration.name,
        staged=key.staged,
        _row=_row(key, now),
    )
    if not _holds_material(key, now):
        return entry
    if key.kind == KeyKind.SIGNING_KEY:
        entry._encrypted_private = key.encrypted_material  # decrypted only to sign
        entry.public_pem = key.public_pem  # published (jwks.json) without a query
    if key.kind == KeyKind.SERVICE_KEY:
        entry._encrypted_private = key.encrypted_material
        if before is not None and before._encrypted_private == key.encrypted_material:
            entry._private_key = before._private_key
        return entry
    if (
        before is not None
        and before._row[_MATERIAL] == entry._row[_MATERIAL]
        and before.verify_key is not None
    ):
        entry.verify_key = before.verify_key  # same material, only its dates changed
        return entry
    try:
        entry.verify_key = _verify_key(key)
    except (ChatSecurityError, ValueError):
        # Fail closed for this key only: tokens it would have verified get 503,
        # every other key keeps working.
        entry.unreadable = True
        logger.error(
            "web chat key %s cannot be loaded (check ENCRYPTION_KEYS; see reencrypt)", key.kid
        )
    return entry


def _verify_key(key: Key) -> Any:
    if key.kind == KeyKind.SECRET:
        return keys.decrypt(key.encrypted_material).encode("utf-8")
    if key.kind in (KeyKind.PUBLIC_KEY, KeyKind.SIGNING_KEY):
        # Loaded for the one algorithm its type verifies (a stored alg that does
        # not fit the key fails closed for this key only).
        return public_keys.load_verify_pem(key.public_pem, key.alg)
    return public_keys.load_public_pem(key.public_pem)


def _build(previous: Snapshot | None = None) -> Snapshot:
    """Read the store into a new snapshot.

    Key entries of ``previous`` whose rows did not change are reused as they
    are: no secret is decrypted and no PEM parsed again, and when no key and
    no integration changed at all the new snapshot keeps ``previous.keyset``
    (so a ``revoke-user`` costs every worker four small queries, not a rebuild).
    """
    # The version is read before the keys: a change committed in between makes
    # the snapshot newer than its version, so the next check rebuilds it again.
    config = SecurityConfig.objects.filter(pk=1).values("version").first()
    now = clock.now()
    integrations = _integrations(now)
    default = integrations[DEFAULT_INTEGRATION]
    snap = Snapshot(version=config["version"] if config else 0, enabled=default.enabled)
    snap.integrations = integrations
    for integration in integrations.values():
        if integration.enforce_at is not None:
            snap.rebuild_at = min(snap.rebuild_at, integration.enforce_at)
    old = previous.by_kid if previous is not None else {}
    reused = 0
    for key in Key.objects.select_related("integration").order_by("-created_at"):
        entry = old.get(key.kid)
        if entry is not None and entry._row == _row(key, now):
            reused += 1
        else:
            entry = _entry(key, now, entry)
        snap.by_kid[entry.kid] = entry
        owner = integrations[key.integration.name]
        owner.by_alg.setdefault(entry.kind, []).append(entry)
        if entry.kind != KeyKind.SERVICE_KEY:
            owner.by_alg.setdefault(entry.alg, []).append(entry)
        if now < entry.usable_until < math.inf:  # leaves its grace later: rebuild then
            snap.rebuild_at = min(snap.rebuild_at, entry.usable_until)
        if entry.kind != KeyKind.SERVICE_KEY and (entry.verify_key is not None or entry.unreadable):
            owner.verifiable_until = max(owner.verifiable_until, entry.usable_until)
    _remote_sets(snap, previous, now)
    snap.paths = _path_table(integrations)
    same_integrations = (
        previous is not None
        and all(
            integrations[n].row == e.row
            for n, e in previous.integrations.items()
            if n in integrations
        )
        and len(integrations) == len(previous.integrations)
    )
    if previous is not None and same_integrations and reused == len(snap.by_kid) == len(old):
        snap.keyset = previous.keyset
    latest, first = _revocations()
    snap.revoked_users, snap.revoked_first = (
        latest.pop(DEFAULT_USER_SPACE, {}),
        first.pop(DEFAULT_USER_SPACE, {}),
    )
    snap.other_spaces = {space: (rows, first.get(space, {})) for space, rows in latest.items()}
    return snap


def _remote_sets(snap: Snapshot, previous: Snapshot | None, now: float) -> None:
    """Each integration's fetched key set, from the last good set its source stored.

    A key whose kid, thumbprint and serving time are unchanged is reused from
    ``previous`` (no JWK parsed again). A source's issuer (OpenID Connect) is
    its integration's when none is configured. The identity of the keys goes
    into the integration's ``row``, so a set that changed drops the tokens the
    engine remembers, and one refreshed unchanged keeps them.
    """
    from .conf import app_settings

    stale_for = app_settings.JWKS_MAX_STALE
    refresh, cooldown = app_settings.JWKS_REFRESH_SECONDS, app_settings.JWKS_COOLDOWN_SECONDS
    rows = KeySource.objects.values_list(
        "id",
        "integration__name",
        "url",
        "jwks_uri",
        "issuer",
        "keys",
        "fetched_at",
        "attempted_at",
        "error",
    )
    for source_id, name, url, jwks_uri, issuer, stored, fetched, attempted, error in rows:
        owner = snap.integrations.get(name)
        if owner is None:
            continue
        fetched_at, attempted_at = clock.timestamp(fetched), clock.timestamp(attempted)
        stale_at = -math.inf if fetched_at is None else fetched_at + stale_for
        due = max(
            -math.inf if fetched_at is None else fetched_at + refresh,
            -math.inf if attempted_at is None else attempted_at + cooldown,
        )
        old = previous.integrations.get(name) if previous is not None else None
        old_keys = old.remote.keys if old is not None and old.remote is not None else {}
        remote = RemoteSet(source_id, url, jwks_uri, {}, fetched_at, stale_at, due, error)
        for item in stored if isinstance(stored, list) else ():
            entry = _remote_entry(item, name, url, stale_at, old_keys.get(item.get("kid")))
            if entry is not None:
                remote.keys[entry.kid] = entry
                owner.by_alg.setdefault(entry.alg, []).append(entry)
        owner.remote = remote
        # Configured, fresh or stale: a stale set answers 503, never security_not_configured.
        owner.verifiable_until = math.inf
        if issuer and owner.issuers is None:
            owner.issuers = (issuer,)
        owner.row += (source_id, owner.issuers, tuple(sorted(
            (k.kid, k._row[0]) for k in remote.keys.values()
        )))  # fmt: skip
        snap.refresh_at = min(snap.refresh_at, due)


def _remote_entry(
    item: dict[str, Any], integration: str, url: str, stale_at: float, before: KeyEntry | None
) -> KeyEntry | None:
    """A fetched key as the engine uses it: it verifies until its set goes stale."""
    row = (item.get("thumbprint"), item.get("alg"), stale_at)
    if before is not None and before._row == row:
        return before
    try:
        info = public_keys.public_key_from_jwk(item["jwk"])
        first_seen = datetime.fromisoformat(item["first_seen"]).timestamp()
    except (KeyError, TypeError, ValueError, ChatSecurityError):
        logger.error("a stored key of %s cannot be loaded; it is left out", url)
        return None
    entry = KeyEntry(
        kid=item["kid"],
        kind=KeyKind.REMOTE_KEY,
        verify_key=info.key,
        created_at=first_seen,
        grace_until=None,
        retired_at=None,
        revoked_at=None,
        alg=info.alg,
        integration=integration,
        source=url,
        _row=row,
    )
    entry.usable_until = stale_at  # a stale set's keys send the engine to its 503
    return entry


def _integrations(now: float) -> dict[str, IntegrationEntry]:
    """Every integration, parsed at ``now``; ``default`` from the settings' ISSUER,
    AUDIENCE and PROTECTED_PATHS. A scheduled switch-on already due is on; one
    still to come is kept as the entry's ``enforce_at``."""
    from .conf import app_settings

    rows: list[tuple[int | None, str, str, str, bool, Any, str, datetime | None]] = list(
        Integration.objects.values_list(
            "id", "name", "issuer", "audience", "enabled", "paths", "user_space", "enforce_at"
        )
    )
    if not any(row[1] == DEFAULT_INTEGRATION for row in rows):
        # No row yet (a flushed table): as a fresh one would be; nothing is written here.
        rows.insert(0, (None, DEFAULT_INTEGRATION, "", "", True, [], DEFAULT_USER_SPACE, None))
    result: dict[str, IntegrationEntry] = {}
    for row_id, name, issuer, audience, enabled, paths, user_space, scheduled in rows:
        enforce_at = None if enabled else clock.timestamp(scheduled)
        if enforce_at is not None and now >= enforce_at:
            enabled, enforce_at = True, None  # due: on, as if switched by hand
        if name == DEFAULT_INTEGRATION:
            issuers, audiences = accepted(app_settings.ISSUER), accepted(app_settings.AUDIENCE)
            prefixes = _settings_paths(app_settings.PROTECTED_PATHS)
        else:
            issuers, audiences = accepted(issuer), accepted(audience)
            prefixes = tuple(p for p in paths or () if isinstance(p, str) and p)
        entry = IntegrationEntry(
            name=name,
            issuers=issuers,
            audiences=audiences,
            enabled=bool(enabled),
            enforce_at=enforce_at,
            paths=prefixes,
            user_space=user_space or DEFAULT_USER_SPACE,
            # What a remembered token's verdict depends on (not the switch, not paths).
            row=(row_id, issuers, audiences, user_space),
        )
        result[name] = entry
    return result


def _settings_paths(paths: Any) -> tuple[str, ...]:
    if isinstance(paths, str):
        paths = [paths]
    return tuple(str(p) for p in paths or () if p)


def _path_table(
    integrations: dict[str, IntegrationEntry],
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Prefix -> the integrations serving it; a path takes its longest matching prefix."""
    table: dict[str, list[str]] = {}
    for entry in integrations.values():
        for prefix in entry.paths:
            table.setdefault(prefix, []).append(entry.name)
    return tuple(
        (prefix, tuple(names))
        for prefix, names in sorted(table.items(), key=lambda item: -len(item[0]))
    )


def _revocations() -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Every user revocation, per user space: user id -> latest, and -> first where
    it is earlier.

    All of them, however old (SPEC §3 step 8). A token without ``iat`` is
    refused when it expires after the first revocation, and such a token can
    be signed at any time with an ``exp`` still to come: no revocation ever
    stops mattering, so none is dropped from memory. Each costs a process a
    dict entry (about 150 bytes).
    """
    latest: dict[str, dict[str, float]] = {}
    first: dict[str, dict[str, float]] = {}
    rows = RevokedUser.objects.values_list(
        "user_space", "user_id", "revoked_at", "first_revoked_at"
    )
    for space, user_id, revoked_at, first_revoked_at in rows.iterator(chunk_size=2000):
        latest.setdefault(space, {})[user_id] = revoked_at.timestamp()
        if first_revoked_at is not None and first_revoked_at < revoked_at:
            first.setdefault(space, {})[user_id] = first_revoked_at.timestamp()
    return latest, first


def signer_entries(kind: str, integration: str | None = None) -> tuple[list[KeyEntry], list[str]]:
    """Every key of ``kind`` with its material, for the tester's "which key signed this?".

    Retired and revoked keys are loaded here, on demand, never kept. Returns
    the entries that could be loaded and the kids of those that could not
    (reported to the admin, never fatal).
    """
    entries, unreadable = [], []
    now = clock.now()
    rows = Key.objects.filter(kind=kind).select_related("integration")
    if integration is not None:
        rows = rows.filter(integration__name=integration)
    for key in rows.order_by("-created_at"):
        entry = _entry(key, now)
        if entry.verify_key is None:
            try:
                entry.verify_key = _verify_key(key)
            except (ChatSecurityError, ValueError):
                unreadable.append(key.kid)
                continue
        entries.append(entry)
    return entries, unreadable


class _State:
    lock = threading.Lock()
    snapshot: Snapshot | None = None
    #: the latest snapshot built, kept when the current one is dropped: for routing
    #: while the store cannot be read (:func:`last_snapshot`)
    last: Snapshot | None = None
    checked_at: float = 0.0
    failures: int = 0
    retry_at: float = 0.0
    generation: int = 0


def get_snapshot() -> Snapshot:
    """The current snapshot; raises KeyStoreUnavailable if the store cannot be read.

    At most once per ``KEY_CACHE_SECONDS`` (half of it with a shared cache) it
    asks whether the store changed: a fresh voucher in the shared cache when
    there is one (no query), else the database's version (one small query);
    see :mod:`chat_security.propagation`. While the database is down, it is
    retried with a backoff (up to :data:`MAX_RETRY_SECONDS`), not on every
    request.
    """
    snap = _State.snapshot
    mono = time.monotonic()
    if snap is not None and mono - _State.checked_at < snap.interval:
        return snap
    if mono < _State.retry_at:
        raise KeyStoreUnavailable("the chat key store cannot be read (retrying shortly)")
    generation = _State.generation
    try:
        if (
            snap is not None
            and clock.now() < snap.rebuild_at
            and mono - snap.built_at < MAX_SNAPSHOT_AGE
            and _unchanged(snap)
        ):
            snap.interval = propagation.check_interval()
            _State.checked_at, _State.failures, _State.retry_at = mono, 0, 0.0
            return snap
        read_at = propagation.wall_clock()  # before the version is read: see propagation
        snap = _build(snap)
    except (DjangoDBError, ChatSecurityError) as exc:
        _State.failures += 1
        _State.retry_at = mono + retry_delay(_State.failures)
        raise KeyStoreUnavailable("the chat key store cannot be read") from exc
    propagation.vouch(snap.version, read_at)
    snap.built_at, snap.interval = mono, propagation.check_interval()
    with _State.lock:
        if _State.generation == generation:
            _State.snapshot, _State.checked_at = snap, mono
        _State.last = snap
        _State.failures, _State.retry_at = 0, 0.0
    return snap


def retry_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failed reads in a row: doubling, capped."""
    if failures >= 64:  # 2**64 * 0.05 is far past the cap; never build a huge number
        return MAX_RETRY_SECONDS
    return min(FIRST_RETRY_SECONDS * 2.0 ** max(failures - 1, 0), MAX_RETRY_SECONDS)


def _unchanged(snap: Snapshot) -> bool:
    """Whether ``snap`` is still current: a fresh voucher says so, else the database."""
    if propagation.read_voucher() == snap.version:
        return True
    read_at = propagation.wall_clock()
    row = SecurityConfig.objects.filter(pk=1).values_list("version", flat=True).first()
    version = int(row or 0)
    propagation.vouch(version, read_at)
    return version == snap.version


def last_snapshot() -> Snapshot | None:
    """The latest snapshot this process built, current or not (never a query).

    For deciding which paths are guarded while the store cannot be read: the
    integrations' paths it knew then are still answered with 503, not let through.
    """
    return _State.snapshot or _State.last


def security_enabled() -> bool:
    """Whether **Secure your web chat** is on, from this process's snapshot (no query once warm).

    Raises KeyStoreUnavailable when the key store cannot be read; callers
    that must decide anyway should treat that as on (fail closed).
    """
    return get_snapshot().integrations[DEFAULT_INTEGRATION].on(clock.now())


def fresh_snapshot(margin: float = 0.0) -> Snapshot | None:
    """The snapshot, if :func:`get_snapshot` and the counters would touch no database now.

    None when a version check or a counter flush falls due within ``margin``
    seconds. Lets async callers (the WebSocket middleware) verify on the event
    loop when no query can happen, and go to the database thread otherwise.
    """
    snap, mono = _State.snapshot, time.monotonic()
    if (
        snap is None
        or mono - _State.checked_at >= snap.interval - margin
        or usage.flush_due(margin)
        or clock.now() >= min(snap.rebuild_at, snap.refresh_at) - margin
    ):
        return None
    return snap


def can_verify_in_loop(token_length: int = 0) -> bool:
    """Whether an async caller may verify a token this long on the event loop now.

    True when no query can happen (:func:`fresh_snapshot` with
    ``IN_LOOP_MARGIN``) and the token is at most ``IN_LOOP_MAX_TOKEN`` characters.
    """
    return token_length <= IN_LOOP_MAX_TOKEN and fresh_snapshot(IN_LOOP_MARGIN) is not None


def _drop_snapshot() -> None:
    with _State.lock:
        _State.snapshot = None
        _State.generation += 1


def reread() -> Snapshot:
    """A snapshot read from the store now (a fetched set's times changed, not its keys)."""
    _drop_snapshot()
    return get_snapshot()


def store_changed_here() -> None:
    """This process changed the store outside ``invalidate``'s signal (a fetched key
    set): forget the snapshot now and tell the other processes."""
    _drop_snapshot()
    propagation.announce()


def invalidate(**_kwargs: Any) -> None:
    """This process forgets its snapshot now and again when the change commits.

    Other processes need nothing from here: ``models.store_changed`` moved the
    version inside the writer's transaction.
    """
    _State.snapshot = None
    transaction.on_commit(_drop_snapshot)
    transaction.on_commit(propagation.announce)


def reset() -> None:
    """Forget the snapshot and the unwritten counters (tests, setting changes).

    Tokens the engine remembers need nothing from here: a remembered token is
    used only with the very key set it was verified against, and the next
    snapshot built from nothing has a new one.
    """
    with _State.lock:
        _State.snapshot = _State.last = None
        _State.failures, _State.retry_at = 0, 0.0
    propagation.reset()
    usage.reset()


register_cache(reset)  # snapshots hold keys decrypted and parsed under the old settings
