"""The key store: security mode, keys of three kinds, user revocations, audit.

Secret values and service private keys are stored only as Fernet ciphertext
(``keys.encrypt``) under keys that live in settings, never in these tables.
The manager methods are the single place keys are created or retired; the
admin panel and the CLI both call them.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import models, transaction
from django.db.models import F
from django.dispatch import Signal
from django.utils.translation import gettext_lazy as _

from . import clock, keys, public_keys, values
from .conf import app_settings
from .exceptions import KeyStateError
from .integrations import DEFAULT_INTEGRATION, DEFAULT_USER_SPACE, check_new, check_rules


class _Stamped(models.Model):
    """Fills the ``stamped`` timestamps that are still unset when saved, from ``clock``.

    Not a field ``default``: migrations would then name a callable of this
    package, and they must import nothing from the app. ``clock.now`` is the
    seam tests control time through.
    """

    stamped: tuple[str, ...] = ()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        now = clock.now_dt()
        for name in self.stamped:
            if getattr(self, name) is None:
                setattr(self, name, now)
        super().save(*args, **kwargs)


class SecurityConfig(models.Model):
    """The key-store version (a single row); the switches live on the integrations."""

    version = models.PositiveBigIntegerField(default=0, editable=False)
    changed_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.CharField(max_length=150, blank=True)

    class Meta:
        verbose_name = _("web chat security setting")
        verbose_name_plural = _("Developer – WebChat")
        permissions = [
            ("manage_keys", "Can manage web chat keys and the security switch"),
            ("test_tokens", "Can test web chat tokens"),
        ]

    def __str__(self) -> str:
        return f"Web chat security {'on' if self.enabled else 'off'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Never write back a version read earlier: only store_changed() moves it.
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                f.name for f in self._meta.concrete_fields if f.name not in ("id", "version")
            ]
        super().save(*args, **kwargs)

    @property
    def enabled(self) -> bool:
        """The ``default`` integration's **Secure your web chat** switch (on once a
        scheduled switch-on is due)."""
        row = Integration.objects.filter(name=DEFAULT_INTEGRATION).first()
        return True if row is None else row.secured()

    @classmethod
    def load(cls) -> SecurityConfig:
        obj, _created = cls.objects.get_or_create(pk=1)
        return obj

    @classmethod
    def set_enabled(
        cls, enabled: bool, actor: str = "", integration: str = DEFAULT_INTEGRATION
    ) -> SecurityConfig:
        """Turn an integration's security on or off; in force on every worker within
        KEY_CACHE_SECONDS. Raises KeyStateError for an unknown integration."""
        with transaction.atomic():
            store_changed()
            # Only the fields this change owns: the version is never written back.
            cls.objects.filter(pk=1).update(changed_at=clock.now_dt(), changed_by=actor)
            owner = Integration.objects.named(integration)  # KeyStateError if none
            # A switch set by hand replaces any scheduled switch-on.
            Integration.objects.filter(pk=owner.pk).update(enabled=enabled, enforce_at=None)
            action = "security_on" if enabled else "security_off"
            AuditEntry.record(actor, action, detail=_scope(integration))
        return cls.load()

    @classmethod
    def schedule_on(
        cls, at: datetime, actor: str = "", integration: str = DEFAULT_INTEGRATION
    ) -> Integration:
        """Turn an integration's security on at ``at`` (an aware datetime, in the future).

        Nothing is written at that moment: every worker's snapshot switches by
        itself (``keyring``), as a key leaves its grace period, and is in force on
        every worker within KEY_CACHE_SECONDS of ``at``. A schedule replaces an
        earlier one. KeyStateError when the switch is on (or due), ``at`` is not
        in the future, or the integration does not exist.
        """
        if at.tzinfo is None or at.utcoffset() is None:
            raise KeyStateError("the time needs a time zone (an offset such as +00:00, or Z)")
        with transaction.atomic():
            store_changed()
            owner = Integration.objects.named(integration)
            now = clock.now_dt()
            if owner.secured(now.timestamp()):
                raise KeyStateError(
                    f"security of integration {integration} is already on; nothing to schedule"
                )
            if at <= now:
                stamp = now.isoformat(timespec="seconds")
                raise KeyStateError(f"{at.isoformat()} is not in the future (now {stamp})")
            cls.objects.filter(pk=1).update(changed_at=now, changed_by=actor)
            Integration.objects.filter(pk=owner.pk).update(enforce_at=at)
            where = _scope(integration)
            detail = f"at {at.astimezone(UTC).isoformat()}" + (f", {where}" if where else "")
            AuditEntry.record(actor, "schedule_security_on", detail=detail)
            owner.enforce_at = at
        return owner

    @classmethod
    def cancel_schedule(cls, actor: str = "", integration: str = DEFAULT_INTEGRATION) -> None:
        """Cancel a scheduled switch-on that is not yet due; KeyStateError if none is."""
        with transaction.atomic():
            store_changed()
            owner = Integration.objects.named(integration)
            now = clock.now()
            if owner.enforce_at is None or owner.secured(now):
                state = "already on" if owner.secured(now) else "not scheduled to turn on"
                raise KeyStateError(f"security of integration {integration} is {state}")
            cls.objects.filter(pk=1).update(changed_at=clock.now_dt(), changed_by=actor)
            Integration.objects.filter(pk=owner.pk).update(enforce_at=None)
            AuditEntry.record(actor, "cancel_scheduled_security", detail=_scope(integration))


def _scope(integration: str) -> str:
    """The audit detail naming a non-default integration ("" for ``default``)."""
    return "" if integration == DEFAULT_INTEGRATION else f"integration {integration}"


class IntegrationManager(models.Manager["Integration"]):
    def default(self) -> Integration:
        """The ``default`` integration, made if missing (a fresh table)."""
        obj, _created = self.get_or_create(name=DEFAULT_INTEGRATION)
        return obj

    def named(self, name: str) -> Integration:
        """The integration ``name``; KeyStateError when there is none."""
        if name == DEFAULT_INTEGRATION:
            return self.default()
        obj = self.filter(name=name).first()
        if obj is None:
            raise KeyStateError(f"no integration named {name!r}")
        return obj

    def add(
        self,
        name: str,
        *,
        issuer: str = "",
        audience: str = "",
        own_users: bool = False,
        paths: list[str] | tuple[str, ...] = (),
        actor: str = "",
    ) -> Integration:
        """A new integration (SPEC §13); in force on every worker within KEY_CACHE_SECONDS."""
        paths = check_new(name, issuer, audience, paths)
        with transaction.atomic():
            store_changed()
            if self.filter(name=name).exists():
                raise KeyStateError(f"an integration named {name!r} already exists")
            obj = self.create(
                name=name,
                issuer=issuer,
                audience=audience,
                user_space=name if own_users else DEFAULT_USER_SPACE,
                paths=list(paths),
                created_by=actor,
            )
            AuditEntry.record(actor, "add_integration", detail=name)
        return obj

    def change(
        self,
        name: str,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        paths: list[str] | tuple[str, ...] | None = None,
        actor: str = "",
    ) -> Integration:
        """Change an integration's issuer, audience or paths (None: as it is; "" clears).

        Its keys stay, so a path moves without removing it. ``default`` takes these
        from the settings, and the user space never changes: contacts and user
        revocations are keyed by it. In force on every worker within KEY_CACHE_SECONDS.
        """
        if name == DEFAULT_INTEGRATION:
            raise KeyStateError(
                "the default integration's issuer, audience and paths are the ISSUER, "
                "AUDIENCE and PROTECTED_PATHS settings: change the setting"
            )
        if isinstance(paths, str):
            raise KeyStateError("paths is a list of path prefixes, not one string")
        check_rules(issuer or "", audience or "", paths or ())  # refused before any write
        with transaction.atomic():
            store_changed()
            obj = self.select_for_update().filter(name=name).first()
            if obj is None:
                raise KeyStateError(f"no integration named {name!r}")
            iss = obj.issuer if issuer is None else issuer
            aud = obj.audience if audience is None else audience
            prefixes = check_rules(iss, aud, obj.paths if paths is None else paths)
            new: dict[str, Any] = {"issuer": iss, "audience": aud, "paths": list(prefixes)}
            changed = [field for field, value in new.items() if getattr(obj, field) != value]
            for field in changed:
                setattr(obj, field, new[field])
            obj.save(update_fields=changed)
            AuditEntry.record(
                actor, "change_integration", detail=f"{name}: {', '.join(changed) or 'nothing'}"
            )
        return obj

    def remove(self, name: str, actor: str = "") -> None:
        """Remove an integration that holds no usable key (``default`` stays)."""
        if name == DEFAULT_INTEGRATION:
            raise KeyStateError("the default integration cannot be removed")
        with transaction.atomic():
            store_changed()
            obj = self.filter(name=name).first()
            if obj is None:
                raise KeyStateError(f"no integration named {name!r}")
            source = KeySource.objects.filter(integration=obj).first()
            if source is not None:
                raise KeyStateError(
                    f"integration {name} takes its keys from {source.url}; run "
                    "remove-key-source first"
                )
            now = clock.now()
            usable = [k.kid for k in obj.keys.filter(revoked_at=None) if k.is_usable(now)]
            if usable:
                raise KeyStateError(
                    f"integration {name} still holds usable keys ({', '.join(usable)}); "
                    "revoke them first"
                )
            obj.keys.all().delete()
            obj.delete()
            AuditEntry.record(actor, "remove_integration", detail=name)


class Integration(_Stamped):
    """A chat surface or tenant (SPEC §13): its keys, rules, switch, paths and user space.

    ``default`` takes its issuer, audience and paths from the settings
    (``ISSUER``, ``AUDIENCE``, ``PROTECTED_PATHS``); every other one from its row.
    """

    name = models.SlugField(max_length=50, unique=True)
    issuer = models.CharField(max_length=255, blank=True, help_text=_("the iss its tokens carry"))
    audience = models.CharField(max_length=255, blank=True, help_text=_("a value aud must hold"))
    enabled = models.BooleanField(_("secure this chat"), default=True)
    #: a scheduled switch-on (SPEC §15): from then on the switch counts as on
    enforce_at = models.DateTimeField(null=True, blank=True)
    #: HTTP path prefixes it guards (``default``: PROTECTED_PATHS instead)
    paths = models.JSONField(default=list, blank=True)
    #: who its user ids name: integrations in one space share contacts and revocations
    user_space = models.SlugField(max_length=50, default=DEFAULT_USER_SPACE)
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=150, blank=True)

    objects = IntegrationManager()
    stamped = ("created_at",)

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name = _("web chat integration")

    def __str__(self) -> str:
        return self.name

    @property
    def own_users(self) -> bool:
        return self.user_space != DEFAULT_USER_SPACE

    def secured(self, now: float | None = None) -> bool:
        """Whether its switch is on at ``now``: set on, or a scheduled switch-on is due."""
        if self.enabled:
            return True
        at = clock.timestamp(self.enforce_at)
        return at is not None and (clock.now() if now is None else now) >= at

    def scheduled_at(self, now: float | None = None) -> datetime | None:
        """When a switch-on still to come is scheduled (None: none, or already due)."""
        if self.enforce_at is None or self.secured(now):
            return None
        return self.enforce_at


class KeyKind(models.TextChoices):
    SECRET = "secret", _("signing secret (HS256)")
    PUBLIC_KEY = "public_key", _("client public key (RS256, ES256 or EdDSA)")
    SERVICE_KEY = "service_key", _("service key pair (RSA-OAEP-256)")
    SIGNING_KEY = "signing_key", _("site signing key pair (RS256/ES256)")
    #: never a row of :class:`Key`: a key fetched from an identity provider (:class:`KeySource`)
    REMOTE_KEY = "remote_key", _("identity provider key (fetched)")


class KeyState(models.TextChoices):
    ACTIVE = "active", _("active")
    GRACE = "grace", _("in grace")
    RETIRED = "retired", _("retired")
    REVOKED = "revoked", _("revoked")
    STAGED = "staged", _("staged (published, not yet signing)")


# The key-state rules, in one place: a key's rows (``Key``) and the keyring's parsed
# entries (``keyring.KeyEntry``) both answer through these. Times are timestamps.


def usable_until(
    grace_until: float | None, retired_at: float | None, revoked_at: float | None
) -> float:
    """Until when a key verifies (active or in grace): -inf once revoked, inf with no end."""
    if revoked_at is not None:
        return -math.inf
    return min((end for end in (retired_at, grace_until) if end is not None), default=math.inf)


def usable_state(grace_until: float | None) -> str:
    """The state of a key while it is usable: in grace once a grace end is set."""
    return KeyState.GRACE if grace_until is not None else KeyState.ACTIVE


def key_state(
    now: float, grace_until: float | None, retired_at: float | None, revoked_at: float | None
) -> str:
    """State of a key at ``now``; grace ends without a scheduler."""
    if revoked_at is not None:
        return KeyState.REVOKED
    if now < usable_until(grace_until, retired_at, None):
        return usable_state(grace_until)
    return KeyState.RETIRED


def stopped_at(
    grace_until: float | None, retired_at: float | None, revoked_at: float | None
) -> float | None:
    """When a key that is no longer usable stopped being accepted."""
    return revoked_at or retired_at or grace_until


def store_changed() -> None:
    """Record a change to the key store: call first thing inside its transaction.

    Every writer of keys, user revocations or the mode goes through here. It
    does two jobs with one UPDATE of the SecurityConfig row:

    * **Propagation.** ``version`` goes up by one *in the writer's own
      transaction*, so the new version becomes visible exactly when the change
      does: committed together, or rolled back together. Other processes
      compare it with their snapshot's version (``keyring.get_snapshot``);
      nothing is deferred to ``on_commit``, so a crash after the commit
      cannot lose the signal, and no writer ever writes back a version it
      read earlier (``F("version") + 1``, never ``save()`` of the whole row).
    * **Serialisation.** The UPDATE takes the row lock (PostgreSQL) or the
      database write lock (SQLite) until the transaction ends, so two
      concurrent rotations run one after the other and the second sees the
      first's secret: never two active secrets. ``select_for_update`` alone
      cannot do this (PostgreSQL skips a row that stopped matching; SQLite
      ignores it).
    """
    config = SecurityConfig.objects.filter(pk=1)
    if not config.update(version=F("version") + 1):
        SecurityConfig.objects.get_or_create(pk=1)
        config.update(version=F("version") + 1)
    key_store_changed.send(sender=SecurityConfig)


#: Sent by :func:`store_changed`, inside the writer's transaction; the keyring
#: drops this process's snapshot when it commits.
key_store_changed = Signal()


class KeyManager(models.Manager["Key"]):
    def usable(self, kind: str, integration: str = DEFAULT_INTEGRATION) -> list[Key]:
        now = clock.now()
        rows = self.filter(kind=kind, revoked_at=None, integration__name=integration)
        return [k for k in rows if k.is_usable(now)]

    def active(self, kind: str, integration: str = DEFAULT_INTEGRATION) -> list[Key]:
        now = clock.now()
        rows = self.filter(kind=kind, revoked_at=None, integration__name=integration)
        return [k for k in rows if k.state(now) == KeyState.ACTIVE]

    def generate_secret(
        self, actor: str = "", integration: str = DEFAULT_INTEGRATION
    ) -> tuple[Key, str]:
        """Create the first active secret; returns ``(key, secret)`` — the only clear copy."""
        with transaction.atomic():
            store_changed()
            owner = Integration.objects.named(integration)
            if self._lock_active(KeyKind.SECRET, owner):
                raise KeyStateError(
                    "an active signing secret already exists; use rotate-secret to replace it"
                )
            return self._create_secret(actor, "generate_secret", owner)

    def rotate_secret(
        self, grace: float | None = None, actor: str = "", integration: str = DEFAULT_INTEGRATION
    ) -> tuple[Key, str]:
        """New active secret; the old one stays usable for ``grace`` seconds."""
        with transaction.atomic():
            store_changed()
            owner = Integration.objects.named(integration)
            self._retire(self._lock_active(KeyKind.SECRET, owner), grace)
            return self._create_secret(actor, "rotate_secret", owner)

    def generate_service_keypair(
        self, actor: str = "", grace: float | None = None, integration: str = DEFAULT_INTEGRATION
    ) -> Key:
        """New active service key pair; an existing active one goes into grace."""
        private_pem, info = keys.generate_service_keypair()
        with transaction.atomic():
            store_changed()
            owner = Integration.objects.named(integration)
            self._retire(self._lock_active(KeyKind.SERVICE_KEY, owner), grace)
            key = self.create(
                integration=owner,
                kind=KeyKind.SERVICE_KEY,
                alg="RSA-OAEP-256",
                kid="svc-" + info.thumbprint[:16],
                fingerprint=info.thumbprint,
                public_pem=info.pem,
                encrypted_material=keys.encrypt(private_pem),
                bits=info.bits,
                created_by=actor,
            )
            AuditEntry.record(actor, "generate_service_key", key.kid, _scope(integration))
        return key

    def generate_signing_keypair(
        self, alg: str = "RS256", actor: str = "", integration: str = DEFAULT_INTEGRATION
    ) -> Key:
        """A site signing key pair (SPEC §13): active if the integration has none, else
        staged (published in its JWKS, signing only once ``rotate_signing_key`` promotes it)."""
        private_pem, info = keys.generate_signing_keypair(alg)
        with transaction.atomic():
            store_changed()
            owner = Integration.objects.named(integration)
            staged = bool(self._lock_active(KeyKind.SIGNING_KEY, owner))
            self.filter(integration=owner, kind=KeyKind.SIGNING_KEY, staged=True).update(
                revoked_at=clock.now_dt()
            )  # one staged key at a time: the newer replaces it
            key = self._create_signing_key(owner, alg, private_pem, info, actor, staged)
            action = "stage_signing_key" if staged else "generate_signing_key"
            AuditEntry.record(actor, action, key.kid, _scope(integration))
        return key

    def rotate_signing_key(
        self,
        grace: float | None = None,
        actor: str = "",
        integration: str = DEFAULT_INTEGRATION,
        alg: str | None = None,
    ) -> Key:
        """The staged key (or a new one) signs from now on; the active one goes into grace."""
        with transaction.atomic():
            store_changed()
            owner = Integration.objects.named(integration)
            old = self._lock_active(KeyKind.SIGNING_KEY, owner)
            staged = self.select_for_update().filter(
                integration=owner, kind=KeyKind.SIGNING_KEY, staged=True, revoked_at=None
            )
            key = staged.first()
            if key is None or (alg is not None and key.alg != alg):
                alg = alg or (old[0].alg if old else "RS256")
                private_pem, info = keys.generate_signing_keypair(alg)
                staged.update(revoked_at=clock.now_dt())
                key = self._create_signing_key(owner, alg, private_pem, info, actor, False)
            else:
                key.staged = False
                key.save(update_fields=["staged"])
            self._retire(old, grace)
            AuditEntry.record(actor, "rotate_signing_key", key.kid, _scope(integration))
        return key

    def add_public_key(
        self,
        text: str | bytes,
        actor: str = "",
        kid: str = "",
        integration: str = DEFAULT_INTEGRATION,
    ) -> Key:
        """Register a client's public key (any format of SPEC §2; RSA ≥ 2048, EC P-256 or
        Ed25519, SPEC §14): its type pins its algorithm (RS256, ES256 or EdDSA)."""
        info = public_keys.parse_public_key(text)
        kid = kid or info.jwk_kid or info.thumbprint
        with transaction.atomic():
            store_changed()
            owner = Integration.objects.named(integration)
            existing = self.filter(fingerprint=info.thumbprint, revoked_at=None).first()
            if existing is not None:
                raise KeyStateError(f"this public key is already registered as kid {existing.kid}")
            if self.filter(kid=kid).exists():
                raise KeyStateError(f"kid {kid!r} is already used by another key")
            key = self.create(
                integration=owner,
                kind=KeyKind.PUBLIC_KEY,
                alg=info.alg,
                kid=kid,
                fingerprint=info.thumbprint,
                public_pem=info.pem,
                bits=info.bits,
                created_by=actor,
            )
            AuditEntry.record(actor, "add_public_key", key.kid, _scope(integration))
        return key

    def revoke(self, kid: str, actor: str = "") -> Key:
        """Stop accepting a key now (any kind, any integration: kids are unique)."""
        with transaction.atomic():
            store_changed()
            key = self.select_for_update().filter(kid=kid).first()
            if key is None:
                raise KeyStateError(f"no key with kid {kid!r}")
            if key.revoked_at is not None:
                raise KeyStateError(f"key {kid} is already revoked")
            key.revoked_at = clock.now_dt()
            key.save(update_fields=["revoked_at"])
            AuditEntry.record(actor, "revoke_key", kid)
        return key

    def reencrypt(self, actor: str = "") -> dict[str, Any]:
        """Re-encrypt every stored secret and private key under the first ENCRYPTION_KEYS entry.

        Returns the kids re-encrypted, the kids no configured key can decrypt
        (their material is lost; revoke and replace them), and for each
        configured key (by position, 1-based, and a short id) whether stored
        material still needs it. Raises ChatSecurityError when ENCRYPTION_KEYS
        is malformed.
        """
        ids = keys.encryption_key_ids()
        done: list[str] = []
        unreadable: list[str] = []
        with transaction.atomic():
            store_changed()
            for key in self.select_for_update().exclude(encrypted_material="").order_by("pk"):
                if keys.decrypting_key(key.encrypted_material) is None:
                    unreadable.append(key.kid)
                    continue
                key.encrypted_material = keys.reencrypt(key.encrypted_material)
                key.save(update_fields=["encrypted_material"])
                done.append(key.kid)
            AuditEntry.record(
                actor, "reencrypt", detail=f"{len(done)} re-encrypted, {len(unreadable)} unreadable"
            )
        return {
            "reencrypted": done,
            "unreadable": unreadable,
            "encryption_keys": [
                {"position": i + 1, "id": key_id, "needed": i == 0} for i, key_id in enumerate(ids)
            ],
            "no_longer_needed": [i + 1 for i in range(1, len(ids))],
        }

    # -- helpers ---------------------------------------------------------------

    def _lock_active(self, kind: str, owner: Integration) -> list[Key]:
        rows = self.select_for_update().filter(
            integration=owner, kind=kind, revoked_at=None, grace_until=None, staged=False
        )
        now = clock.now()
        return [k for k in rows if k.state(now) == KeyState.ACTIVE]

    def _retire(self, old: list[Key], grace: float | None) -> None:
        grace = app_settings.GRACE_PERIOD if grace is None else grace
        now = clock.now_dt()
        for key in old:
            if grace <= 0:
                key.retired_at = now
            key.grace_until = now + timedelta(seconds=max(grace, 0))
            key.save(update_fields=["grace_until", "retired_at"])

    def _create_signing_key(
        self, owner: Integration, alg: str, private_pem: str, info: Any, actor: str, staged: bool
    ) -> Key:
        return self.create(
            integration=owner,
            kind=KeyKind.SIGNING_KEY,
            alg=alg,
            kid=info.thumbprint,
            fingerprint=info.thumbprint,
            public_pem=info.pem,
            encrypted_material=keys.encrypt(private_pem),
            bits=info.bits,
            staged=staged,
            created_by=actor,
        )

    def _create_secret(self, actor: str, action: str, owner: Integration) -> tuple[Key, str]:
        secret = keys.generate_secret()
        key = self.create(
            integration=owner,
            alg="HS256",
            kind=KeyKind.SECRET,
            kid=keys.new_secret_kid(),
            fingerprint=keys.secret_fingerprint(secret),
            prefix=secret[:6],
            encrypted_material=keys.encrypt(secret),
            created_by=actor,
        )
        AuditEntry.record(actor, action, key.kid, _scope(owner.name))
        return key, secret


class Key(_Stamped):
    """One key of any kind. Its state is derived from timestamps at read time."""

    integration = models.ForeignKey(Integration, on_delete=models.PROTECT, related_name="keys")
    kind = models.CharField(max_length=16, choices=KeyKind.choices)
    #: the one algorithm the key is used with (a key's type pins it)
    alg = models.CharField(max_length=16, blank=True)
    kid = models.CharField(max_length=255, unique=True)
    fingerprint = models.CharField(max_length=64, db_index=True)
    prefix = models.CharField(max_length=8, blank=True, help_text=_("first characters of a secret"))
    public_pem = models.TextField(blank=True)
    encrypted_material = models.TextField(blank=True, editable=False)
    bits = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=150, blank=True)
    grace_until = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used = models.DateTimeField(null=True, blank=True)
    use_count = models.PositiveBigIntegerField(default=0)
    #: a signing key pair published in the JWKS before it signs (the next key)
    staged = models.BooleanField(default=False)

    objects = KeyManager()
    stamped = ("created_at",)

    class Meta:
        ordering = ["kind", "-created_at"]
        verbose_name = _("web chat key")

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.kid}"

    def _times(self) -> tuple[float | None, float | None, float | None]:
        return (
            clock.timestamp(self.grace_until),
            clock.timestamp(self.retired_at),
            clock.timestamp(self.revoked_at),
        )

    def state(self, now: float | None = None) -> str:
        state = key_state(clock.now() if now is None else now, *self._times())
        return KeyState.STAGED if self.staged and state == KeyState.ACTIVE else state

    def is_usable(self, now: float | None = None) -> bool:
        """Whether the key verifies (or decrypts) at ``now``: active or in grace."""
        return (clock.now() if now is None else now) < usable_until(*self._times())

    def stopped_at(self) -> float | None:
        """When a key that is no longer usable stopped being accepted."""
        return stopped_at(*self._times())

    @property
    def masked(self) -> str:
        """What the admin shows of a secret after creation."""
        return f"{self.prefix}…" if self.prefix else ""

    def as_status(self) -> dict[str, object]:
        """The ``status`` CLI/JSON view: never any secret material."""
        return {
            "kid": self.kid,
            "kind": self.kind,
            "alg": self.alg,
            "state": str(self.state()),
            "fingerprint": self.fingerprint,
            "created_at": self.created_at.isoformat(),
            "grace_until": self.grace_until.isoformat() if self.grace_until else None,
            "last_used": self.last_used.isoformat() if self.last_used else None,
            "use_count": self.use_count,
        }


class RevokedUserManager(models.Manager["RevokedUser"]):
    def revoke(
        self, user_id: str, actor: str = "", integration: str = DEFAULT_INTEGRATION
    ) -> RevokedUser:
        """Revoke ``user_id`` in the user space of ``integration`` (SPEC §3 step 8, §13)."""
        with transaction.atomic():
            store_changed()
            space = Integration.objects.named(integration).user_space
            now = clock.now_dt()
            obj, _created = self.update_or_create(
                user_space=space,
                user_id=user_id,
                defaults={"revoked_at": now, "revoked_by": actor},
                create_defaults={"revoked_at": now, "first_revoked_at": now, "revoked_by": actor},
            )
            where = "" if space == DEFAULT_USER_SPACE else f" (user space {space})"
            AuditEntry.record(actor, "revoke_user", detail=f"{user_id}{where}")
        return obj


class RevokedUser(models.Model):
    """A revoked user (SPEC §3 step 8); refused with ``token_revoked``:

    * a token with ``iat`` before ``revoked_at`` (the latest revocation);
    * a token without ``iat`` that has no ``exp``, or an ``exp`` after
      ``first_revoked_at`` (the first revocation: a later one must not let
      back a token an earlier one refused).

    Rows are never forgotten: a token without ``iat`` can be signed with any
    ``exp``, so no moment comes after which no refused token could be accepted.
    """

    user_space = models.SlugField(max_length=50, default=DEFAULT_USER_SPACE)
    user_id = models.CharField(max_length=255)
    revoked_at = models.DateTimeField()
    #: when the user was first revoked; null on rows made before it was kept (= revoked_at)
    first_revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=150, blank=True)

    objects = RevokedUserManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user_space", "user_id"], name="chat_security_revoked_space_user"
            )
        ]

    def __str__(self) -> str:
        return self.user_id


class AuditEntry(_Stamped):
    """Who changed keys or the mode, or tested a token (outcome only), and when."""

    at = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=40)
    kid = models.CharField(max_length=255, blank=True)
    detail = models.CharField(max_length=255, blank=True)

    stamped = ("at",)

    class Meta:
        ordering = ["-at"]
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit log")

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor or '-'} {self.action} {self.kid}"

    @classmethod
    def record(cls, actor: str, action: str, kid: str = "", detail: str = "") -> AuditEntry:
        return cls.objects.create(actor=actor or "", action=action, kid=kid, detail=detail[:255])


class Contact(_Stamped):
    """The chat's record of a verified (or anonymous) user, keyed by (user space, external id)."""

    user_space = models.SlugField(max_length=50, default=DEFAULT_USER_SPACE)
    user_id = models.CharField(max_length=255)
    anonymous = models.BooleanField(default=False)
    email = models.EmailField(blank=True)
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    phone = models.CharField(max_length=32, blank=True, help_text=_("E.164"))
    locale = models.CharField(max_length=35, blank=True)
    crm_id = models.CharField(max_length=255, blank=True)
    user_data = models.JSONField(default=dict, blank=True)
    agent_data = models.JSONField(default=list, blank=True)
    #: hash of the last token applied, so a token updates the record only once
    last_token = models.CharField(max_length=64, blank=True, editable=False)
    #: iat and exp of the token applied last: an older token is never applied
    #: over it (two devices with live tokens take turns); null = not in that token
    token_iat = models.FloatField(null=True, blank=True, editable=False)
    token_exp = models.FloatField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    stamped = ("created_at", "updated_at")

    class Meta:
        verbose_name = _("chat contact")
        constraints = [
            models.UniqueConstraint(
                fields=["user_space", "user_id"], name="chat_security_contact_space_user"
            )
        ]

    def __str__(self) -> str:
        name = self.display_name
        return f"{name} ({self.user_id})" if name else self.user_id

    @property
    def display_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def crm_url(self) -> str | None:
        """Link to the CRM record when ``CRM_URL_TEMPLATE`` is set."""
        return values.crm_url(self.crm_id)


