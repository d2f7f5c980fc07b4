"""Guards the chat API: ``Authorization: Bearer <jwt>`` → ``request.chat_identity``.

Thin by design: the header is read here, every rule lives in
:func:`chat_security.tokens.verify`. The middleware also finishes every
response for what the template tag and the check left on the request
(:func:`chat_security.marks.finish`: ``Cache-Control: private`` on pages that
carry a token, the anonymous-id cookie), so it runs for every request but
only *checks* requests under ``PROTECTED_PATHS``. A protected view that needs
the database while it is down answers 503 ``unavailable``, as the check
itself does: never a 500.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django import db
from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.http import HttpRequest, HttpResponseBase, JsonResponse

from . import clock, keyring, refusals, tokens, usage
from .conf import app_settings, register_cache
from .exceptions import KeySetStale, KeyStoreUnavailable, KeyUnreadable, TokenError
from .identity_types import ChatIdentity
from .integrations import DEFAULT
from .log import get_logger, where
from .marks import anonymous_id_for, finish
from .placement import missing_token_detail
from .session import bind_subject, bound_subjects, existing_session

logger = get_logger("chat_security.middleware")

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
    """Whether ``path`` is guarded: by ``PROTECTED_PATHS`` or an integration's paths."""
    return bool(serving(path))


def serving(path: str, snapshot: keyring.Snapshot | None = None) -> tuple[str, ...]:
    """The integrations that guard ``path`` (SPEC §13), from ``snapshot`` or the last one
    this process read (never a query): empty for an unguarded path.

    ``PROTECTED_PATHS`` always count for ``default``, even before any snapshot.
    """
    snap = snapshot or keyring.last_snapshot()
    if snap is not None:
        names = snap.serving(path)
        if names or snapshot is not None:
            return names
    prefixes = protected_prefixes()
    return DEFAULT if prefixes and path.startswith(prefixes) else ()


#: What :meth:`ChatSecurityMiddleware.check` returns for a path no integration guards.
UNGUARDED: Any = object()


