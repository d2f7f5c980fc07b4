"""Read side of the Developer – WebChat panel: key tables, usage, traffic, audit.

Only reads; never holds secret material (a secret shows as its prefix and
fingerprint). Times are shown in UTC like the token tester's hints.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db.models import Sum
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from .. import clock, views
from .. import usage as usage_counters
from ..conf import app_settings
from ..exceptions import ERROR_CODES
from ..models import AuditEntry, Key, KeyKind, KeyState, RevokedUser, SecurityConfig, TrafficStat
from ..timefmt import relative, utc
from .forms import default_grace_hours

RECENT_AUDIT = 10
RECENT_REVOKED_USERS = 5
#: Where the documentation (docs/http.md) tells projects to route ``chat_security.views.jwks``.
JWKS_SUGGESTED_PATH = "/.well-known/chat-security/jwks.json"
ANCHORS: dict[str, str] = {
    KeyKind.SECRET: "secrets",
    KeyKind.PUBLIC_KEY: "public-keys",
    KeyKind.SERVICE_KEY: "service-keys",
}


def anchor_of(key: Key) -> str:
    return ANCHORS.get(key.kind, "")


def _newest_active(keys: list[Key], now: float) -> dict[str, float]:
    """kind -> creation time of its newest active key (the rotation moment)."""
    newest: dict[str, float] = {}
    for key in keys:
        if key.state(now) == KeyState.ACTIVE:
            created = key.created_at.timestamp()
            newest[key.kind] = max(newest.get(key.kind, created), created)
    return newest


def _report_interval() -> str:
    return f"workers report use every {int(app_settings.USAGE_FLUSH_SECONDS)} s"


def _idle_note(key: Key, state: str, now: float, rotated_at: float | None) -> str:
    """For a key in grace: what the counters know of its use, and no more."""
    if state != KeyState.GRACE:
        return ""
    last = clock.timestamp(key.last_used)
    if rotated_at is not None and (last is None or last < rotated_at):
        return (
            f"No use recorded since the rotation ({relative(rotated_at, now)}); "
            f"{_report_interval()}, so a use in the last interval may not show yet."
        )
    if last is None:
        return f"No use recorded yet; {_report_interval()}."
    return (
        f"Last use recorded {relative(last, now)}; {_report_interval()}. "
        "Switch the signer to the active key before revoking."
    )


def key_row(key: Key, now: float, rotated_at: float | None = None) -> dict[str, Any]:
    state = key.state(now)
    last = clock.timestamp(key.last_used)
    stopped = key.stopped_at() if state in (KeyState.RETIRED, KeyState.REVOKED) else None
    return {
        "kid": key.kid,
        "kind": key.kind,
        "state": state,
        "state_label": KeyState(state).label,
        "masked": key.masked,
        "fingerprint": key.fingerprint,
        "bits": key.bits,
        "created": utc(key.created_at.timestamp()),
        "created_by": key.created_by,
        # A key revoked during its grace never reaches that end: don't show it.
        "grace_end": utc(key.grace_until.timestamp())
        if key.grace_until and (key.revoked_at is None or key.revoked_at >= key.grace_until)
        else "",
        "stopped": utc(stopped) if stopped is not None else "",
        "last_used": relative(last, now) if last is not None else "",
        "last_used_at": utc(last) if last is not None else "",
        "use_count": key.use_count,
        "revocable": key.revoked_at is None,
        "idle_note": _idle_note(key, state, now, rotated_at),
    }


def traffic_summary(now: float) -> dict[str, Any]:
    """Chat requests in the last 24 hourly buckets: signed / unsigned / rejected by code."""
    since = datetime.fromtimestamp((int(now // 3600) - 23) * 3600, tz=UTC)
    totals = dict(
        TrafficStat.objects.filter(hour__gte=since)
        .values("outcome")
        .annotate(n=Sum("count"))
        .values_list("outcome", "n")
    )
    signed = totals.pop("signed", 0)
    unsigned = totals.pop("unsigned", 0)
    rejected = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    total = signed + unsigned + sum(n for _code, n in rejected)

    def pct(n: int) -> str:
        return f"{100 * n / total:.0f} %" if total else "–"

    return {
        "total": total,
        "signed": signed,
        "unsigned": unsigned,
        "signed_pct": pct(signed),
        "unsigned_pct": pct(unsigned),
        "rejected_total": total - signed - unsigned,
        "rejected_pct": pct(total - signed - unsigned),
        "rejected": [
            {"code": code, "count": n, "pct": pct(n), "explanation": ERROR_CODES.get(code, "")}
            for code, n in rejected
        ],
    }


def jwks_url(request: HttpRequest) -> str | None:
    """Absolute URL of the JWKS view if the project routes it."""
    try:
        path = reverse(views.jwks)
    except NoReverseMatch:
        return None
    return request.build_absolute_uri(path)


def manager_data(request: HttpRequest, now: float) -> dict[str, Any]:
    """Everything the key-management sections show (admins only)."""
    usage_counters.flush_usage()  # so last used / use count include this process's counters
    config = SecurityConfig.objects.filter(pk=1).first()
    all_keys = list(Key.objects.order_by("-created_at"))
    newest = _newest_active(all_keys, now)
    rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KeyKind.values}
    for key in all_keys:
        rows[key.kind].append(key_row(key, now, newest.get(key.kind)))
    usage = [r for kind_rows in rows.values() for r in kind_rows if r["revocable"]]
    return {
        "security": {
            "enabled": config.enabled if config else True,
            "changed_at": utc(config.changed_at.timestamp())
            if config and config.changed_at
            else "",
            "changed_by": config.changed_by if config else "",
        },
        "secrets": rows[KeyKind.SECRET],
        "public_keys": rows[KeyKind.PUBLIC_KEY],
        "service_keys": rows[KeyKind.SERVICE_KEY],
        "has_active_secret": KeyKind.SECRET in newest,
        "has_active_service_key": KeyKind.SERVICE_KEY in newest,
        "usage_rows": [r for r in usage if r["state"] in (KeyState.ACTIVE, KeyState.GRACE)],
        "traffic": traffic_summary(now),
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


# -- revoked users ---------------------------------------------------------------------


def exact_utc(value: datetime) -> str:
    """To the second: a revocation refuses tokens by ``iat``, which has seconds."""
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def revoked_user_row(revoked: RevokedUser, now: float) -> dict[str, Any]:
    first = revoked.first_revoked_at
    return {
        "user_id": revoked.user_id,
        "since": exact_utc(revoked.revoked_at),
        "since_relative": relative(revoked.revoked_at.timestamp(), now),
        # shown only when a later revocation moved the iat cut-off
        "first": exact_utc(first) if first and first != revoked.revoked_at else "",
        "by": revoked.revoked_by,
    }


def revoked_users_summary(now: float) -> dict[str, Any]:
    """The panel's *Revoke a user* section: the newest few and how many in all."""
    newest = RevokedUser.objects.order_by("-revoked_at", "-pk")[:RECENT_REVOKED_USERS]
    return {
        "revoked_users": [revoked_user_row(r, now) for r in newest],
        "revoked_users_count": RevokedUser.objects.count(),
    }


