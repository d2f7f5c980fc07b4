"""The ``CHAT_SECURITY`` settings, read at access time through one façade.

Every key is optional; the defaults below are the documented ones (docs/settings.md,
"Settings reference"). Durations accept seconds (int/float) or a
``datetime.timedelta``. Values are validated by ``manage.py check``
(``chat_security.E0xx``); the façade itself never raises on bad values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # Path prefixes the middleware guards.
    "PROTECTED_PATHS": ["/chat/api/"],
    # Tokens larger than this are refused with token_too_large before parsing.
    "MAX_TOKEN_BYTES": 8192,
    # Clock skew tolerated on exp/nbf/iat, seconds.
    "LEEWAY": 30,
    # Refuse tokens without exp (missing_claim).
    "REQUIRE_EXP": True,
    # Longest accepted exp - iat (and exp - now), seconds.
    "MAX_TOKEN_LIFETIME": 24 * 3600,
    # Lifetime of tokens this app issues, seconds.
    "DEFAULT_TOKEN_TTL": 3600,
    # How long a rotated-out secret or service key keeps working, seconds.
    "GRACE_PERIOD": 48 * 3600,
    # Key hygiene (SPEC §15): an active signing secret, site signing key pair or
    # service key pair older than this many days is reported (check W009, a panel
    # notice) and rotated by ``rotate-due``; None turns the reminder off.
    "ROTATION_REMINDER_DAYS": 90,
    # Accepted JWS algorithms: HS256 (signing secrets), RS256 (RSA public keys and
    # signing key pairs), ES256 (EC P-256 public keys and signing key pairs), EdDSA
    # (Ed25519 public keys). A key's type pins its algorithm, so an algorithm
    # verifies nothing until a key of its type exists.
    "ALLOWED_ALGORITHMS": ["HS256", "RS256", "ES256", "EdDSA"],
    # Required "aud" / "iss" values; None disables the check.
    "AUDIENCE": None,
    "ISSUER": None,
    # Global JavaScript variable the template tag assigns.
    "JS_VARIABLE": "ConvrsUser",
    # Dotted path of a callable(user) -> dict of claims for issued tokens.
    "CLAIMS_BUILDER": "chat_security.claims.default_claims",
    # e.g. "https://crm.example.com/contacts/{crm_id}"; None shows no link.
    "CRM_URL_TEMPLATE": None,
    # Keys that encrypt secrets and private keys at rest; first one encrypts,
    # all decrypt. None derives one from SECRET_KEY (flagged by W001).
    "ENCRYPTION_KEYS": None,
    # Give anonymous visitors a generated id kept in a cookie.
    "ANONYMOUS_IDS": False,
    "ANONYMOUS_COOKIE_NAME": "chat_anonymous_id",
    # How often, at most, a process checks whether keys changed elsewhere, seconds.
    "KEY_CACHE_SECONDS": 1,
    # A cache alias that every process of every server shares (one Redis or
    # Memcached for the whole site), used to announce key-store changes so that
    # workers need not poll the database. Naming one is the promise that it is
    # shared: a per-server cache would hide changes made on other servers.
    # None (the default): poll the database. E019 refuses local-memory, dummy
    # and file caches.
    "KEY_CACHE_ALIAS": None,
    # How often usage counters are written to the database, seconds.
    "USAGE_FLUSH_SECONDS": 60,
    # Seconds a WebSocket opened without a subprotocol token has to send identify.
    "WEBSOCKET_IDENTIFY_TIMEOUT": 10,
    # Identity providers' key sets (SPEC §14). Hosts that may resolve to private,
    # loopback or link-local addresses (and so may also use http): an IdP on the
    # local network, and tests. Every other host must be public and use https.
    "JWKS_PRIVATE_HOSTS": [],
    # A fetched key set is refreshed this often, seconds (one fetch for all workers).
    "JWKS_REFRESH_SECONDS": 600,
    # A token naming a kid the set does not hold refetches it at most this often,
    # seconds, across all workers and servers.
    "JWKS_COOLDOWN_SECONDS": 30,
    # While fetches fail, the last good set serves this long, seconds; then the
    # integration answers 503 unavailable.
    "JWKS_MAX_STALE": 24 * 3600,
    # Observability (SPEC §15). Refused requests kept per integration for the panel's
    # "Recent failures" (0: keep none).
    "FAILURE_SAMPLES": 50,
    # Hourly traffic rows (the panel's charts) older than this many days are deleted.
    "TRAFFIC_RETENTION_DAYS": 35,
    # Prometheus metrics (SPEC §15; the extra chat-security[metrics]): True counts into
    # prometheus_client's registry for chat_security.metrics.metrics_view to serve.
    "METRICS": False,
    # Caps for identity data kept on the contact record.
    "USER_DATA_MAX_BYTES": 4096,
    "AGENT_DATA_MAX_ITEMS": 50,
}

#: What ``JS_VARIABLE`` must match (the check, and the tag before it writes a token).
JS_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
#: The longest grace period the admin panel and the CLI accept, hours.
MAX_GRACE_HOURS = 24 * 365
#: The largest ROTATION_REMINDER_DAYS (E025): 100 years.
MAX_REMINDER_DAYS = 36500


#: The most FAILURE_SAMPLES (E026) and TRAFFIC_RETENTION_DAYS (E027) accept.
MAX_FAILURE_SAMPLES = 1000
MAX_RETENTION_DAYS = 3660


def valid_reminder_days(value: Any) -> bool:
    """Whether ``value`` is a valid ROTATION_REMINDER_DAYS (E025): None, or 1 … 36500."""
    if value is None:
        return True
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_REMINDER_DAYS


DURATIONS = frozenset(
    {
        "LEEWAY",
        "MAX_TOKEN_LIFETIME",
        "DEFAULT_TOKEN_TTL",
        "GRACE_PERIOD",
        "KEY_CACHE_SECONDS",
        "USAGE_FLUSH_SECONDS",
        "WEBSOCKET_IDENTIFY_TIMEOUT",
        "JWKS_REFRESH_SECONDS",
        "JWKS_COOLDOWN_SECONDS",
        "JWKS_MAX_STALE",
    }
)


def seconds(value: Any) -> float:
    """A duration setting as float seconds."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


