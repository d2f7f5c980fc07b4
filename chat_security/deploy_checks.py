"""System checks of how the app sits in a project: its place in ``MIDDLEWARE``
(every ``manage.py check``: E016, E022, W008) and, with ``check --deploy``, the
settings and key store of a site about to go live (W003–W007, W009, E020).

The checks of the ``CHAT_SECURITY`` values themselves are in ``checks.py``; both
modules draw on one series of ids, never reused; docs/checks.md lists them all.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .checks import _error, _is_duration
from .conf import app_settings

# -- the middleware stack (every manage.py check) ------------------------------------------

_MIDDLEWARE = "chat_security.middleware.ChatSecurityMiddleware"


@register(Tags.security)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    stack = list(getattr(settings, "MIDDLEWARE", []) or [])
    if _MIDDLEWARE not in stack:
        # An error, as Django's admin.E408 for AuthenticationMiddleware: nothing would
        # guard PROTECTED_PATHS, and views reading request.chat_identity would 500.
        return [_error(22, f"{_MIDDLEWARE} is not in MIDDLEWARE.", _MISSING_HINT)]
    messages: list[Error | Warning] = []
    if stack.count(_MIDDLEWARE) > 1:
        messages.append(
            Warning(
                f"{_MIDDLEWARE} is listed {stack.count(_MIDDLEWARE)} times in MIDDLEWARE.",
                hint="Keep one, after the session and authentication middleware: each copy "
                "verifies the token again and counts the request again.",
                id="chat_security.W008",
            )
        )
    position = stack.index(_MIDDLEWARE)
    for needed in (
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ):
        if needed in stack and stack.index(needed) > position:
            return [
                *messages,
                _error(
                    16,
                    f"{_MIDDLEWARE} must come after {needed}.",
                    "Move it below the session and authentication middleware.",
                ),
            ]
    return [*messages, *_cache_order_errors(stack, position)]


_MISSING_HINT = (
    "Add it after the session and authentication middleware. Without it nothing "
    "guards PROTECTED_PATHS, pages with the token tag are not marked private, and "
    "request.chat_identity does not exist (an AttributeError, a 500, in views that read "
    "it). Only a project that serves no chat over HTTP may silence this check "
    "(SILENCED_SYSTEM_CHECKS)."
)


_UPDATE_CACHE = "django.middleware.cache.UpdateCacheMiddleware"
_FETCH_CACHE = "django.middleware.cache.FetchFromCacheMiddleware"
_CACHE = "django.middleware.cache.CacheMiddleware"
_CACHE_HINT = (
    f"Put {_UPDATE_CACHE} first, then the session and authentication middleware, "
    f"then {_MIDDLEWARE}, and {_FETCH_CACHE} last."
)


def _cache_order_errors(stack: list[str], position: int) -> list[Error | Warning]:
    """The site-wide cache must neither answer before the check nor store before we mark."""
    if _FETCH_CACHE in stack[:position]:
        # Its cached 200 would reach a revoked, expired or absent token unchecked.
        return [_error(16, f"{_MIDDLEWARE} must come before {_FETCH_CACHE}.", _CACHE_HINT)]
    if _UPDATE_CACHE in stack[position + 1 :]:
        # It would store a protected response before this middleware marks it private.
        return [_error(16, f"{_MIDDLEWARE} must come after {_UPDATE_CACHE}.", _CACHE_HINT)]
    if _CACHE in stack:
        # Fetches and stores at one place: either before the check or before the mark.
        return [_error(16, f"{_MIDDLEWARE} cannot be ordered safely with {_CACHE}.", _CACHE_HINT)]
    return []


# -- deploy checks (manage.py check --deploy) ----------------------------------------------

#: Beyond these a deployment tolerates more clock skew or token theft than it needs.
DEPLOY_MAX_LEEWAY = 5 * 60
DEPLOY_MAX_LIFETIME = 24 * 3600


def _deploy_warning(n: int, msg: str, hint: str) -> Warning:
    return Warning(msg, hint=hint, id=f"chat_security.W{n:03d}")


@register(Tags.security, deploy=True)
def check_deploy_settings(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    """Settings a live site should not run with (no database access)."""
    messages = []
    leeway, lifetime = app_settings.LEEWAY, app_settings.MAX_TOKEN_LIFETIME
    if _is_duration(app_settings.raw("LEEWAY")) and leeway > DEPLOY_MAX_LEEWAY:
        messages.append(
            _deploy_warning(
                5,
                f"LEEWAY is {leeway:g} s: expired tokens stay accepted that long.",
                "Keep it at 5 minutes or less (default 30 s); fix the servers' clocks (NTP).",
            )
        )
    if _is_duration(app_settings.raw("MAX_TOKEN_LIFETIME"), 1) and lifetime > DEPLOY_MAX_LIFETIME:
        messages.append(
            _deploy_warning(
                6,
                f"MAX_TOKEN_LIFETIME is {lifetime / 3600:g} h: a stolen token works that long.",
                "Keep it at 24 h or less; tokens are renewed in the page (refresh_at).",
            )
        )
    return messages


@register(Tags.security, Tags.database, deploy=True)
def check_deploy_key_store(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Warning]:
    """The key store of a site about to go live; only with ``check --deploy --database``."""
    if not databases or "default" not in databases:
        return []  # Django's rule: no query unless --database names the database
    from django.db import DatabaseError

    from .integrations import DEFAULT_INTEGRATION
    from .models import Integration, Key, KeyKind

    try:
        default = Integration.objects.filter(name=DEFAULT_INTEGRATION)
        config = default.first()
        usable = [
            k for kind in (KeyKind.SECRET, KeyKind.PUBLIC_KEY) for k in Key.objects.usable(kind)
        ]
    except DatabaseError as exc:
        return [
            _deploy_warning(
                7,
                f"The chat key store cannot be read ({str(exc).splitlines()[0][:80]}).",
                "Run 'manage.py migrate' before going live.",
            )
        ]
    messages = []
    if config is not None and not config.secured():  # a schedule that is due is on
        enforce_at = config.scheduled_at()
        messages.append(
            _deploy_warning(
                3,
                "Web chat security is off: chat requests without a token are accepted"
                + (f" until {enforce_at:%Y-%m-%d %H:%M} UTC (scheduled)." if enforce_at else "."),
                "Turn it on: 'manage.py chat_security security on' or the admin panel"
                + (", or let the schedule do it." if enforce_at else "."),
            )
        )
    if not usable:
        messages.append(
            _deploy_warning(
                4,
                "No usable signing secret or public key exists.",
                "Every chat request will be refused with security_not_configured: run "
                "'manage.py chat_security generate-secret' or add a public key.",
            )
        )
    return messages


@register(Tags.security, Tags.database, deploy=True)
def check_deploy_key_material(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Error]:
    """E020: usable keys whose stored material no ENCRYPTION_KEYS entry decrypts.

    Their tokens get 503 ``unavailable`` on every request (HTTP and WebSocket);
    only with ``check --deploy --database``.
    """
    if not databases or "default" not in databases:
        return []
    from django.db import DatabaseError

    from . import keys
    from .exceptions import UNREADABLE_KEY_FIX, ChatSecurityError
    from .models import Key

    try:
        stored = [k for k in Key.objects.exclude(encrypted_material="") if k.is_usable()]
        lost = [k for k in stored if keys.decrypting_key(k.encrypted_material) is None]
    except (DatabaseError, ChatSecurityError):
        return []  # W007 reports an unreadable store, E013 a malformed ENCRYPTION_KEYS
    if not lost:
        return []
    if all(keys.encrypted_with_secret_key(k.encrypted_material) for k in lost):
        fix = (
            "They were made while ENCRYPTION_KEYS was unset, so SECRET_KEY encrypts them: set "
            "ENCRYPTION_KEYS to [<your key>, SECRET_KEY], run 'manage.py chat_security "
            "reencrypt', then remove SECRET_KEY from the list."
        )
    else:
        fix = f"ENCRYPTION_KEYS was set or changed after they were made: {UNREADABLE_KEY_FIX}."
    return [
        _error(
            20,
            f"Web chat key(s) {', '.join(sorted(k.kid for k in lost))} cannot be decrypted "
            "with ENCRYPTION_KEYS: every token that needs them is answered 503 unavailable.",
            f"{fix} If the old key is lost, revoke these keys and make new ones.",
        )
    ]


@register(Tags.security, Tags.database, deploy=True)
def check_deploy_key_age(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Warning]:
    """W009: active keys the site holds older than ROTATION_REMINDER_DAYS (SPEC §15), one
    warning each; only with ``check --deploy --database``, as E020."""
    if not databases or "default" not in databases:
        return []
    from django.db import DatabaseError

    from . import hygiene

    try:
        due = hygiene.due_now()
    except DatabaseError:
        return []  # W007 reports an unreadable store
    return [_deploy_warning(9, key.message(), key.hint()) for key in due]
