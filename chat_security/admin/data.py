"""Read side of the Developer – WebChat panel: each integration's part and the page.

The sections' HTML ids, each integration's part (rules, switch, keys by kind,
key source, links) and ``manager_data``, which reads everything the
key-management sections show in a fixed number of queries. A key's row is
built by ``key_rows``, the revoked users by ``revoked_users``, the traffic by
``traffic``. Only reads; never holds secret material (a secret shows as its
prefix and fingerprint). Times are shown in UTC like the token tester's hints.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db.models import Max
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from .. import hygiene, views
from .. import usage as usage_counters
from ..conf import app_settings
from ..integrations import DEFAULT_INTEGRATION
from ..models import AuditEntry, Integration, Key, KeyKind, KeySource, KeyState
from ..timefmt import countdown, relative, utc
from . import traffic as traffic_data
from .forms import default_grace_hours
from .key_rows import key_row, newest_active
from .revoked_users import revoked_users_summary

RECENT_AUDIT = 10
#: Where the documentation (docs/http.md) tells projects to route ``chat_security.views.jwks``.
JWKS_SUGGESTED_PATH = "/.well-known/chat-security/jwks.json"
#: Where an integration's signing keys are published (SPEC §13).
SIGNING_JWKS_PATH = "/.well-known/chat-security/{name}/jwks.json"
#: A key's section on the panel, by kind (``default``'s ids; others' carry their name).
ANCHORS: dict[str, str] = {
    KeyKind.SECRET: "secrets",
    KeyKind.PUBLIC_KEY: "public-keys",
    KeyKind.SERVICE_KEY: "service-keys",
    KeyKind.SIGNING_KEY: "signing-keys",
}
SWITCH_ACTIONS = ("security_on", "security_off")


def anchor(integration: str, section: str) -> str:
    """The HTML id of one integration's section: ``default``'s are the ids the panel
    always had (``secrets``); another's carry its name (``integration-ios-secrets``)."""
    if integration == DEFAULT_INTEGRATION:
        return section
    return f"integration-{integration}-{section}"


def anchors(integration: str) -> dict[str, str]:
    sections = (
        "security", "secrets", "public-keys", "key-source", "service-keys", "signing-keys",
        "traffic",
    )  # fmt: skip
    return {
        "integration": f"integration-{integration}",
        **{section.replace("-", "_"): anchor(integration, section) for section in sections},
    }


def anchor_of(key: Key, integration: str = DEFAULT_INTEGRATION) -> str:
    return anchor(integration, ANCHORS.get(key.kind, "secrets"))


def rotation_notices(keys: list[Key], now: float, integration: str) -> list[dict[str, Any]]:
    """Key hygiene (SPEC §15): the integration's active keys older than
    ROTATION_REMINDER_DAYS, from the keys the panel has already read (no query)."""
    return [
        {
            "kid": due.kid,
            "kind": due.kind,
            "name": due.name,
            "age_days": due.age_days,
            "limit_days": due.limit_days,
            "command": due.command,
            "anchor": anchor(integration, ANCHORS[due.kind]),
        }
        for due in hygiene.due_keys(keys, now, integration)
    ]


def _routed(request: HttpRequest, view: Any, **kwargs: str) -> str | None:
    """Absolute URL of one of the app's public views if the project routes it."""
    if view is None:
        return None
    try:
        path = reverse(view, kwargs=kwargs or None)
    except NoReverseMatch:
        return None
    return request.build_absolute_uri(path)


def jwks_url(request: HttpRequest) -> str | None:
    """Absolute URL of the JWKS view (service keys) if the project routes it."""
    return _routed(request, views.jwks)


def _settings_list(value: Any) -> list[str]:
    """A setting that takes a string or a list, as a list (PROTECTED_PATHS, ISSUER)."""
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value or () if v]


def _integration_rows() -> list[Integration]:
    """Every integration, ``default`` first (an unsaved one if its row is missing:
    the panel reads, it never writes; the first action makes the row)."""
    rows = sorted(Integration.objects.all(), key=lambda row: row.name != DEFAULT_INTEGRATION)
    if not rows or rows[0].name != DEFAULT_INTEGRATION:
        rows.insert(0, Integration(name=DEFAULT_INTEGRATION))
    return rows


def audit_scope(integration: str) -> str:
    """The audit detail the store writes for an integration's switch ("" for ``default``)."""
    return "" if integration == DEFAULT_INTEGRATION else f"integration {integration}"


