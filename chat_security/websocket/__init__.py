"""Guards Django Channels WebSockets with the same engine, rules and codes as HTTP (SPEC §10).

Wrap the application that serves chat sockets, typically a ``URLRouter``::

    "websocket": AllowedHostsOriginValidator(
        ChatSecurityWebSocketMiddleware(URLRouter(websocket_urlpatterns))
    ),

How one connection runs. The socket is identified before the inner
application starts: by the token that follows ``chat-security`` in the
subprotocol list, or — the handshake accepted first, since the client needs
an open socket to send it — by a first ``{"type": "identify", "token": ...}``
message. The inner application then gets a ``websocket.connect`` of its own;
its ``websocket.accept`` goes out (selecting ``chat-security`` when offered)
unless the handshake was accepted already, followed by ``identified``. Every
refusal accepts before it closes: a close before accept reaches a browser as
1006 and says nothing. From then on the inner application's ``receive`` pulls
frames from the server through one check — no extra task or queue, per
connection or per message: ``identify`` frames are renewals handled here,
other JSON objects pass through untouched, anything else closes with 4400.
Verification runs once per token; messages never re-verify. The engine runs
in the event loop when the keyring can answer from memory, and in the
database thread (``database_sync_to_async``) whenever it may query.

How an open connection learns of a change made anywhere (STYLE habit 10):
one watcher task per event loop, started with the first identified
connection and ended when none remain, ticks every
``min(KEY_CACHE_SECONDS, 1 s) / 2``. Each tick asks
:func:`keyring.get_snapshot` once (which reads the database at most once per
``KEY_CACHE_SECONDS`` per process, whatever the number of sockets); when the
snapshot object changed it re-verifies every connection's current token in
one thread hop (a dict hit per token while nothing changed) and closes those
that now fail, so a change is in force within ``KEY_CACHE_SECONDS`` + one
tick. Each tick also applies the token deadlines (``token_expiring`` at
``refresh_at``, the close at ``exp + LEEWAY``), with ``clock.now()``.

Close codes: 4401 + the §4 code, 4503 ``unavailable`` (key store unreadable),
4400 + a short protocol reason. Every close the middleware makes is preceded
by ``{"type": "error", "error": <reason>, "detail": <one line>}``: some ASGI
servers (daphne) drop the close reason. Neither ever carries token material.

The package's modules: ``protocol`` (the wire: handshake, frames, close
codes; no Channels), ``connection`` (one socket), ``watcher`` (live
revocation). Only this package needs Channels; nothing else in
``chat_security`` imports it. Like every module that reaches the models (and
Channels' own ``AuthMiddlewareStack``), import it in ``asgi.py`` after
``get_asgi_application()``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..integrations import DEFAULT
from ..placement import QUERY_TOKEN_NAMES, query_has_token
from .connection import Connection
from .protocol import (
    CLOSE_PROTOCOL_ERROR,
    CLOSE_REFUSED,
    CLOSE_UNAVAILABLE,
    DEFAULT_IDENTIFY_TIMEOUT,
    MAX_FRAME_BYTES,
    QUERY_DETAIL,
    REFRESH_FRACTION,
    SUBPROTOCOL,
    UNAVAILABLE_DETAIL,
    ASGIApp,
    ProtocolError,
    Receive,
    Scope,
    Send,
    identify_timeout,
    identify_token,
    parse_frame,
    subprotocol_token,
    tick_seconds,
    token_times,
)
from .watcher import recheck_tokens

__all__ = [
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_REFUSED",
    "CLOSE_UNAVAILABLE",
    "ChatSecurityWebSocketMiddleware",
    "DEFAULT_IDENTIFY_TIMEOUT",
    "MAX_FRAME_BYTES",
    "ProtocolError",
    "QUERY_DETAIL",
    "QUERY_TOKEN_NAMES",
    "REFRESH_FRACTION",
    "SUBPROTOCOL",
    "UNAVAILABLE_DETAIL",
    "identify_timeout",
    "identify_token",
    "parse_frame",
    "query_has_token",
    "recheck_tokens",
    "subprotocol_token",
    "tick_seconds",
    "token_times",
]


class ChatSecurityWebSocketMiddleware:
    """ASGI middleware that identifies chat WebSockets (SPEC §10).

    The inner application sees ``scope["chat_identity"]`` (a
    :class:`~chat_security.identity_types.ChatIdentity`, as HTTP's
    ``request.chat_identity``). The object is updated in place when the client
    renews its token or an anonymous socket identifies, so read it when needed
    rather than copying its fields at connect. Other scope types pass through.
    """

    def __init__(
        self,
        inner: ASGIApp,
        *,
        integrations: Sequence[str] | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self.inner = inner
        self.max_frame_bytes = max_frame_bytes
        if isinstance(integrations, str):
            raise TypeError("integrations is a list of names: integrations=['ios']")
        #: the integrations whose tokens this socket takes (SPEC §13); the token's
        #: iss picks one when there are several
        self.integrations = tuple(integrations or ()) or DEFAULT

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "websocket":
            await self.inner(scope, receive, send)
            return
        await Connection(
            self.inner, self.max_frame_bytes, scope, receive, send, self.integrations
        ).run()
