"""The wire of SPEC §10: handshake, frames, close codes and the settings they read.

Plain functions and constants, no Channels: the connection (``connection``)
and the watcher (``watcher``) apply them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.http.cookie import parse_cookie

from ..conf import app_settings
from ..values import ANONYMOUS_ID_RE

Message = dict[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SUBPROTOCOL = "chat-security"
QUERY_DETAIL = "send the token as a subprotocol or in an identify message, never in the URL"
UNAVAILABLE_DETAIL = "The chat key store cannot be read; try again."
MAX_FRAME_BYTES = 64 * 1024
DEFAULT_IDENTIFY_TIMEOUT = 10.0
REFRESH_FRACTION = 0.75
CLOSE_PROTOCOL_ERROR = 4400
CLOSE_REFUSED = 4401
CLOSE_UNAVAILABLE = 4503


# -- settings -----------------------------------------------------------------------


def identify_timeout() -> float:
    """``WEBSOCKET_IDENTIFY_TIMEOUT`` in seconds (default 10; E017 keeps it in 0–600).

    The settings façade reads the duration; a negative one (or NaN) gets the default.
    """
    timeout = app_settings.WEBSOCKET_IDENTIFY_TIMEOUT
    return timeout if timeout >= 0 else DEFAULT_IDENTIFY_TIMEOUT


def tick_seconds() -> float:
    """The watcher's period: a change is seen within ``KEY_CACHE_SECONDS`` + one tick."""
    return max(0.05, min(app_settings.KEY_CACHE_SECONDS, 1.0) / 2)


# -- the handshake ------------------------------------------------------------------


def subprotocol_token(subprotocols: list[str]) -> str | None:
    """The element after ``chat-security`` (``new WebSocket(url, ["chat-security", token])``)."""
    try:
        at = subprotocols.index(SUBPROTOCOL)
    except ValueError:
        return None
    return subprotocols[at + 1] if at + 1 < len(subprotocols) else None


def app_scope(scope: Scope, offered: bool) -> dict[str, Any]:
    """The inner application's scope: the token is removed from subprotocols and headers."""
    app_scope = dict(scope)
    if offered:
        app_scope["subprotocols"] = [SUBPROTOCOL]
        headers = [
            (name, value)
            for name, value in scope.get("headers", ())
            if bytes(name).lower() != b"sec-websocket-protocol"
        ]
        app_scope["headers"] = [*headers, (b"sec-websocket-protocol", SUBPROTOCOL.encode())]
    return app_scope


def anonymous_id(scope: Scope) -> str | None:
    """The anonymous-id cookie that came with the handshake (it is HttpOnly), if valid."""
    if not app_settings.ANONYMOUS_IDS:
        return None
    cookies = scope.get("cookies")
    if not isinstance(cookies, dict):
        raw = "; ".join(
            bytes(value).decode("latin-1")
            for name, value in scope.get("headers", ())
            if bytes(name).lower() == b"cookie"
        )
        cookies = parse_cookie(raw) if raw else {}
    value = cookies.get(app_settings.ANONYMOUS_COOKIE_NAME, "")
    return value if isinstance(value, str) and ANONYMOUS_ID_RE.fullmatch(value) else None


# -- frames -------------------------------------------------------------------------


class ProtocolError(Exception):
    """A client frame that breaks the protocol: close 4400 with ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def parse_frame(event: Message, limit: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """A ``websocket.receive`` event as a JSON object, or :class:`ProtocolError`."""
    text = event.get("text")
    if not isinstance(text, str):
        raise ProtocolError("binary_frame", "frames must be JSON text, not binary")
    if len(text) > limit or (
        len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit
    ):
        raise ProtocolError("frame_too_large", f"frames are limited to {limit} bytes")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        message = None
    if type(message) is not dict:
        raise ProtocolError("not_json_object", "every frame must be one JSON object")
    return message


def identify_token(message: dict[str, Any], *, required: bool) -> str | None:
    """The token of an ``identify`` message; ``None`` for another message type."""
    if message.get("type") != "identify":
        if required:
            raise ProtocolError(
                "identify_expected", 'the first message must be {"type": "identify", "token": ...}'
            )
        return None
    token = message.get("token")
    if not isinstance(token, str):
        raise ProtocolError("identify_without_token", "identify needs a string token")
    return token


def token_times(claims: dict[str, Any], now: float) -> tuple[float | None, int | None]:
    """``(expires_at, refresh_at)``: refresh at 75 % between iat (or now) and exp."""
    exp: Any = claims.get("exp")  # any JSON value until its type is checked
    if type(exp) not in (int, float):
        return None, None
    iat: Any = claims.get("iat")
    start = iat if type(iat) in (int, float) else now
    return exp, int(start + REFRESH_FRACTION * (exp - start))
