"""System checks for ``CHAT_SECURITY`` (ids ``chat_security.E0xx`` / ``W0xx``).

Where the middleware sits and what ``check --deploy`` asks of a live site are
checked in ``deploy_checks.py``. Ids are never reused; docs/checks.md lists them all.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

from .conf import (
    DEFAULTS,
    DURATIONS,
    JS_IDENTIFIER,
    MAX_FAILURE_SAMPLES,
    MAX_REMINDER_DAYS,
    MAX_RETENTION_DAYS,
    app_settings,
    seconds,
    valid_reminder_days,
)
from .propagation import PER_SERVER_CACHES

_COOKIE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _error(n: int, msg: str, hint: str) -> Error:
    return Error(msg, hint=hint, id=f"chat_security.E{n:03d}")


#: ~31 years; anything longer is a typo and would overflow datetime arithmetic.
_MAX_DURATION = 10**9


def _is_duration(value: Any, minimum: float = 0) -> bool:
    if not isinstance(value, timedelta | int | float) or isinstance(value, bool):
        return False
    value = seconds(value)
    return math.isfinite(value) and minimum <= value <= _MAX_DURATION


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _unless(ok: bool, n: int, msg: str, hint: str) -> list[Error]:
    """No error if ``ok``, else ``chat_security.E<n>``."""
    return [] if ok else [_error(n, msg, hint)]


#: Settings whose durations must be at least one second (tokens need a lifetime).
_AT_LEAST_ONE_SECOND = ("MAX_TOKEN_LIFETIME", "DEFAULT_TOKEN_TTL")


def _setting_errors(raw: Callable[[str], Any]) -> list[Error]:
    """Every ``CHAT_SECURITY`` value checked: one small function per concern, each
    error at most once, in a fixed order."""
    return [
        *_path_errors(raw("PROTECTED_PATHS")),
        *_token_size_errors(raw("MAX_TOKEN_BYTES")),
        *_duration_errors(raw),
        *_key_cache_errors(raw("KEY_CACHE_ALIAS")),
        *_identify_timeout_errors(raw("WEBSOCKET_IDENTIFY_TIMEOUT")),
        *_lifetime_errors(raw),
        *_claim_rule_errors(raw),
        *_js_variable_errors(raw("JS_VARIABLE")),
        *_builder_errors(raw("CLAIMS_BUILDER")),
        *_crm_errors(raw("CRM_URL_TEMPLATE")),
        *_encryption_key_errors(raw("ENCRYPTION_KEYS")),
        *_anonymous_id_errors(raw),
        *_limit_errors(raw),
        *_jwks_errors(raw),
        *_rotation_reminder_errors(raw("ROTATION_REMINDER_DAYS")),
        *_observability_errors(raw),
        *_metrics_errors(raw("METRICS")),
    ]


def _path_errors(paths: Any) -> list[Error]:
    """E003: the prefixes the middleware guards."""
    return _unless(
        _is_str_list(paths) and all(p.startswith("/") for p in paths),
        3,
        "PROTECTED_PATHS must be a list of path prefixes starting with '/'.",
        'e.g. "PROTECTED_PATHS": ["/chat/api/"]',
    )


def _token_size_errors(size: Any) -> list[Error]:
    """E004: the size past which a token is refused unread."""
    return _unless(
        isinstance(size, int) and not isinstance(size, bool) and 256 <= size <= 1 << 20,
        4,
        "MAX_TOKEN_BYTES must be an integer between 256 and 1048576.",
        "The default is 8192.",
    )


def _duration_errors(raw: Callable[[str], Any]) -> list[Error]:
    """E005: every duration, in seconds or a timedelta, within its range."""
    errors = []
    for name in sorted(DURATIONS):
        minimum = 1 if name in _AT_LEAST_ONE_SECOND else 0
        errors += _unless(
            _is_duration(raw(name), minimum),
            5,
            f"{name} must be a number of seconds from {minimum} to {_MAX_DURATION} or a timedelta.",
            f"The default is {DEFAULTS[name]}.",
        )
    return errors


def _identify_timeout_errors(timeout: Any) -> list[Error]:
    """E017: how long a WebSocket may wait for its identify message (E005 checks the type)."""
    return _unless(
        not _is_duration(timeout) or 0 < seconds(timeout) <= 600,
        17,
        "WEBSOCKET_IDENTIFY_TIMEOUT must be more than 0 and at most 600 seconds.",
        "The default is 10.",
    )


def _lifetime_errors(raw: Callable[[str], Any]) -> list[Error]:
    """E006: tokens this app issues must pass its own lifetime cap."""
    comparable = all(_is_duration(raw(name), 1) for name in _AT_LEAST_ONE_SECOND)
    return _unless(
        not comparable or app_settings.DEFAULT_TOKEN_TTL <= app_settings.MAX_TOKEN_LIFETIME,
        6,
        "DEFAULT_TOKEN_TTL is longer than MAX_TOKEN_LIFETIME.",
        "Tokens this app issues would be refused; shorten the TTL.",
    )


def _claim_rule_errors(raw: Callable[[str], Any]) -> list[Error]:
    """E007–E009: what a token must carry and how it may be signed."""
    errors = _unless(
        isinstance(raw("REQUIRE_EXP"), bool),
        7,
        "REQUIRE_EXP must be True or False.",
        "The default is True.",
    )
    algs = raw("ALLOWED_ALGORITHMS")
    errors += _unless(
        _is_str_list(algs) and bool(algs) and set(algs) <= {"HS256", "RS256", "ES256", "EdDSA"},
        8,
        "ALLOWED_ALGORITHMS must be a non-empty list drawn from 'HS256', 'RS256', 'ES256' "
        "and 'EdDSA'.",
        "Other algorithms are never accepted.",
    )
    for name in ("AUDIENCE", "ISSUER"):
        value = raw(name)
        errors += _unless(
            value is None or (isinstance(value, str) and bool(value))
            or (_is_str_list(value) and bool(value)),
            9,
            f"{name} must be None, a string or a list of strings.",
            "None disables the check.",
        )  # fmt: skip
    return errors


def _jwks_errors(raw: Callable[[str], Any]) -> list[Error]:
    """E023–E024: fetching identity providers' key sets (SPEC §14)."""
    hosts = raw("JWKS_PRIVATE_HOSTS")
    errors = _unless(
        _is_str_list(hosts) and all("/" not in h and " " not in h for h in hosts),
        23,
        "JWKS_PRIVATE_HOSTS must be a list of host names or addresses (no scheme, no path).",
        'e.g. "JWKS_PRIVATE_HOSTS": ["idp.internal", "10.0.0.5"]; the default is [].',
    )
    names = ("JWKS_COOLDOWN_SECONDS", "JWKS_REFRESH_SECONDS", "JWKS_MAX_STALE")
    if all(_is_duration(raw(name)) for name in names):
        cooldown, refresh, stale = (seconds(raw(name)) for name in names)
        errors += _unless(
            0 < cooldown <= refresh <= stale,
            24,
            "JWKS_COOLDOWN_SECONDS, JWKS_REFRESH_SECONDS and JWKS_MAX_STALE must not shrink "
            "in that order, and the cooldown must be more than 0.",
            "The defaults are 30, 600 and 86400.",
        )
    return errors