def revoke_user_warnings(user_id: str, now: float) -> list[str]:
    """What revoking ``user_id`` refuses (SPEC §3 step 8), for the confirmation page."""
    warnings = [
        "Every token of this user issued before the moment you confirm (an iat before "
        "it) is refused with token_revoked, on the chat API and on WebSockets.",
        "Every token of this user without iat is refused too, unless it had already expired.",
        "Open chat connections of this user are closed (token_revoked).",
        "Tokens your site issues for this user after this moment are accepted: this ends "
        "the sessions the user has now. To keep them out, also stop issuing tokens for them.",
    ]
    existing = RevokedUser.objects.filter(user_id=user_id).first()
    if existing is not None:
        warnings.insert(
            0,
            f"This user was already revoked at {exact_utc(existing.revoked_at)} "
            f"({relative(existing.revoked_at.timestamp(), now)}); revoking again also "
            "refuses the tokens issued since then.",
        )
    warnings.append("A revocation cannot be undone.")
    return warnings


def revoke_warnings(key: Key, now: float) -> list[str]:
    """What revoking ``key`` breaks, for the confirmation page."""
    if key.kind == KeyKind.SECRET:
        warnings = ["Tokens signed with this secret are refused from now on."]
        others = [k for k in Key.objects.usable(KeyKind.SECRET) if k.pk != key.pk]
        if key.is_usable(now) and not others:
            warnings.append(
                "It is your only usable signing secret: every HS256 token will be refused "
                "until you generate a new one."
            )
    elif key.kind == KeyKind.PUBLIC_KEY:
        warnings = ["Tokens signed with the matching private key are refused from now on."]
    else:
        warnings = [
            "user_payload encrypted to this key can no longer be decrypted "
            "(payload_decryption_failed)."
        ]
    last = clock.timestamp(key.last_used)
    if last is not None:
        warnings.append(
            f"It was last used {relative(last, now)} ({key.use_count} verifications in total)."
        )
    warnings.append("This cannot be undone.")
    return warnings
