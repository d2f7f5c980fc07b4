"""A key as the Developer – WebChat panel shows it: its row, and what revoking it breaks.

The row (state, grace end, last use, the note on a key in grace) is built from
the keys the panel has already read, so it costs no query; the warnings are
for the *Revoke key* confirmation page. Never secret material: a secret shows
as its masked prefix and fingerprint. Times are UTC like the token tester's hints.
"""

from __future__ import annotations

from typing import Any

from .. import clock
from ..conf import app_settings
from ..integrations import DEFAULT_INTEGRATION
from ..models import Key, KeyKind, KeyState
from ..timefmt import relative, utc


def newest_active(keys: list[Key], now: float) -> dict[str, float]:
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


def key_row(
    key: Key, now: float, rotated_at: float | None = None, integration: str = DEFAULT_INTEGRATION
) -> dict[str, Any]:
    state = key.state(now)
    last = clock.timestamp(key.last_used)
    stopped = key.stopped_at() if state in (KeyState.RETIRED, KeyState.REVOKED) else None
    return {
        "kid": key.kid,
        "kind": key.kind,
        "alg": key.alg,
        "integration": integration,
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


def _signing_key_warnings(key: Key, now: float) -> list[str]:
    if key.state(now) == KeyState.STAGED:
        return ["It is the staged next key: it leaves the JWKS and will never sign."]
    warnings = [
        "Tokens this site signed with this key pair are refused here from now on, and its "
        "public key leaves the JWKS; a verifier elsewhere that cached the JWKS accepts them "
        "until its copy expires (this site serves it with max-age 300)."
    ]
    if key.state(now) == KeyState.ACTIVE:
        warnings.append(
            "It is the active signing key pair: until you generate a new one, tokens are "
            "issued with the integration's signing secret, or not at all without one."
        )
    return warnings


def revoke_warnings(key: Key, now: float, integration: str = DEFAULT_INTEGRATION) -> list[str]:
    """What revoking ``key`` (of ``integration``) breaks, for the confirmation page."""
    if key.kind == KeyKind.SECRET:
        warnings = ["Tokens signed with this secret are refused from now on."]
        others = [k for k in Key.objects.usable(KeyKind.SECRET, integration) if k.pk != key.pk]
        if key.is_usable(now) and not others:
            warnings.append(
                "It is your only usable signing secret: every HS256 token will be refused "
                "until you generate a new one."
            )
    elif key.kind == KeyKind.PUBLIC_KEY:
        warnings = ["Tokens signed with the matching private key are refused from now on."]
    elif key.kind == KeyKind.SIGNING_KEY:
        warnings = _signing_key_warnings(key, now)
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