def _switch_changes(rows: list[Integration]) -> dict[str, AuditEntry]:
    """name -> the audit entry of its switch's last change (one query for all of them)."""
    scopes = {audit_scope(row.name): row for row in rows}
    latest = (
        AuditEntry.objects.filter(action__in=SWITCH_ACTIONS, detail__in=scopes)
        .values("detail")
        .annotate(last=Max("pk"))
        .values("last")
    )
    found: dict[str, AuditEntry] = {}
    for entry in AuditEntry.objects.filter(pk__in=latest):
        row = scopes[entry.detail]
        # A name removed and added again starts afresh (default's row is as old as
        # the upgrade, and its switch older).
        if row.name == DEFAULT_INTEGRATION or row.created_at is None or entry.at >= row.created_at:
            found[row.name] = entry
    return found


def _scheduled(row: Integration, now: float) -> dict[str, str] | None:
    """A scheduled switch-on still to come (SPEC §15): when, and how long until then."""
    at = row.scheduled_at(now)
    if at is None:
        return None
    return {
        "at": utc(at.timestamp()),
        "iso": at.astimezone(UTC).isoformat(),
        "countdown": countdown(at.timestamp() - now),
    }


def _rules(row: Integration) -> dict[str, Any]:
    """What the engine checks for it: ``default``'s issuer, audience and paths are settings."""
    if row.name == DEFAULT_INTEGRATION:
        return {
            "issuers": _settings_list(app_settings.ISSUER),
            "audiences": _settings_list(app_settings.AUDIENCE),
            "paths": _settings_list(app_settings.PROTECTED_PATHS),
        }
    return {
        "issuers": [row.issuer] if row.issuer else [],
        "audiences": [row.audience] if row.audience else [],
        "paths": [p for p in row.paths or () if isinstance(p, str) and p],
    }


def _signing_links(request: HttpRequest, name: str, rows: list[dict[str, Any]]) -> str | None:
    """Its JWKS URL if routed; each published signing key's PEM link (``pem_url``)."""
    jwks = _routed(request, getattr(views, "integration_jwks", None), name=name)
    pem_view = getattr(views, "signing_key_pem", None)
    for row in rows:
        published = row["state"] in (KeyState.ACTIVE, KeyState.GRACE, KeyState.STAGED)
        row["pem_url"] = (
            _routed(request, pem_view, name=name, kid=row["kid"]) if published else None
        )
    return jwks


