"""Guards the chat API: ``Authorization: Bearer <jwt>`` → ``request.chat_identity``.

Thin by design: the header is read here, every rule lives in
:func:`chat_security.tokens.verify`. The middleware also finishes responses
for the template tag (``Cache-Control: private`` on pages that carry a token,
the anonymous-id cookie), so it runs for every request but only *checks*
requests under ``PROTECTED_PATHS``. A protected view that needs the database
while it is down answers 503 ``unavailable``, as the check itself does: never a 500.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import traceback
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django import db
from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.utils.cache import patch_vary_headers

from . import clock, keyring, tokens, usage
from .conf import app_settings, register_cache
from .exceptions import ERROR_CODES, KeyStoreUnavailable, KeyUnreadable, TokenError
from .identity_types import ChatIdentity
from .log import get_logger
from .placement import missing_token_detail
from .session import SUBJECT_SESSION_KEY
from .values import ANONYMOUS_ID_RE

logger = get_logger("chat_security.middleware")

#: Request attributes set by the template tag and read back here on the way out.
PRIVATE_FLAG = "_chat_security_private"
NEW_ANONYMOUS_ID = "_chat_security_new_anonymous_id"
#: Set once the response's headers are final; a tag rendered later (a streaming
#: response) could no longer make its page private, so it writes no token.
FINISHED_FLAG = "_chat_security_finished"

ANONYMOUS_COOKIE_AGE = 365 * 24 * 3600

# RFC 9110 token characters minus ".", so a bare JWT is never taken for a scheme name.
_SCHEME = re.compile(r"[!#$%&'*+^_`|~0-9A-Za-z-]+")
_BEARER_WORD = re.compile(r"(?i)(?:^|[\s,])bearer(?:$|[\s,])")
_WHITESPACE = re.compile(r"[ \t]+")

GetResponse = Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]


# -- configuration, compiled once ---------------------------------------------------


@lru_cache(maxsize=1)
def protected_prefixes() -> tuple[str, ...]:
    """``PROTECTED_PATHS`` as a tuple for ``str.startswith``; cleared when settings change."""
    paths = app_settings.PROTECTED_PATHS
    if isinstance(paths, str):
        paths = [paths]
    return tuple(str(p) for p in paths if p)


register_cache(protected_prefixes.cache_clear)


def is_protected(path: str) -> bool:
    prefixes = protected_prefixes()
    return bool(prefixes) and path.startswith(prefixes)


# -- the Authorization header -------------------------------------------------------


def bearer_token(value: str | None) -> str | None:
    """The token of an ``Authorization`` header value; ``None`` if it carries no Bearer token.

    Other schemes (``Basic`` in front of a staging site, say) are not ours and
    count as "no token". Anything that mentions Bearer but is not exactly one
    ``Bearer <credentials>`` — merged duplicate headers, a bare JWT, an empty
    ``Bearer`` — raises, so a broken token is never mistaken for no token.
    """
    if value is None:
        return None
    if value.startswith("Bearer ") and value[7:8] not in " \t" and value[-1] not in " \t":
        return value[7:]  # the usual form, which the general rules below read the same way
    value = value.strip(" \t")
    if not value:
        return None
    parts = _WHITESPACE.split(value, maxsplit=1)
    scheme, rest = parts[0], (parts[1] if len(parts) > 1 else "")
    if scheme.lower() == "bearer":
        if not rest:
            raise TokenError("missing_token", "the Authorization header has no Bearer token")
        return rest  # the engine refuses anything that is not one compact JWS
    if _BEARER_WORD.search(value) or not (rest and _SCHEME.fullmatch(scheme)):
        raise TokenError("malformed", "the Authorization header is not 'Bearer <token>'")
    return None


# -- anonymous ids ------------------------------------------------------------------


def new_anonymous_id() -> str:
    return "anon-" + secrets.token_urlsafe(16)


def anonymous_id_for(request: HttpRequest) -> str:
    """The visitor's anonymous id from its cookie, or a new one the response will set."""
    pending: str | None = getattr(request, NEW_ANONYMOUS_ID, None)
    if pending:
        return pending
    cookie = request.COOKIES.get(app_settings.ANONYMOUS_COOKIE_NAME, "")
    if ANONYMOUS_ID_RE.fullmatch(cookie):
        return cookie
    new_id = new_anonymous_id()
    setattr(request, NEW_ANONYMOUS_ID, new_id)
    return new_id


