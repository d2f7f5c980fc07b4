"""What a request leaves for its response, and the response finished for it.

Two things are decided while a request is served but can only be written on
its response: the template tag makes a page private (it carries one person's
token), and an anonymous visitor gets a new id, set as a cookie. The tag and
the check mark the request (:func:`mark_private`, :func:`anonymous_id_for`,
:func:`anonymous_id_of`); :class:`~chat_security.middleware.ChatSecurityMiddleware`
calls :func:`finish` on the way out. Public Django APIs only
(``response.has_header``, ``response.cookies``, ``set_cookie``), plus the
request flag Django's cache middleware and ``cache_page`` consult before
storing a page (``_cache_update_cache``: nothing public stops them).
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import patch_vary_headers

from .conf import app_settings
from .values import ANONYMOUS_ID_RE

#: Request attributes set while serving it and read back by :func:`finish`.
PRIVATE_FLAG = "_chat_security_private"
NEW_ANONYMOUS_ID = "_chat_security_new_anonymous_id"
#: Set once the response's headers are final; a tag rendered later (a streaming
#: response) could no longer make its page private, so it writes no token.
FINISHED_FLAG = "_chat_security_finished"

ANONYMOUS_COOKIE_AGE = 365 * 24 * 3600


# -- marks on the request ---------------------------------------------------------------


def mark_private(request: HttpRequest) -> None:
    """This request's response is for one person only: keep it out of every shared cache.

    ``_cache_update_cache`` is what Django's cache middleware (and the
    ``cache_page`` decorator, whose response hook runs *inside* the view,
    before the middleware sees the response) consult before storing a page.
    """
    setattr(request, PRIVATE_FLAG, True)
    request._cache_update_cache = False  # type: ignore[attr-defined]


def is_finished(request: HttpRequest) -> bool:
    """Whether the response's headers are final (nothing can make it private any more)."""
    return bool(getattr(request, FINISHED_FLAG, False))


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


def anonymous_id_of(request: HttpRequest, *, renew: bool = False) -> str | None:
    """The anonymous id the visitor's cookie carries, or None (none, malformed, or
    ``ANONYMOUS_IDS`` off). For a login hook: pass it to ``link_anonymous``.

    ``renew`` makes the response (through the middleware) replace the cookie
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


def forget_anonymous_id(response: HttpResponseBase) -> None:
    """Expire the anonymous visitor's id cookie on ``response`` (a chat logout).

    Their next request gets a new id, so a fresh anonymous conversation. The
    middleware leaves a cookie the view has set or deleted alone.
    """
    response.delete_cookie(app_settings.ANONYMOUS_COOKIE_NAME, samesite="Lax")


# -- the response -------------------------------------------------------------------------


def make_private(response: HttpResponseBase) -> None:
    """``Cache-Control: private`` and no directive that would let a shared cache store it."""
    if not response.has_header("Cache-Control"):
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


def finish(request: HttpRequest, response: HttpResponseBase, protected: bool) -> None:
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
        if response.has_header("Vary"):
            patch_vary_headers(response, ("Authorization",))
        else:
            response["Vary"] = "Authorization"  # what patch_vary_headers would write
        # Set here, not in the check: FetchFromCacheMiddleware placed after the
        # middleware re-arms the flag on a cache miss.
        request._cache_update_cache = False  # type: ignore[attr-defined]
