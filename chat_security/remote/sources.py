"""Key sources (SPEC §14): an integration's public keys fetched from its identity provider.

The write side of remote key sets. A :class:`~chat_security.models.KeySource`
row holds the last good set, so every worker and server shares one fetch and a
restart or a cache loss never needs the identity provider. The engine reads
the set from the key snapshot (``keyring``) and comes here only when a fetch
may be due:

* :func:`refresh_due` — the set's refresh time (``JWKS_REFRESH_SECONDS``) passed;
* :func:`fetch_now` — a token names a kid the set does not hold, or the set is
  stale (at most once per ``JWKS_COOLDOWN_SECONDS``).

Who fetches is decided by one conditional UPDATE of ``attempted_at`` (the
lease, :func:`_claim`): of all the processes that find a fetch due, the one
whose UPDATE matched fetches, the others carry on with the set they hold.
A process that dies mid-fetch holds nothing: the next claim succeeds once
the cooldown has passed. A fetch that changes the set moves the store's
version (``models.store_changed``), so every worker takes the new set within
``KEY_CACHE_SECONDS``; a failed fetch changes nothing the engine reads, and
the last good set serves until ``JWKS_MAX_STALE``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import SynchronousOnlyOperation
from django.db import Error as DjangoDBError
from django.db import transaction
from django.db.models import Q

from .. import clock, keyring, metrics, public_keys
from ..conf import app_settings, register_cache
from ..exceptions import ChatSecurityError, KeyImportError, KeyStateError, KeyStoreUnavailable
from ..integrations import DEFAULT_INTEGRATION, accepted
from ..log import get_logger
from ..models import AuditEntry, Integration, KeySource, store_changed
from .fetch import FetchError, fetch_json

logger = get_logger("chat_security.remote")

#: SPEC §14: a key set holds at most this many keys.
MAX_KEYS = 100
#: The discovery document's place under an issuer (OpenID Connect Discovery 1.0 §4).
DISCOVERY_PATH = "/.well-known/openid-configuration"
#: Key types a set may hold; any other kty is skipped and reported.
KEY_TYPES = ("RSA", "EC", "OKP")


class SourceError(ChatSecurityError):
    """A key source could not be added or fetched; the message says why, in one line."""


@dataclass(frozen=True)
class Outcome:
    """What one fetch did: ``ok``, the kids it added and removed, what it skipped, or
    the error that kept the last good set."""

    ok: bool
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    error: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


# -- reading a key set -------------------------------------------------------------


def parse_key_set(
    document: Any, previous: list[dict[str, Any]] | None = None, now: datetime | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The keys of a JWKS document to store, and what was skipped (SPEC §14).

    Keys with ``use: "enc"``, an unknown ``kty``, another curve, a short RSA
    modulus or private members are skipped and reported; so is a second key
    with a kid already seen. A key without a kid is known by its thumbprint.
    ``first_seen`` carries over from ``previous`` for a key already held.
    Raises :class:`SourceError` for a document that is not a key set, one with
    more than :data:`MAX_KEYS` keys, or one with no usable key.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise SourceError('the answer is not a JWKS (a JSON object with a "keys" list)')
    entries = document["keys"]
    if len(entries) > MAX_KEYS:
        raise SourceError(f"the key set holds {len(entries)} keys; at most {MAX_KEYS} are read")
    seen = {k.get("thumbprint"): k.get("first_seen") for k in previous or ()}
    stamp = (now or clock.now_dt()).isoformat()
    stored: list[dict[str, Any]] = []
    skipped: list[str] = []
    kids: set[str] = set()
    for position, jwk in enumerate(entries, 1):
        name = _name_of(jwk, position)
        if not isinstance(jwk, dict):
            skipped.append(f"{name}: not a JSON object")
            continue
        if jwk.get("use") == "enc":
            skipped.append(f'{name}: use "enc" (an encryption key)')
            continue
        if jwk.get("kty") not in KEY_TYPES:
            skipped.append(f"{name}: kty {str(jwk.get('kty'))[:20]!r} is not RSA, EC or OKP")
            continue
        try:
            info = public_keys.public_key_from_jwk(jwk)
        except KeyImportError as exc:
            skipped.append(f"{name}: {exc}")
            continue
        kid = info.jwk_kid or info.thumbprint
        if kid in kids:
            skipped.append(f"{name}: a second key with kid {kid[:80]!r}")
            continue
        kids.add(kid)
        stored.append(
            {
                "kid": kid,
                "kty": info.kty,
                "alg": info.alg,
                "jwk": _public_members(jwk),
                "thumbprint": info.thumbprint,
                "first_seen": seen.get(info.thumbprint) or stamp,
            }
        )
    if not stored:
        reasons = f" ({'; '.join(skipped)[:300]})" if skipped else ""
        raise SourceError(f"the key set holds no usable signing key{reasons}")
    return stored, skipped


def _name_of(jwk: Any, position: int) -> str:
    kid = jwk.get("kid") if isinstance(jwk, dict) else None
    return f"kid {kid[:80]!r}" if isinstance(kid, str) else f"key {position}"


#: The members of a public JWK this package keeps (RFC 7517/7518/8037).
_PUBLIC_MEMBERS = ("kty", "kid", "alg", "use", "n", "e", "crv", "x", "y")


def _public_members(jwk: dict[str, Any]) -> dict[str, Any]:
    return {m: jwk[m] for m in _PUBLIC_MEMBERS if m in jwk}


def discover(issuer: str) -> tuple[str, str]:
    """An OpenID Connect issuer's ``(issuer, jwks_uri)`` from its discovery document.

    The document must name the issuer it was fetched for (Discovery 1.0 §4.3;
    a trailing slash aside), or nothing it says is used.
    """
    issuer = issuer.strip()
    document = fetch_json(issuer.rstrip("/") + DISCOVERY_PATH, private_hosts=_private_hosts())
    if not isinstance(document, dict):
        raise SourceError("the discovery document is not a JSON object")
    found, jwks_uri = document.get("issuer"), document.get("jwks_uri")
    if not isinstance(found, str) or found.rstrip("/") != issuer.rstrip("/"):
        raise SourceError(
            f"the discovery document names the issuer {str(found)[:200]!r}, not {issuer!r}; "
            "OpenID Connect requires them to be the same (use the issuer exactly as the "
            "provider writes it)"
        )
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise SourceError("the discovery document names no jwks_uri")
    return found, jwks_uri


def _private_hosts() -> tuple[str, ...]:
    hosts = app_settings.JWKS_PRIVATE_HOSTS
    return tuple(h for h in hosts if isinstance(h, str)) if isinstance(hosts, list | tuple) else ()


def _fetch_set(jwks_uri: str, previous: list[dict[str, Any]] | None) -> tuple[list[Any], list[str]]:
    try:
        return parse_key_set(fetch_json(jwks_uri, private_hosts=_private_hosts()), previous)
    except FetchError as exc:
        raise SourceError(str(exc)) from exc


# -- adding and removing a source ------------------------------------------------------


def add_jwks_url(url: str, integration: str = DEFAULT_INTEGRATION, actor: str = "") -> KeySource:
    """Take ``integration``'s public keys from the JWKS at ``url`` (fetched now).

    Nothing is stored when the fetch fails (:class:`SourceError` says why).
    """
    url = url.strip()
    found, skipped = _fetch_set(url, None)
    return _add(integration, KeySource.Kind.JWKS_URL, url, url, "", found, skipped, actor)


def add_oidc_issuer(
    issuer: str, integration: str = DEFAULT_INTEGRATION, actor: str = ""
) -> KeySource:
    """Take ``integration``'s public keys from an OpenID Connect issuer (SPEC §14).

    The discovery document gives the JWKS URL, and its ``issuer`` becomes the
    integration's issuer: its tokens must carry it as ``iss``. Refused when the
    integration already requires another issuer.
    """
    try:
        discovered, jwks_uri = discover(issuer)
    except FetchError as exc:
        raise SourceError(str(exc)) from exc
    _check_issuer(integration, discovered)
    found, skipped = _fetch_set(jwks_uri, None)
    kind = KeySource.Kind.OIDC_ISSUER
    return _add(integration, kind, issuer.strip(), jwks_uri, discovered, found, skipped, actor)


def _check_issuer(integration: str, discovered: str) -> None:
    if integration == DEFAULT_INTEGRATION:
        required = accepted(app_settings.ISSUER)
        if required is not None and discovered not in required:
            raise SourceError(
                f"CHAT_SECURITY['ISSUER'] is {app_settings.ISSUER!r}, but this provider's "
                f"tokens carry iss {discovered!r}: set ISSUER to it, or leave ISSUER unset "
                "to take it from the provider"
            )
        return
    current = Integration.objects.named(integration).issuer
    if current and current != discovered:
        raise SourceError(
            f"integration {integration} requires iss {current!r}, but this provider's tokens "
            f"carry {discovered!r}: run 'integration set {integration} --issuer {discovered}' "
            "first, or add the provider to another integration"
        )


def _add(
    integration: str,
    kind: str,
    url: str,
    jwks_uri: str,
    issuer: str,
    found: list[dict[str, Any]],
    skipped: list[str],
    actor: str,
) -> KeySource:
    now = clock.now_dt()
    with transaction.atomic():
        store_changed()
        owner = Integration.objects.named(integration)
        existing = KeySource.objects.filter(integration=owner).first()
        if existing is not None:
            raise KeyStateError(
                f"integration {integration} already takes its keys from {existing.url}; "
                "run remove-key-source first"
            )
        if issuer and integration != DEFAULT_INTEGRATION and not owner.issuer:
            owner.issuer = issuer
            owner.save(update_fields=["issuer"])
        source = KeySource.objects.create(
            integration=owner,
            kind=kind,
            url=url,
            jwks_uri=jwks_uri,
            issuer=issuer,
            keys=found,
            skipped=skipped,
            fetched_at=now,
            attempted_at=now,
            finished_at=now,
            outcome="ok",
            created_by=actor,
        )
        detail = f"{url} ({len(found)} keys)" + _scope(integration)
        AuditEntry.record(actor, "add_key_source", detail=detail)
    return source


def remove(integration: str = DEFAULT_INTEGRATION, actor: str = "") -> KeySource:
    """Stop taking ``integration``'s keys from its source: its fetched keys stop verifying."""
    with transaction.atomic():
        store_changed()
        owner = Integration.objects.named(integration)
        source = KeySource.objects.filter(integration=owner).first()
        if source is None:
            raise KeyStateError(f"integration {integration} has no key source")
        source.delete()
        AuditEntry.record(actor, "remove_key_source", detail=source.url + _scope(integration))
    return source