def mark_private(request: HttpRequest) -> None:
    """This request's response is for one person only: keep it out of every shared cache.

    ``_cache_update_cache`` is what Django's cache middleware (and the
    ``cache_page`` decorator, whose response hook runs *inside* the view,
    before this middleware sees the response) consult before storing a page.
    """
    setattr(request, PRIVATE_FLAG, True)
    request._cache_update_cache = False  # type: ignore[attr-defined]


def _has_header(response: HttpResponseBase, lowercase_name: str) -> bool:
    """``response.has_header``, without its KeyError round trip on every protected response.

    Reads Django's case-insensitive header store (``ResponseHeaders._store``,
    keyed by lowercase names since Django 3.2); falls back to the public call.
    """
    store = getattr(response.headers, "_store", None)
    if type(store) is dict:
        return lowercase_name in store
    return response.has_header(lowercase_name)


def make_private(response: HttpResponseBase) -> None:
    """``Cache-Control: private`` and no directive that would let a shared cache store it."""
    if not _has_header(response, "cache-control"):
        response["Cache-Control"] = "private"  # the usual case, without the parsing
        return
    directives = [d.strip() for d in response["Cache-Control"].split(",")]
    kept = [
        d
        for d in directives
        if d and d.split("=", 1)[0].strip().lower() not in ("public", "private", "s-maxage")
    ]
    response["Cache-Control"] = ", ".join(["private", *kept])


def set_anonymous_cookie(request: HttpRequest, response: HttpResponseBase, value: str) -> None:
    name = app_settings.ANONYMOUS_COOKIE_NAME
    if name in response.cookies:  # the view decided (e.g. deleted it on chat logout)
        return
    make_private(response)  # a shared cache must never hand one visitor's id to another
    response.set_cookie(
        name,
        value,
        max_age=ANONYMOUS_COOKIE_AGE,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure() or settings.SESSION_COOKIE_SECURE,
    )


def forget_anonymous_id(response: HttpResponseBase) -> None:
    """Expire the anonymous visitor's id cookie on ``response`` (a chat logout).

    Their next request gets a new id, so a fresh anonymous conversation. The
    middleware leaves a cookie the view has set or deleted alone.
    """
    response.delete_cookie(app_settings.ANONYMOUS_COOKIE_NAME, samesite="Lax")


def anonymous_id_of(request: HttpRequest, *, renew: bool = False) -> str | None:
    """The anonymous id the visitor's cookie carries, or None (none, malformed, or
    ``ANONYMOUS_IDS`` off). For a login hook: pass it to ``link_anonymous``.

    ``renew`` makes the response (through this middleware) replace the cookie
    with a fresh id, so an id is linked to one user once and whoever chats
    anonymously in this browser after a logout starts a new conversation.
    """
    if not app_settings.ANONYMOUS_IDS:
        return None
    cookie = request.COOKIES.get(app_settings.ANONYMOUS_COOKIE_NAME, "")
    if not ANONYMOUS_ID_RE.fullmatch(cookie):
        return None
    if renew:
        setattr(request, NEW_ANONYMOUS_ID, new_anonymous_id())
    return cookie


# -- responses ----------------------------------------------------------------------


def rejection(error: TokenError) -> JsonResponse:
    """401 with the stable code (SPEC §5)."""
    detail = " ".join(str(error.detail).split()) or ERROR_CODES[error.code]
    response = JsonResponse({"error": error.code, "detail": detail}, status=401)
    if error.code == "missing_token":
        response["WWW-Authenticate"] = "Bearer"
    else:
        response["WWW-Authenticate"] = (
            f'Bearer error="invalid_token", error_description="{error.code}"'
        )
    response["Cache-Control"] = "no-store"
    return response