class AnonymousLink(_Stamped):
    """An anonymous visitor id merged into a verified user's contact (SPEC §11).

    The anonymous ``Contact`` row is deleted when it is merged; this row
    remembers the id so a GDPR deletion of the user reaches the data other apps
    still key by it, and so the id is never linked to a second user.
    """

    #: the cookie id ("anon-…"), not the contact key "anon:anon-…"
    anonymous_id = models.CharField(max_length=255, unique=True)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="anonymous_links")
    linked_at = models.DateTimeField()

    stamped = ("linked_at",)

    class Meta:
        ordering = ["-linked_at", "-id"]
        verbose_name = _("anonymous link")

    def __str__(self) -> str:
        return f"{self.anonymous_id} -> {self.contact_id}"


class TrafficStat(models.Model):
    """Chat requests per hour, integration and outcome: signed, unsigned, or a rejection
    code. Signed requests are also split by the stored key that verified them (``kid``;
    empty for every other row). Written by the usage flush, pruned after
    ``TRAFFIC_RETENTION_DAYS`` (SPEC §15)."""

    hour = models.DateTimeField()
    integration = models.CharField(max_length=50, default="default")
    outcome = models.CharField(max_length=40)
    kid = models.CharField(max_length=255, blank=True, default="")
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hour", "integration", "outcome", "kid"],
                name="chat_security_traffic_bucket",
            )
        ]
        indexes = [models.Index(fields=["integration", "hour"], name="chat_security_traffic_at")]

    def __str__(self) -> str:
        kid = f" {self.kid}" if self.kid else ""
        return f"{self.hour:%Y-%m-%d %H}:00 {self.integration} {self.outcome}{kid} {self.count}"