def integration_data(
    request: HttpRequest,
    row: Integration,
    keys: list[Key],
    now: float,
    switched: AuditEntry | None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One integration's part of the panel: rules, switch, keys by kind, its key
    source (``key_source_data``), links."""
    name = row.name
    newest = newest_active(keys, now)
    rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KeyKind.values}
    for key in keys:
        rows[key.kind].append(key_row(key, now, newest.get(key.kind), name))
    signing = rows[KeyKind.SIGNING_KEY]
    rules = _rules(row)
    # As the engine does: an OpenID Connect source's issuer when none is configured.
    source_issuer = source["issuer"] if source else ""
    from_source = bool(source_issuer) and not rules["issuers"]
    if from_source:
        rules["issuers"] = [source_issuer]
    return {
        "name": name,
        "is_default": name == DEFAULT_INTEGRATION,
        "ids": anchors(name),
        **rules,
        "issuer_from_source": from_source,
        "user_space": row.user_space,
        "own_users": row.own_users,
        "created": utc(row.created_at.timestamp()) if row.created_at else "",
        "created_by": row.created_by,
        "security": {
            "enabled": row.secured(now),
            "scheduled": _scheduled(row, now),
            "changed_at": utc(switched.at.timestamp()) if switched else "",
            "changed_by": switched.actor if switched else "",
        },
        "secrets": rows[KeyKind.SECRET],
        "public_keys": rows[KeyKind.PUBLIC_KEY],
        "service_keys": rows[KeyKind.SERVICE_KEY],
        "signing_keys": signing,
        "key_source": source,
        "rotation_due": rotation_notices(keys, now, name),
        "has_active_secret": KeyKind.SECRET in newest,
        "has_active_service_key": KeyKind.SERVICE_KEY in newest,
        "has_active_signing_key": KeyKind.SIGNING_KEY in newest,
        "staged_kid": next((r["kid"] for r in signing if r["state"] == KeyState.STAGED), ""),
        "usable_kids": [
            r["kid"]
            for kind_rows in rows.values()
            for r in kind_rows
            if r["state"] in (KeyState.ACTIVE, KeyState.GRACE, KeyState.STAGED)
        ],
        "signing_jwks_url": _signing_links(request, name, signing),
        "signing_jwks_path": SIGNING_JWKS_PATH.format(name=name),
    }


def manager_data(request: HttpRequest, now: float) -> dict[str, Any]:
    """Everything the key-management sections show (admins only).

    A fixed number of queries whatever the number of integrations and keys:
    the integrations, every key, the last switch changes, the audit, the
    revoked users are each read once, the traffic twice (by hour, by day).
    """
    usage_counters.flush_usage()  # so last used / use count include this process's counters
    integration_rows = _integration_rows()
    keys_of: dict[int | None, list[Key]] = {row.pk: [] for row in integration_rows}
    for key in Key.objects.order_by("-created_at"):
        keys_of.setdefault(key.integration_id, []).append(key)
    switched = _switch_changes(integration_rows)
    sources = key_sources(now)
    integrations = [
        integration_data(
            request, row, keys_of[row.pk], now, switched.get(row.name), sources.get(row.name)
        )
        for row in integration_rows
    ]
    traffic = traffic_data.read(now)
    for entry in integrations:
        entry["charts"] = traffic_data.integration_charts(entry, traffic.get(entry["name"]), now)
    usage = [
        r
        for entry in integrations
        for kind in ("secrets", "public_keys", "service_keys", "signing_keys")
        for r in entry[kind]
        if r["state"] in (KeyState.ACTIVE, KeyState.GRACE)
    ]
    return {
        "integrations": integrations,
        "several_integrations": len(integrations) > 1,
        "default_enabled": integrations[0]["security"]["enabled"],
        "integration_names": [entry["name"] for entry in integrations],
        "usage_rows": usage,
        "has_key_sources": bool(sources),
        "traffic": traffic_data.site_summary(traffic.values()),
        "jwks_url": jwks_url(request),
        "jwks_suggested_path": JWKS_SUGGESTED_PATH,
        "grace_default": default_grace_hours(),
        # newest first, also among entries of one instant (PostgreSQL orders ties at random)
        "audit_entries": list(AuditEntry.objects.order_by("-at", "-pk")[:RECENT_AUDIT]),
        "audit_url": reverse(
            "admin:chat_security_auditentry_changelist",
            current_app=getattr(request, "current_app", None),
        ),
        **revoked_users_summary(now),
    }


# -- key sources (SPEC §14) --------------------------------------------------------------


def _when(value: datetime | None, now: float) -> dict[str, str]:
    if value is None:
        return {"at": "", "ago": ""}
    return {"at": utc(value.timestamp()), "ago": relative(value.timestamp(), now)}


def _first_seen(value: object) -> str:
    """A fetched key's ``first_seen`` (ISO 8601, as ``remote.sources`` stores it), in UTC."""
    try:
        return utc(datetime.fromisoformat(str(value)).timestamp())
    except ValueError:
        return ""


def key_source_data(source: KeySource, now: float) -> dict[str, Any]:
    """What the panel shows of an integration's key source: where its keys come from,
    the last good set (one row per key: kid, kty, alg, fingerprint, first seen,
    active or stale) and the last fetch."""
    stale_at = source.stale_at()
    rows = source.keys_status(datetime.fromtimestamp(now, tz=UTC))
    for row in rows:
        row["first_seen"] = _first_seen(row["first_seen"])
        row["state_label"] = row["state"]
    return {
        "kind": source.kind,
        "kind_label": source.get_kind_display(),
        "url": source.url,
        "jwks_uri": source.jwks_uri,
        "issuer": source.issuer,
        "keys": rows,
        "fetched": _when(source.fetched_at, now),
        "attempted": _when(source.attempted_at, now),
        "outcome": source.outcome,
        "error": source.error,
        "skipped": [str(item) for item in source.skipped or ()],
        "stale": stale_at is None or stale_at.timestamp() <= now,
        "stale_at": utc(stale_at.timestamp()) if stale_at is not None else "",
        "created": utc(source.created_at.timestamp()),
        "created_by": source.created_by,
    }


def key_sources(now: float) -> dict[str, dict[str, Any]]:
    """Integration name -> :func:`key_source_data` of its source; one query for all."""
    return {
        source.integration.name: key_source_data(source, now)
        for source in KeySource.objects.select_related("integration")
    }


def key_source_parts(now: float) -> list[dict[str, Any]]:
    """For those who may not manage keys (support staff): each integration that has a
    key source, as much of its part as the read-only key-source section needs."""
    sources = key_sources(now)
    names = sorted(sources, key=lambda name: (name != DEFAULT_INTEGRATION, name))
    return [{"name": name, "ids": anchors(name), "key_source": sources[name]} for name in names]
