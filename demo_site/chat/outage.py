"""The demo while its database is down: 503 ``unavailable``, never a 500 (SPEC §12).

Where a request can meet the database, and who answers for it:

* the chat API (``/chat/api/``, ``PROTECTED_PATHS``): ``ChatSecurityMiddleware``,
  both in its check (key store, session) and for what the view raises;
* every other view (the agent page, the dashboard, the login, the token
  endpoint, the admin): ``request.user`` and the session are loaded lazily,
  in the view or its template, and the view queries: ``process_exception``
  below;
* the session save in ``SessionMiddleware.process_response``, after the
  view. Django turns an exception raised by a middleware into a 500 response
  right there (``convert_exception_to_response``), so no middleware placed
  before it ever sees that exception: only the session middleware itself can
  answer 503. Hence this subclass, in Django's place in ``MIDDLEWARE``; it
  also carries the ``process_exception`` for the views, so one line covers
  the whole site. (Messages are kept in their cookie, ``MESSAGE_STORAGE``,
  so ``MessageMiddleware`` never falls back to the session on the way out.)

The consumers answer for their own handlers: :class:`OutageAwareConsumer` closes
the socket with 4503 ``unavailable``, as the WebSocket middleware does when
the key store cannot be read.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django import db
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponseBase, JsonResponse

from chat_security.websocket import CLOSE_UNAVAILABLE

logger = logging.getLogger("demo_site.chat")

#: The detail of ChatSecurityMiddleware's own 503 for the same cause (SPEC §12).
DATABASE_UNAVAILABLE = "The database cannot be reached; try again."


def unavailable(detail: str = DATABASE_UNAVAILABLE) -> JsonResponse:
    """503 ``{"error": "unavailable"}``, shaped as the middleware answers it."""
    response = JsonResponse({"error": "unavailable", "detail": detail}, status=503)
    response["Cache-Control"] = "no-store"
    response["Retry-After"] = "5"
    return response


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's session middleware; a database error in a view or the session save is a 503."""

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponseBase | None:
        if not isinstance(exception, db.Error):
            return None
        logger.warning("%s answered 503: %s in the view", request.path, type(exception).__name__)
        return unavailable(DATABASE_UNAVAILABLE)

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        try:
            return super().process_response(request, response)
        except (db.Error, SessionInterrupted) as exc:
            # Django reports a failed UPDATE of the session row as SessionInterrupted
            # (400, "deleted by a concurrent request"), whatever the database said.
            if not isinstance(exc, db.Error) and not _caused_by_outage(exc):
                raise
            logger.warning("%s answered 503: the session could not be saved", request.path)
            return unavailable(DATABASE_UNAVAILABLE)


def _caused_by_outage(exc: BaseException) -> bool:
    """Whether a connection failure (not a missing row) is behind ``exc``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, db.OperationalError | db.InterfaceError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class OutageAwareConsumer(AsyncJsonWebsocketConsumer):
    """A JSON consumer whose handlers' ``django.db.Error`` closes it with 4503 ``unavailable``.

    The error frame comes first (``{"type": "error", "error": "unavailable", ...}``),
    as before every close the WebSocket middleware makes. The consumer stays
    until the client's disconnect arrives, so its groups are left as usual.
    """

    closed_unavailable = False

    async def dispatch(self, message: dict[str, Any]) -> None:
        try:
            await super().dispatch(message)
        except db.Error as exc:
            if message.get("type") == "websocket.disconnect":
                raise StopConsumer from exc  # the client has gone: nobody to tell
            await self.close_unavailable(exc)

    async def close_unavailable(self, exc: BaseException) -> None:
        if self.closed_unavailable:
            return
        self.closed_unavailable = True
        logger.warning("%s closed 4503: %s", type(self).__name__, type(exc).__name__)
        await self.send_json(
            {"type": "error", "error": "unavailable", "detail": DATABASE_UNAVAILABLE}
        )
        await self.close(code=CLOSE_UNAVAILABLE, reason="unavailable")