class _UnknownIdentity:
    """``request.chat_identity`` on a path not known to be guarded while the key store
    cannot be read: reading anything of it raises KeyStoreUnavailable (then 503)."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        raise KeyStoreUnavailable("the chat key store cannot be read")

    def __bool__(self) -> bool:
        raise KeyStoreUnavailable("the chat key store cannot be read")

    def __repr__(self) -> str:
        return "<ChatIdentity unknown: the key store cannot be read>"


UNKNOWN_IDENTITY = _UnknownIdentity()


def _snapshot_for_routing() -> keyring.Snapshot | None:
    """The snapshot, read as any request would; None when the store cannot be read
    (a guarded request then answers 503 from its own check; others pass)."""
    try:
        return keyring.get_snapshot()
    except KeyStoreUnavailable:
        return None


def refused(
    request: HttpRequest, code: str, names: Sequence[str], snapshot: keyring.Snapshot | None
) -> None:
    """Count the refusal and keep its sample for the panel (SPEC §15)."""
    try:
        token = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
    except TokenError:
        token = None  # a malformed header: no kid or iss to show
    refusals.record(
        code,
        token=token,
        names=names,
        snapshot=snapshot,
        channel="http",
        path=request.path_info,
        user_agent=request.META.get("HTTP_USER_AGENT"),
        client=request.META.get("REMOTE_ADDR"),
    )


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


# -- responses ----------------------------------------------------------------------


def rejection(error: TokenError) -> JsonResponse:
    """401 with the stable code (SPEC §5)."""
    response = JsonResponse({"error": error.code, "detail": error.one_line}, status=401)
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
    if isinstance(exc, KeySetStale):
        return unavailable(exc.detail)
    return unavailable()


# -- the check ---------------------------------------------------------------------


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
        response = self.check(request)
        protected = response is not UNGUARDED
        if response is None or response is UNGUARDED:
            # Sync mode: get_response returns the response itself, never an awaitable.
            response = self.get_response(request)
        finish(request, response, protected)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        response: Any = None
        snapshot = keyring.fresh_snapshot()
        if snapshot is None:
            # A version check or a counter flush is due: route and check in one hop.
            response = await sync_to_async(self.check, thread_sensitive=True)(request)
        elif names := serving(request.path_info, snapshot):
            checked = False
            if _needs_no_database(request):
                # The common case: checked right here on the event loop, so
                # requests do not queue for the one thread-sensitive sync thread.
                # (If a query falls due after all, SynchronousOnlyOperation: use the thread.)
                with contextlib.suppress(SynchronousOnlyOperation):
                    response, checked = self.check(request, in_loop=True, names=names), True
            if not checked:
                response = await sync_to_async(self.check, thread_sensitive=True)(
                    request, names=names
                )
        else:
            response = UNGUARDED
        protected = response is not UNGUARDED
        if response is UNGUARDED:
            response = None
        if response is None:
            response = await self.get_response(request)  # type: ignore[misc]  # async mode
        finish(request, response, protected)
        result: HttpResponseBase = response
        return result

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
        unknown = request.__dict__.get("chat_identity") is UNKNOWN_IDENTITY
        if not unknown and not is_protected(request.path_info):  # the paths last read
            return None
        logger.warning("chat request answered 503: %s in the view", type(exception).__name__)
        if isinstance(exception, KeyStoreUnavailable):
            return key_store_unavailable(exception)
        return unavailable(DATABASE_UNAVAILABLE)

    # -- shared by both paths --------------------------------------------------------

    def check(
        self,
        request: HttpRequest,
        *,
        in_loop: bool = False,
        names: Sequence[str] | None = None,
    ) -> Any:
        """Set ``request.chat_identity`` or return the refusal; never raises.

        ``names``: the integrations that serve the request's path; None: find
        them first (SPEC §13), and return :data:`UNGUARDED` if none does.

        ``in_loop``: called on the event loop, where a database query raises
        SynchronousOnlyOperation; that one is passed on, so the caller can
        check again in the sync thread.
        """
        snapshot = None
        if names is None:
            snapshot = _snapshot_for_routing()
            names = serving(request.path_info, snapshot)
            if not names:
                if snapshot is None:
                    # Another integration may guard this path, and which paths they
                    # guard cannot be read now: a view that asks who is talking gets
                    # 503 (process_exception), never an answer.
                    request.chat_identity = UNKNOWN_IDENTITY  # type: ignore[attr-defined]
                return UNGUARDED
        try:
            identity = self.identify(request, names, snapshot)
        except SynchronousOnlyOperation:
            if in_loop:
                raise
            logger.error("chat request refused: a database query on the event loop")
            return unavailable()
        except TokenError as exc:
            refused(request, exc.code, names, snapshot)
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
            at = where(exc)
            logger.error("chat request refused: unexpected %s at %s", type(exc).__name__, at)
            return unavailable()
        request.chat_identity = identity  # type: ignore[attr-defined]  # this app's attribute
        if identity.anonymous:
            usage.count_request("unsigned", integration=identity.integration)
        return None

    def identify(
        self,
        request: HttpRequest,
        names: Sequence[str] = DEFAULT,
        snapshot: keyring.Snapshot | None = None,
    ) -> ChatIdentity:
        """The identity of a request on a path ``names`` serve; ``snapshot``: the one
        the request was routed with, if it was (no second read)."""
        if snapshot is None:
            snapshot = keyring.get_snapshot()
        now = clock.now()
        required = tokens.token_required(snapshot, names, now)  # or security_not_configured
        token = bearer_token(request.META.get("HTTP_AUTHORIZATION"))
        if token is None:
            if required:
                # A token in the URL or under another scheme is named: the fix is precise.
                raise TokenError("missing_token", missing_token_detail(request.META))
            anonymous_id = anonymous_id_for(request) if app_settings.ANONYMOUS_IDS else None
            letting_in = tokens.letting_in(snapshot, names, now)
            return ChatIdentity.anonymous_visitor(anonymous_id, letting_in)
        session = (
            existing_session(getattr(request, "session", None))
            if settings.SESSION_COOKIE_NAME in request.COOKIES
            else None
        )
        result, now = tokens.verify_at(token, bound_subjects(session), snapshot, now, names)
        bind_subject(session, result.user_id, result.user_space)
        usage.count_verified(result, now)  # the key's use counted with it
        return ChatIdentity.verified(result)