def _scope(integration: str) -> str:
    return "" if integration == DEFAULT_INTEGRATION else f" for integration {integration}"


# -- fetching ------------------------------------------------------------------------


def refresh(integration: str = DEFAULT_INTEGRATION, actor: str = "") -> Outcome:
    """Fetch ``integration``'s key set now, whatever the schedule (CLI, panel's Refresh now).

    The outcome is stored either way; a failure keeps the last good set.
    """
    source = KeySource.objects.filter(integration__name=integration).first()
    if source is None:
        raise KeyStateError(f"integration {integration} has no key source")
    KeySource.objects.filter(pk=source.pk).update(attempted_at=clock.now_dt())
    outcome = _fetch_and_store(source.pk)
    if actor:
        AuditEntry.record(
            actor,
            "refresh_keys",
            detail=("ok" if outcome.ok else f"error: {outcome.error[:200]}") + _scope(integration),
        )
    return outcome


def _fetch_and_store(source_id: int) -> Outcome:
    """Fetch a claimed source's set and store what came: the set, or the error."""
    source = KeySource.objects.select_related("integration").filter(pk=source_id).first()
    if source is None:
        return Outcome(ok=False, error="the key source was removed")
    try:
        found, skipped = _fetch_set(source.jwks_uri, source.keys)
    except SourceError as exc:
        metrics.count_fetch(source.integration.name, ok=False)
        KeySource.objects.filter(pk=source_id).update(
            outcome="error", error=str(exc)[:1000], finished_at=clock.now_dt()
        )
        logger.warning("key set of %s could not be fetched: %s", source.url, exc)
        return Outcome(ok=False, error=str(exc))
    metrics.count_fetch(source.integration.name, ok=True)
    before = {k["kid"]: k["thumbprint"] for k in source.keys}
    after = {k["kid"]: k["thumbprint"] for k in found}
    added = tuple(kid for kid, print_ in after.items() if before.get(kid) != print_)
    removed = tuple(kid for kid, print_ in before.items() if after.get(kid) != print_)
    now = clock.now_dt()
    with transaction.atomic():
        if added or removed:
            store_changed()  # every worker takes the new set within KEY_CACHE_SECONDS
        KeySource.objects.filter(pk=source_id).update(
            keys=found, skipped=skipped, fetched_at=now, finished_at=now, outcome="ok", error=""
        )
    if added or removed:
        logger.info(
            "key set of %s changed: added %s, removed %s",
            source.url,
            ", ".join(added) or "none",
            ", ".join(removed) or "none",
        )
    return Outcome(ok=True, added=added, removed=removed, skipped=tuple(skipped))