KEY_STORE_UNAVAILABLE = "The chat key store cannot be read; try again."
DATABASE_UNAVAILABLE = "The database cannot be reached; try again."


def unavailable(detail: str = KEY_STORE_UNAVAILABLE, *, retry: bool = True) -> JsonResponse:
    """503 ``{"error": "unavailable"}``: not now, try again (SPEC §5, §12)."""
    response = JsonResponse({"error": "unavailable", "detail": detail}, status=503)
    response["Cache-Control"] = "no-store"
    if retry:
        response["Retry-After"] = "5"
    return response


def key_store_unavailable(exc: KeyStoreUnavailable) -> JsonResponse:
    """The 503 for ``exc``: an outage says try again; an unreadable key says what to run."""
    if isinstance(exc, KeyUnreadable):
        return unavailable(exc.detail, retry=False)  # a deploy fixes it, not a retry
    return unavailable()


# -- the chat session ---------------------------------------------------------------


def _existing_session(request: HttpRequest) -> Any:
    """The request's session if the browser brought one that exists; never creates one."""
    session = getattr(request, "session", None)
    if session is None or settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return None
    session.get(SUBJECT_SESSION_KEY)  # loads it; a stale cookie leaves no session key
    return session if session.session_key else None


def _bound_subject(session: Any) -> str | None:
    if session is None:
        return None
    subject = session.get(SUBJECT_SESSION_KEY)
    return subject if isinstance(subject, str) else None


def _count(outcome: str, kid: str | None = None, now: float | None = None) -> None:
    """Count the request (and the use of ``kid``, which verified it, at ``now``).

    The counters are advisory (the admin's readiness figures): never fail a request.
    """
    try:
        if kid is None:
            usage.record_traffic(outcome)
        else:
            usage.record_signed(kid, now)
    except Exception:  # noqa: BLE001
        logger.debug("chat traffic counter not recorded", exc_info=True)


def _needs_no_database(request: HttpRequest) -> bool:
    """Whether checking ``request`` now touches no database: the key store answers
    from memory (no version check or counter flush due), and no session cookie
    came with it (a session is loaded, and maybe bound, from the database)."""
    return settings.SESSION_COOKIE_NAME not in request.COOKIES and keyring.can_verify_in_loop(
        len(request.META.get("HTTP_AUTHORIZATION", ""))
    )


# -- the middleware -----------------------------------------------------------------