class ChatSecuritySettings:
    """Attribute access to ``settings.CHAT_SECURITY`` with defaults.

    Values are looked up on first access and memoised as instance attributes
    until Django sends ``setting_changed`` (``override_settings`` in tests) —
    see :func:`reset_caches` — so after the first access the hot path pays a
    plain attribute read (``__getattr__`` runs only for a missing one).
    Durations come back as float seconds.
    """

    # Declared for type checkers only (no class attribute: ``__getattr__`` still runs).
    LEEWAY: float
    MAX_TOKEN_LIFETIME: float
    DEFAULT_TOKEN_TTL: float
    GRACE_PERIOD: float
    KEY_CACHE_SECONDS: float
    USAGE_FLUSH_SECONDS: float
    WEBSOCKET_IDENTIFY_TIMEOUT: float
    JWKS_REFRESH_SECONDS: float
    JWKS_COOLDOWN_SECONDS: float
    JWKS_MAX_STALE: float

    @property
    def user_settings(self) -> Any:
        return getattr(django_settings, "CHAT_SECURITY", {})

    def raw(self, name: str) -> Any:
        user = self.user_settings
        if isinstance(user, dict) and name in user:
            return user[name]
        return DEFAULTS[name]

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"unknown CHAT_SECURITY setting {name!r}")
        value = self.raw(name)
        if name in DURATIONS:
            try:
                value = seconds(value)
            except (TypeError, ValueError):
                value = seconds(DEFAULTS[name])
        self.__dict__[name] = value
        return value

    def clear_cache(self) -> None:
        self.__dict__.clear()


app_settings = ChatSecuritySettings()


# -- caches derived from settings -------------------------------------------------------

#: Settings whose change invalidates what this package derived from them
#: (SECRET_KEY: the at-rest key falls back to it).
WATCHED_SETTINGS = frozenset({"CHAT_SECURITY", "SECRET_KEY"})

_derived_caches: list[Callable[[], None]] = []


def register_cache(clear: Callable[[], None]) -> None:
    """Have ``clear`` run whenever the settings change (see :func:`reset_caches`).

    Each module that keeps something derived from settings (compiled
    prefixes, Fernet keys, the key snapshot, remembered verifications)
    registers its own clear function when it is imported. The dependency
    points at this module, so no receiver has to import the middleware or
    the engine, and nothing is missed: a cache exists only once its module
    has been imported, and then it is registered.
    """
    if clear not in _derived_caches:
        _derived_caches.append(clear)


def reset_caches() -> None:
    """Forget every per-process value derived from settings (tests call it too)."""
    app_settings.clear_cache()
    for clear in list(_derived_caches):
        clear()


def _settings_changed(setting: str, **kwargs: Any) -> None:
    """The one receiver for ``setting_changed`` (``override_settings``)."""
    if setting in WATCHED_SETTINGS:
        reset_caches()


setting_changed.connect(_settings_changed, dispatch_uid="chat_security.conf.settings_changed")
