"""Key hygiene (SPEC §15): which keys the site holds are due for rotation, and rotating them.

A key is **due** when it is the active key of a kind whose private part this site
holds — a signing secret, a site signing key pair or a service key pair — and it
was created more than ``ROTATION_REMINDER_DAYS`` days ago. Client public keys and
keys fetched from an identity provider are never due here: their private keys are
the client's and the provider's to rotate. Staged, in-grace, retired and revoked
keys are never due.

The check (``chat_security.W009``), the panel's notice and ``rotate-due`` all ask
:func:`due_keys`; rotations go through the key store's manager methods, as the
panel's buttons and the CLI's other subcommands do.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DatabaseError, transaction

from . import clock
from .conf import DEFAULTS, app_settings, valid_reminder_days
from .exceptions import ChatSecurityError
from .integrations import DEFAULT_INTEGRATION
from .models import Key, KeyKind, KeyState, store_changed

DAY = 86400
#: The kinds whose private part this site holds, and so rotates.
REMINDED_KINDS = (KeyKind.SECRET, KeyKind.SIGNING_KEY, KeyKind.SERVICE_KEY)
#: What ``rotate-due`` rotates unless told more: nothing outside this site needs to change
#: (verifiers fetch the integration's JWKS, which publishes the new key).
ROTATED_BY_DEFAULT = (KeyKind.SIGNING_KEY,)
#: The subcommand that rotates one key of each kind.
COMMANDS: dict[str, str] = {
    KeyKind.SECRET: "rotate-secret",
    KeyKind.SIGNING_KEY: "rotate-signing-key",
    KeyKind.SERVICE_KEY: "generate-service-keypair",
}
#: What must follow a rotation of each kind, outside this site.
AFTER_ROTATION: dict[str, str] = {
    KeyKind.SECRET: " and give the new secret to the backend that signs tokens before the "
    "old one's grace period ends",
    KeyKind.SERVICE_KEY: " and give websites that hold a copy of its public key the new one "
    "before the grace period ends",
    KeyKind.SIGNING_KEY: " (verifiers fetch the new public key from the JWKS)",
}
#: What a key of each kind is called in messages.
NAMES: dict[str, str] = {
    KeyKind.SECRET: "signing secret",
    KeyKind.SIGNING_KEY: "site signing key pair",
    KeyKind.SERVICE_KEY: "service key pair",
}


def reminder_days() -> int | None:
    """ROTATION_REMINDER_DAYS, None when the reminder is off; a bad value (E025) is
    read as the default, as the façade does for a bad duration."""
    value = app_settings.ROTATION_REMINDER_DAYS
    if not valid_reminder_days(value):
        value = DEFAULTS["ROTATION_REMINDER_DAYS"]
    return value if value is None else int(value)


def command(kind: str, integration: str) -> str:
    """The command that rotates a key of ``kind`` of ``integration``."""
    where = "" if integration == DEFAULT_INTEGRATION else f" --integration {integration}"
    return f"manage.py chat_security {COMMANDS[kind]}{where}"


@dataclass(frozen=True)
class DueKey:
    """An active key older than ROTATION_REMINDER_DAYS."""

    pk: int
    integration: str
    kind: str
    kid: str
    alg: str
    created_at: datetime
    age_days: int
    limit_days: int

    @property
    def name(self) -> str:
        return NAMES[self.kind]

    @property
    def command(self) -> str:
        return command(self.kind, self.integration)

    def message(self) -> str:
        return (
            f"The {self.name} {self.kid} of integration {self.integration} is "
            f"{self.age_days} days old (ROTATION_REMINDER_DAYS is {self.limit_days})."
        )

    def hint(self) -> str:
        return (
            f"Rotate it: '{self.command}'{AFTER_ROTATION[self.kind]}; or "
            "'manage.py chat_security rotate-due'."
        )


def is_due(key: Key, now: float, days: int) -> bool:
    """Whether ``key`` (read with its integration) is due at ``now`` with a limit of ``days``."""
    return (
        key.kind in REMINDED_KINDS
        and key.state(now) == KeyState.ACTIVE  # not staged, in grace, retired or revoked
        and now - key.created_at.timestamp() > days * DAY
    )


def due_keys(
    keys: Iterable[Key], now: float, integration: str | None = None, days: int | None = None
) -> list[DueKey]:
    """The due keys among ``keys`` (already read: no query). ``integration`` names their
    integration when they were read without it; ``days``: ROTATION_REMINDER_DAYS."""
    days = reminder_days() if days is None else days
    if days is None:
        return []
    return [
        DueKey(
            pk=key.pk,
            integration=integration or key.integration.name,
            kind=key.kind,
            kid=key.kid,
            alg=key.alg,
            created_at=key.created_at,
            age_days=int((now - key.created_at.timestamp()) // DAY),
            limit_days=days,
        )
        for key in keys
        if is_due(key, now, days)
    ]


def _candidates(integration: str | None = None) -> Any:
    """The keys that may be due: active keys of the reminded kinds (one query)."""
    rows = Key.objects.select_related("integration").filter(
        kind__in=REMINDED_KINDS, revoked_at=None, grace_until=None, retired_at=None, staged=False
    )
    if integration is not None:
        rows = rows.filter(integration__name=integration)
    return rows.order_by("integration__created_at", "integration__pk", "kind", "created_at")


def due_now(integration: str | None = None) -> list[DueKey]:
    """Every due key now, of every integration or of ``integration``."""
    if reminder_days() is None:
        return []
    return due_keys(_candidates(integration), clock.now())


# -- rotate-due --------------------------------------------------------------------------


def _still_active(due: DueKey) -> bool:
    return Key.objects.filter(
        pk=due.pk, revoked_at=None, grace_until=None, retired_at=None, staged=False
    ).exists()


def _stale_staged(due: DueKey) -> Key | None:
    """The integration's staged signing key if it is itself past the limit (so promoting
    it would leave a due key signing)."""
    staged = Key.objects.filter(
        integration__name=due.integration, kind=KeyKind.SIGNING_KEY, staged=True, revoked_at=None
    ).first()
    if staged is None or clock.now() - staged.created_at.timestamp() <= due.limit_days * DAY:
        return None
    return staged


def _rotate(due: DueKey, grace: float | None, actor: str) -> dict[str, Any] | None:
    """Rotate ``due``'s kind in its integration; None when it was rotated meanwhile.

    One transaction, begun with the store's lock (``store_changed``), re-reads the
    key: two servers running the same cron job rotate it once.
    """
    name = due.integration
    extra: dict[str, Any] = {}
    with transaction.atomic():
        store_changed()
        if not _still_active(due):
            return None
        if due.kind == KeyKind.SECRET:
            new, secret = Key.objects.rotate_secret(grace, actor, integration=name)
            extra["secret"] = secret  # the one clear copy, for the caller to hand on
        elif due.kind == KeyKind.SERVICE_KEY:
            new = Key.objects.generate_service_keypair(actor, grace, integration=name)
        else:
            staged = _stale_staged(due)
            if staged is not None:  # a fresh staged key replaces it, then signs
                Key.objects.generate_signing_keypair(staged.alg, actor, integration=name)
            new = Key.objects.rotate_signing_key(grace, actor, integration=name)
        old = Key.objects.get(pk=due.pk)
    if new.public_pem:
        extra["public_key_pem"] = new.public_pem
    return {
        **_entry(due),
        "new_kid": new.kid,
        "alg": new.alg,
        "grace_until": old.grace_until.isoformat() if old.grace_until else None,
        **extra,
    }


def _entry(due: DueKey) -> dict[str, Any]:
    return {
        "integration": due.integration,
        "kind": due.kind,
        "old_kid": due.kid,
        "age_days": due.age_days,
    }


def rotate_due(
    *,
    integration: str | None = None,
    kinds: Collection[str] = ROTATED_BY_DEFAULT,
    grace: float | None = None,
    dry_run: bool = False,
    actor: str = "",
) -> dict[str, Any]:
    """Rotate every due key of ``kinds`` (of every integration, or of ``integration``).

    Returns ``rotated`` (each with the new kid, and a rotated secret's new value:
    its only clear copy), ``skipped`` (due keys of kinds not asked for), ``failed``
    (with the error; the others still rotate) and the limit in force. ``dry_run``:
    ``rotated`` lists what would rotate (``new_kid`` null) and nothing changes.
    """
    found = due_now(integration)
    result: dict[str, Any] = {
        "dry_run": dry_run,
        "reminder_days": reminder_days(),
        "rotated": [],
        "skipped": [],
        "failed": [],
    }
    for due in found:
        if due.kind not in kinds:
            option = "--include-secrets" if due.kind == KeyKind.SECRET else "--include-service-keys"
            result["skipped"].append({**_entry(due), "reason": f"rotated only with {option}"})
        elif dry_run:
            result["rotated"].append({**_entry(due), "new_kid": None})
        else:
            try:
                done = _rotate(due, grace, actor)
            except (ChatSecurityError, DatabaseError) as exc:
                result["failed"].append({**_entry(due), "error": str(exc).splitlines()[0]})
                continue
            if done is None:
                result["skipped"].append({**_entry(due), "reason": "rotated meanwhile"})
            else:
                result["rotated"].append(done)
    return result