def _claim(source_id: int, now: datetime, *, scheduled: bool) -> bool:
    """Whether this process fetches now: one conditional UPDATE of the shared lease.

    Matches when no fetch began within the cooldown (and, for a scheduled
    refresh, the set is older than ``JWKS_REFRESH_SECONDS``). Two processes
    that race both run the UPDATE; the database lets one of them match.
    """
    free = Q(attempted_at__isnull=True) | Q(
        attempted_at__lte=now - timedelta(seconds=app_settings.JWKS_COOLDOWN_SECONDS)
    )
    rows = KeySource.objects.filter(free, pk=source_id)
    if scheduled:
        refresh = timedelta(seconds=app_settings.JWKS_REFRESH_SECONDS)
        rows = rows.filter(Q(fetched_at__isnull=True) | Q(fetched_at__lte=now - refresh))
    return rows.update(attempted_at=now) == 1


def _refuse_in_event_loop() -> None:
    """A fetch blocks: async callers verify on their event loop only while none is due,
    and go to the database thread on :class:`SynchronousOnlyOperation` (as for a query)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise SynchronousOnlyOperation("a key set fetch cannot run in an event loop")


class _Local:
    """This process's memory of when it may next claim a source outside its schedule."""

    next_claim: dict[int, float] = {}