class ChatSecurityMiddleware:
    """Verifies chat API requests; see SPEC §5.

    Place it after the session and auth middleware (and UpdateCacheMiddleware),
    before FetchFromCacheMiddleware: ``manage.py check`` (E016) says so otherwise.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        protected = is_protected(request.path_info)
        response = self.check(request) if protected else None
        if response is None:
            # Sync mode: get_response returns the response itself, never an awaitable.
            response = self.get_response(request)  # type: ignore[assignment]
        self.finish(request, response, protected)  # type: ignore[arg-type]
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        protected = is_protected(request.path_info)
        response = None
        if protected:
            checked = False
            if _needs_no_database(request):
                # The common case: checked right here on the event loop, so
                # requests do not queue for the one thread-sensitive sync thread.
                # (If a query falls due after all, SynchronousOnlyOperation: use the thread.)
                with contextlib.suppress(SynchronousOnlyOperation):
                    response, checked = self.check(request, in_loop=True), True
            if not checked:
                response = await sync_to_async(self.check, thread_sensitive=True)(request)
        if response is None:
            response = await self.get_response(request)  # type: ignore[misc]  # async mode
        self.finish(request, response, protected)
        return response

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponseBase | None:
        """A protected view that cannot reach the database answers 503, not 500 (SPEC §12).

        Django offers this hook what the view (or its deferred template
        rendering) raised, on both the sync and the async path. A
        ``django.db.Error`` there, or the key store's ``KeyStoreUnavailable``,
        means the request cannot be served now: the view's query, a session or
        ``request.user`` loaded lazily. Other paths and other exceptions are
        left to the project (the demo answers 503 for its other views too).
        """
        if not isinstance(exception, db.Error | KeyStoreUnavailable):
            return None
        if not is_protected(request.path_info):
            return None
        logger.warning("chat request answered 503: %s in the view", type(exception).__name__)
        if isinstance(exception, KeyStoreUnavailable):
            return key_store_unavailable(exception)
        return unavailable(DATABASE_UNAVAILABLE)

    # -- shared by both paths --------------------------------------------------------

    def check(self, request: HttpRequest, *, in_loop: bool = False) -> HttpResponseBase | None:
        """Set ``request.chat_identity`` or return the refusal; never raises.

        ``in_loop``: called on the event loop, where a database query raises
        SynchronousOnlyOperation; that one is passed on, so the caller can
        check again in the sync thread.
        """
        try:
            identity = self.identify(request)
        except SynchronousOnlyOperation:
            if in_loop:
                raise
            logger.error("chat request refused: a database query on the event loop")
            return unavailable()
        except TokenError as exc:
            _count(exc.code)
            logger.debug("chat request refused: %s", exc.code)
            return rejection(exc)
        except KeyUnreadable as exc:
            logger.error("chat request refused: %s", exc.detail)
            return key_store_unavailable(exc)
        except KeyStoreUnavailable as exc:
            logger.warning("chat request refused: the key store cannot be read")
            return key_store_unavailable(exc)
        except Exception as exc:
            # Fail closed. Say where it broke, never what the token contained.
            frames = traceback.extract_tb(exc.__traceback__)
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            logger.error("chat request refused: unexpected %s at %s", type(exc).__name__, where)
            return unavailable()
        request.chat_identity = identity  # type: ignore[attr-defined]  # this app's attribute
        if identity.anonymous:
            _count("unsigned")
        return None

    def identify(self, request: HttpRequest) -> ChatIdentity:
        snapshot = keyring.get_snapshot()
        now = clock.now()
        if snapshot.enabled and not snapshot.can_verify(now):
            # SPEC §5: until a key exists, that is the one thing to fix, token or not.
            raise TokenError(
                "security_not_configured", "no usable signing secret or public key exists yet"
            )
        token = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        if token is None:
            if snapshot.enabled:
                # A token in the URL or under another scheme is named: the fix is precise.
                raise TokenError("missing_token", missing_token_detail(request.META))
            anonymous_id = anonymous_id_for(request) if app_settings.ANONYMOUS_IDS else None
            return ChatIdentity.anonymous_visitor(anonymous_id)
        session = _existing_session(request)
        result, now = tokens.verify_at(token, _bound_subject(session), snapshot, now)
        if session is not None and session.get(SUBJECT_SESSION_KEY) != result.user_id:
            session[SUBJECT_SESSION_KEY] = result.user_id
        _count("signed", result.kid, now)  # the key's use counted with the request
        return ChatIdentity.verified(result)

    def finish(self, request: HttpRequest, response: HttpResponseBase, protected: bool) -> None:
        """Patch the response for what the tag and the check left on the request."""
        setattr(request, FINISHED_FLAG, True)
        if getattr(request, PRIVATE_FLAG, False):
            make_private(response)
        new_id = getattr(request, NEW_ANONYMOUS_ID, None)
        if new_id:
            set_anonymous_cookie(request, response, new_id)
        if protected:
            # Only the token's holder may see this: no shared cache (a CDN, Django's
            # cache middleware) may keep it and answer a later request before the check.
            make_private(response)
            if _has_header(response, "vary"):
                patch_vary_headers(response, ("Authorization",))
            else:
                response["Vary"] = "Authorization"  # what patch_vary_headers would write
            # Set here, not in check(): FetchFromCacheMiddleware placed after us
            # re-arms the flag on a cache miss.
            request._cache_update_cache = False  # type: ignore[attr-defined]