def _rotation_reminder_errors(days: Any) -> list[Error]:
    """E025: the age in days past which a key the site holds is due for rotation."""
    return _unless(
        valid_reminder_days(days),
        25,
        f"ROTATION_REMINDER_DAYS must be a whole number of days from 1 to {MAX_REMINDER_DAYS}, "
        "or None to turn the reminder off.",
        f"The default is {DEFAULTS['ROTATION_REMINDER_DAYS']}.",
    )


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _observability_errors(raw: Callable[[str], Any]) -> list[Error]:
    """E026, E027: how many refusals the panel keeps, how long traffic rows stay."""
    return [
        *_unless(
            _whole(raw("FAILURE_SAMPLES"), 0, MAX_FAILURE_SAMPLES),
            26,
            f"FAILURE_SAMPLES must be a whole number from 0 to {MAX_FAILURE_SAMPLES}.",
            f"The refusals kept per integration; 0 keeps none. "
            f"The default is {DEFAULTS['FAILURE_SAMPLES']}.",
        ),
        *_unless(
            _whole(raw("TRAFFIC_RETENTION_DAYS"), 1, MAX_RETENTION_DAYS),
            27,
            f"TRAFFIC_RETENTION_DAYS must be a whole number of days from 1 to "
            f"{MAX_RETENTION_DAYS}.",
            f"The 30-day charts need 31; the default is {DEFAULTS['TRAFFIC_RETENTION_DAYS']}.",
        ),
    ]