class FailureSample(models.Model):
    """One refused chat request, for "why does verification fail for this customer"
    (SPEC §15). The newest ``FAILURE_SAMPLES`` are kept per integration. Never token
    material: the ``kid`` and ``iss`` a token named (shortened), the user-agent family
    and the client's network (/24 or /48), not its address."""

    integration = models.CharField(max_length=50)
    at = models.DateTimeField()
    code = models.CharField(max_length=40)
    kid = models.CharField(max_length=64, blank=True)
    iss = models.CharField(max_length=100, blank=True)
    channel = models.CharField(max_length=10)  # "http" or "websocket"
    path = models.CharField(max_length=200, blank=True)
    user_agent = models.CharField(max_length=40, blank=True)
    network = models.CharField(max_length=50, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["integration", "-at"], name="chat_security_failure_at")]
        verbose_name = _("recent failure")

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.integration} {self.code}"


class KeySource(_Stamped):
    """Where an integration's public keys are fetched from (SPEC §14), and the last good set.

    One per integration: a JWKS URL, or an OpenID Connect issuer whose discovery
    document names the JWKS URL. The row is what every worker and server shares:
    the last good set (so a restart or a cache loss never needs the identity
    provider), when it was fetched, and ``attempted_at``, the shared lease that
    lets one process fetch per cooldown (``remote.sources``). The engine reads
    the set from the key snapshot, never from here.
    """

    class Kind(models.TextChoices):
        JWKS_URL = "jwks_url", _("JWKS URL")
        OIDC_ISSUER = "oidc_issuer", _("OpenID Connect issuer")

    integration = models.OneToOneField(
        Integration, on_delete=models.CASCADE, related_name="key_source"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    #: what the admin gave: the JWKS URL, or the issuer
    url = models.CharField(max_length=2048)
    #: the URL the keys are fetched from (the discovery document's ``jwks_uri``)
    jwks_uri = models.CharField(max_length=2048)
    #: the discovered ``issuer`` (OIDC), which the integration's tokens must carry
    issuer = models.CharField(max_length=2048, blank=True)
    #: the last good set: one dict per key (kid, kty, alg, jwk, thumbprint, first_seen)
    keys = models.JSONField(default=list, blank=True)
    #: what the last good fetch skipped, and why (``use: enc``, an unknown kty …)
    skipped = models.JSONField(default=list, blank=True)
    fetched_at = models.DateTimeField(null=True, blank=True, help_text=_("last good fetch"))
    #: the last fetch begun by any process: the lease of SPEC §14's shared rate
    attempted_at = models.DateTimeField(null=True, blank=True)
    #: the last fetch's outcome ("ok" or "error") and, on error, what went wrong
    outcome = models.CharField(max_length=8, blank=True)
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True, help_text=_("last fetch ended"))
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=150, blank=True)

    stamped = ("created_at",)

    class Meta:
        verbose_name = _("web chat key source")

    def __str__(self) -> str:
        return self.url

    def stale_at(self) -> datetime | None:
        """When its last good set stops serving (``JWKS_MAX_STALE``); None: never fetched."""
        if self.fetched_at is None:
            return None
        return self.fetched_at + timedelta(seconds=app_settings.JWKS_MAX_STALE)

    def as_status(self) -> dict[str, object]:
        """The ``status`` view of the source: where, the last fetch and its outcome."""
        return {
            "source": self.url,
            "kind": self.kind,
            "jwks_uri": self.jwks_uri,
            "issuer": self.issuer or None,
            "fetched_at": self.fetched_at.isoformat() if self.fetched_at else None,
            "attempted_at": self.attempted_at.isoformat() if self.attempted_at else None,
            "outcome": self.outcome or None,
            "error": self.error or None,
            "skipped": list(self.skipped or ()),
        }

    def keys_status(self, now: datetime | None = None) -> list[dict[str, object]]:
        """Each fetched key as ``status`` lists keys (``"kind": "remote_key"``)."""
        stale_at = self.stale_at()
        fresh = stale_at is not None and (now or clock.now_dt()) < stale_at
        return [
            {
                "kid": item.get("kid"),
                "kind": KeyKind.REMOTE_KEY.value,
                "alg": item.get("alg"),
                "kty": item.get("kty"),
                "state": "active" if fresh else "stale",
                "fingerprint": item.get("thumbprint"),
                "first_seen": item.get("first_seen"),
                "source": self.url,
            }
            for item in self.keys or ()
            if isinstance(item, dict)
        ]
