"""What ``manage.py chat_security`` prints about integrations, read only: their
rules as their tokens are judged, their keys and key sources (never a secret).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from chat_security.conf import app_settings
from chat_security.integrations import DEFAULT_INTEGRATION
from chat_security.models import Integration, Key, KeySource


def _configured(value: Any) -> Any:
    """An issuer or audience as configured: a string, a list (``default``'s settings
    may hold one), or None when not checked."""
    if value is None or value == "":
        return None
    return list(value) if isinstance(value, list | tuple) else value


def _integrations() -> list[Integration]:
    """Every integration, ``default`` first; read only (a missing ``default`` row is
    shown as a fresh install has it, not created)."""
    rows = list(Integration.objects.all())
    default = [r for r in rows if r.name == DEFAULT_INTEGRATION] or [
        Integration(name=DEFAULT_INTEGRATION)
    ]
    return default + [r for r in rows if r.name != DEFAULT_INTEGRATION]


def describe(integration: Integration) -> dict[str, Any]:
    """An integration's rules as its tokens are judged: ``default`` takes its issuer,
    audience and paths from ISSUER, AUDIENCE and PROTECTED_PATHS."""
    if integration.name == DEFAULT_INTEGRATION:
        issuer, audience = app_settings.ISSUER, app_settings.AUDIENCE
        paths = app_settings.PROTECTED_PATHS
        paths = [paths] if isinstance(paths, str) else list(paths or ())
    else:
        issuer, audience, paths = integration.issuer, integration.audience, integration.paths
    return {
        "name": integration.name,
        "issuer": _configured(issuer),
        "audience": _configured(audience),
        "mode": "on" if integration.secured() else "off",
        "paths": list(paths),
        "user_space": integration.user_space,
        "own_users": integration.own_users,
    }


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _key_status(key: Key) -> dict[str, object]:
    return {**key.as_status(), "integration": key.integration.name}


def _sources() -> dict[str, KeySource]:
    return {s.integration.name: s for s in KeySource.objects.select_related("integration")}


def source_status(source: KeySource) -> dict[str, Any]:
    return {
        "integration": source.integration.name,
        **source.as_status(),
        "keys": [{**k, "integration": source.integration.name} for k in source.keys_status()],
    }


def _keys_by_integration() -> dict[str, list[Key]]:
    found: dict[str, list[Key]] = {}
    for key in Key.objects.select_related("integration"):
        found.setdefault(key.integration.name, []).append(key)
    return found


def status() -> dict[str, Any]:
    """``status``: every integration with its mode, schedule, keys and key source."""
    by_integration, fetched = _keys_by_integration(), _sources()
    integrations = []
    for i in _integrations():
        listed = [_key_status(k) for k in by_integration.get(i.name, [])]
        source = fetched.get(i.name)
        described = describe(i)
        if source is not None:
            listed += [{**k, "integration": i.name} for k in source.keys_status()]
            if described["issuer"] is None and source.issuer:
                described["issuer"] = source.issuer  # the discovered one is enforced
        integrations.append(
            {
                **described,
                "enforce_at": iso(i.scheduled_at()),
                "keys": listed,
                "key_source": source.as_status() if source is not None else None,
            }
        )
    default = integrations[0]  # §7's fields: the default integration's, as before §13
    return {"mode": default["mode"], "keys": default["keys"], "integrations": integrations}


def integration_list() -> dict[str, Any]:
    """``integration list``: every integration's rules with the kids of its stored keys."""
    by_integration = _keys_by_integration()
    listed = [
        {**describe(i), "kids": [k.kid for k in by_integration.get(i.name, [])]}
        for i in _integrations()
    ]
    return {"integrations": listed}