def _metrics_errors(on: Any) -> list[Error]:
    """E028: Prometheus metrics switched on in a way that cannot work."""
    if not isinstance(on, bool):
        return [_error(28, "METRICS must be True or False.", "The default is False.")]
    if on and importlib.util.find_spec("prometheus_client") is None:  # found, not imported
        return [
            _error(
                28,
                "METRICS is True but prometheus_client is not installed.",
                "Install the metrics extra (chat-security[metrics]): pip install "
                '"/path/to/chat_security[metrics]", or pip install prometheus_client; '
                "or set METRICS to False.",
            )
        ]
    return []


def _js_variable_errors(name: Any) -> list[Error]:
    """E010: the variable the template tag assigns."""
    return _unless(
        isinstance(name, str) and bool(JS_IDENTIFIER.fullmatch(name)),
        10,
        "JS_VARIABLE must be a JavaScript identifier.",
        'The default is "ConvrsUser".',
    )


def _crm_errors(crm: Any) -> list[Error]:
    """E012: the Visitor Details card's CRM link."""
    return _unless(
        crm is None
        or (isinstance(crm, str) and crm.startswith(("https://", "http://")) and "{crm_id}" in crm),
        12,
        "CRM_URL_TEMPLATE must be an http(s) URL containing {crm_id}.",
        'e.g. "https://crm.example.com/contacts/{crm_id}"',
    )


def _encryption_key_errors(keys_: Any) -> list[Error]:
    """E013: the keys that encrypt secrets at rest (W001 says when there are none)."""
    return _unless(
        keys_ is None or (_is_str_list(keys_) and bool(keys_) and all(len(k) >= 32 for k in keys_)),
        13,
        "ENCRYPTION_KEYS must be a non-empty list of strings of at least 32 characters.",
        "Put the newest key first and keep old ones until re-encrypted.",
    )


def _anonymous_id_errors(raw: Callable[[str], Any]) -> list[Error]:
    """E014: anonymous visitor ids and their cookie."""
    cookie = raw("ANONYMOUS_COOKIE_NAME")
    return [
        *_unless(
            isinstance(raw("ANONYMOUS_IDS"), bool),
            14,
            "ANONYMOUS_IDS must be True or False.",
            "The default is False.",
        ),
        *_unless(
            isinstance(cookie, str) and bool(_COOKIE_NAME.fullmatch(cookie)),
            14,
            "ANONYMOUS_COOKIE_NAME must be a cookie name (letters, digits, '_' and '-').",
            'The default is "chat_anonymous_id".',
        ),
    ]


def _limit_errors(raw: Callable[[str], Any]) -> list[Error]:
    """E015: the caps on identity data kept on the contact record."""
    errors = []
    for name in ("USER_DATA_MAX_BYTES", "AGENT_DATA_MAX_ITEMS"):
        errors += _unless(
            _is_positive_int(raw(name)),
            15,
            f"{name} must be a positive integer.",
            f"The default is {DEFAULTS[name]}.",
        )
    return errors