def refresh_due(snap: keyring.Snapshot, now: float) -> keyring.Snapshot:
    """Refresh every source of ``snap`` whose time has come; the snapshot to use next.

    Called by the engine when ``now`` passed ``snap.refresh_at``. Whether this
    process fetches or not, it does not ask again for a cooldown; the fetch
    happens in the calling request (at most one fetch's timeout).
    """
    _refuse_in_event_loop()
    changed = fetched = False
    cooldown = app_settings.JWKS_COOLDOWN_SECONDS
    for entry in snap.integrations.values():
        remote = entry.remote
        if remote is None or now < remote.refresh_at:
            continue
        try:
            if _claim(remote.source_id, clock.now_dt(), scheduled=True):
                outcome = _fetch_and_store(remote.source_id)
                changed, fetched = changed or outcome.changed, fetched or outcome.ok
                remote.error = outcome.error  # for the 503's detail, before the next rebuild
        except DjangoDBError:
            logger.warning("key set of %s: the database could not be reached", remote.url)
        remote.refresh_at = now + cooldown  # this process's next look, whoever fetched
    snap.refresh_at = min(
        (e.remote.refresh_at for e in snap.integrations.values() if e.remote is not None),
        default=float("inf"),
    )
    if changed:
        keyring.store_changed_here()
    return keyring.reread() if fetched else snap  # new keys, or the same ones fresh again


def fetch_now(snap: keyring.Snapshot, name: str, now: float) -> keyring.Snapshot:
    """Integration ``name``'s set cannot judge a token: it names a kid the set does not
    hold, or the set is stale. Fetch it if the cooldown allows, else read the store
    again (another process may have fetched it within the cooldown); at most once per
    cooldown in this process, and no query in between. The snapshot to judge with
    comes back. Raises KeyStoreUnavailable when the database cannot be reached: the
    token is not known to be refused (503)."""
    remote = snap.integrations[name].remote
    if remote is None or now < _Local.next_claim.get(remote.source_id, 0.0):
        return snap
    _refuse_in_event_loop()
    try:
        claimed = _claim(remote.source_id, clock.now_dt(), scheduled=False)
        _Local.next_claim[remote.source_id] = now + app_settings.JWKS_COOLDOWN_SECONDS
        outcome = _fetch_and_store(remote.source_id) if claimed else None
    except DjangoDBError as exc:
        raise KeyStoreUnavailable("the chat key store cannot be read") from exc
    if outcome is not None:
        remote.error = outcome.error
        if outcome.changed:
            keyring.store_changed_here()
        if not outcome.ok:
            return snap
    return keyring.reread()


def reset() -> None:
    _Local.next_claim = {}


register_cache(reset)
