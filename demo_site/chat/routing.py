"""The demo's WebSocket routes (``demo_site/asgi.py`` serves them).

* ``ws/chat/`` — the visitor's chat, identified by ``ChatSecurityWebSocketMiddleware``
  (the token as a subprotocol or in an ``identify`` message, never in the URL);
* ``ws/agent/`` — the live agent page, for staff logged in to the site
  (the session, not a chat token; the consumer reads the login from the
  database itself, at connect and again while the socket lives, so a database
  outage closes it with 4503 instead of failing the handshake).

Both behind ``AllowedHostsOriginValidator``: a page on another origin cannot
open them with the visitor's cookies.
"""

from __future__ import annotations

from typing import Any

from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from channels.sessions import SessionMiddlewareStack
from django.urls import path

from chat_security.websocket import ChatSecurityWebSocketMiddleware

from .consumers import AgentConsumer, ChatConsumer

#: The routes below ``ws/chat/``: every one of them is identified by the middleware.
chat_urlpatterns = [path("", ChatConsumer.as_asgi(), name="chat")]


def websocket_application() -> Any:
    """The ``websocket`` branch of the ASGI router (``ALLOWED_HOSTS`` is read now)."""
    chat = ChatSecurityWebSocketMiddleware(URLRouter(chat_urlpatterns))
    return AllowedHostsOriginValidator(
        URLRouter(
            [
                # The session lets the middleware bind the token's user to the chat
                # session (subject_changed), as the HTTP middleware does.
                path("ws/chat/", SessionMiddlewareStack(chat)),
                path("ws/agent/", SessionMiddlewareStack(AgentConsumer.as_asgi())),
            ]
        )
    )