def _key_cache_errors(alias: Any) -> list[Error]:
    """E018/E019: ``KEY_CACHE_ALIAS`` names a cache, and one that servers can share."""
    if alias is None:
        return []
    if not (isinstance(alias, str) and alias in settings.CACHES):
        return [
            _error(
                18,
                f"KEY_CACHE_ALIAS {alias!r} is not a cache alias in CACHES.",
                'Name a cache every server shares (e.g. "default" on Redis), or None.',
            )
        ]
    backend = settings.CACHES[alias].get("BACKEND", "")
    try:
        local = issubclass(import_string(backend), PER_SERVER_CACHES)
    except ImportError:
        return []  # Django's own cache checks report the backend
    if not local:
        return []
    return [
        _error(
            19,
            f"KEY_CACHE_ALIAS {alias!r} is a {backend.rsplit('.', 1)[-1]}, which servers "
            "do not share: a key change made on one server would reach the others only "
            "through the 30 s database backstop.",
            "Name a cache every server shares (Redis, Memcached, the database cache), "
            "or set KEY_CACHE_ALIAS to None to poll the database.",
        )
    ]


def _builder_errors(path: Any) -> list[Error]:
    if callable(path):
        return []
    try:
        builder = import_string(path) if isinstance(path, str) else None
    except ImportError:
        builder = None
    if not callable(builder):
        return [
            _error(
                11,
                f"CLAIMS_BUILDER {path!r} is not an importable callable.",
                'Give a dotted path like "myapp.chat.claims_for".',
            )
        ]
    return []


@register(Tags.security)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    user = getattr(settings, "CHAT_SECURITY", {})
    if not isinstance(user, dict):
        return [
            _error(
                1, "CHAT_SECURITY must be a dict.", "See the settings reference (docs/settings.md)."
            )
        ]
    messages: list[Error | Warning] = []
    unknown = sorted(str(name) for name in set(user) - set(DEFAULTS))  # keys may be any type
    if unknown:
        messages.append(
            _error(
                2,
                f"Unknown CHAT_SECURITY keys: {', '.join(unknown)}.",
                _spelling_hint(unknown),
            )
        )
    messages.extend(_setting_errors(app_settings.raw))
    if not user.get("ENCRYPTION_KEYS"):
        messages.append(
            Warning(
                "CHAT_SECURITY['ENCRYPTION_KEYS'] is not set; secrets are encrypted with a key "
                "derived from SECRET_KEY.",
                hint="Set a dedicated key so that rotating SECRET_KEY does not lock the key store.",
                id="chat_security.W001",
            )
        )
    return messages


def _closest(name: str) -> str | None:
    """The valid ``CHAT_SECURITY`` key ``name`` most likely misspells, if any."""
    matches = difflib.get_close_matches(name.upper(), DEFAULTS, n=1, cutoff=0.75)
    return matches[0] if matches else None


def _spelling_hint(unknown: list[str]) -> str:
    guesses = [f"{name!r} → {guess!r}" for name in unknown if (guess := _closest(name))]
    if guesses:
        return f"Did you mean: {', '.join(guesses)}? See the settings reference."
    return "Check the spelling against the settings reference."


#: A CHAT_SECURITY_* Django setting: a key meant for the dict, or an environment name.
_STRAY_PREFIX = "CHAT_SECURITY_"


@register(Tags.security)
def check_stray_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """E021: ``CHAT_SECURITY_<KEY>`` set as a Django setting, which nothing reads."""
    errors = []
    for name in sorted(n for n in dir(settings) if n.startswith(_STRAY_PREFIX)):
        key = name[len(_STRAY_PREFIX) :]
        if key in DEFAULTS:
            hint = (
                f'Put it in the dict: CHAT_SECURITY = {{"{key}": ...}} (to read it from the '
                f'environment: os.environ["{name}"] in settings.py).'
            )
        else:
            guess = _closest(key)
            hint = f"CHAT_SECURITY has no key {key!r}" + (
                f'; did you mean CHAT_SECURITY = {{"{guess}": ...}}?' if guess else "."
            )
        errors.append(
            _error(
                21,
                f"{name} is a Django setting of its own; chat_security reads only the "
                "CHAT_SECURITY dict, so it has no effect.",
                hint,
            )
        )
    return errors
