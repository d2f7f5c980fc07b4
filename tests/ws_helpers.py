"""WebSocket test helpers: an echo consumer behind the middleware, and protocol assertions."""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.routing import URLRouter
from channels.sessions import SessionMiddlewareStack
from channels.testing import WebsocketCommunicator
from django.urls import path

from chat_security.websocket import SUBPROTOCOL, ChatSecurityWebSocketMiddleware

PATH = "/ws/echo/"


class Echo(AsyncJsonWebsocketConsumer):
    """Echoes each message with who the middleware says is talking."""

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        identity = self.scope.get("chat_identity")
        if content.get("type") == "probe":  # what the application can see of the handshake
            await self.send_json(
                {
                    "subprotocols": self.scope.get("subprotocols"),
                    "protocol_headers": [
                        v.decode()
                        for k, v in self.scope["headers"]
                        if k == b"sec-websocket-protocol"
                    ],
                    "anonymous_id": identity.anonymous_id,
                    "claims": identity.claims,
                }
            )
            return
        await self.send_json(
            {"echo": content, "user": identity.user_id, "anonymous": identity.anonymous}
        )


class Refuser(AsyncJsonWebsocketConsumer):
    """An application that closes instead of accepting."""

    async def connect(self) -> None:
        await self.close(code=4000)


def router() -> URLRouter:
    return URLRouter([path("ws/echo/", Echo.as_asgi()), path("ws/refuse/", Refuser.as_asgi())])


def guarded(**kwargs: Any) -> ChatSecurityWebSocketMiddleware:
    """The echo consumer behind the middleware (what asgi.py would build)."""
    return ChatSecurityWebSocketMiddleware(router(), **kwargs)


def guarded_with_session() -> Any:
    return SessionMiddlewareStack(guarded())


async def open_socket(
    app: Any,
    token: str | None = None,
    *,
    via: str = "subprotocol",
    path: str = PATH,
    headers: list[tuple[bytes, bytes]] | None = None,
    subprotocols: list[str] | None = None,
) -> WebsocketCommunicator:
    """Connect (the middleware always accepts) and hand over ``token`` by ``via``."""
    if subprotocols is None:
        subprotocols = [SUBPROTOCOL]
        if via == "subprotocol" and token is not None:
            subprotocols.append(token)
    comm = WebsocketCommunicator(app, path, headers=headers, subprotocols=subprotocols)
    connected, chosen = await comm.connect(timeout=3)
    assert connected, chosen
    assert chosen == (SUBPROTOCOL if SUBPROTOCOL in subprotocols else None)
    if via == "identify" and token is not None:
        await comm.send_json_to({"type": "identify", "token": token})
    return comm


async def expect_close(comm: WebsocketCommunicator, code: int, reason: str, timeout=3.0) -> dict:
    """The error frame then the close, both naming ``reason``; returns the error frame."""
    error = json.loads(await comm.receive_from(timeout))
    assert error["type"] == "error" and error["error"] == reason, error
    assert isinstance(error["detail"], str) and error["detail"]
    assert "\n" not in error["detail"]
    closing = await comm.receive_output(timeout)
    assert closing == {"type": "websocket.close", "code": code, "reason": reason}
    assert len(reason.encode()) <= 123
    return error


async def expect_identified(comm: WebsocketCommunicator, user: str | None, timeout=3.0) -> dict:
    message = await comm.receive_json_from(timeout)
    assert message["type"] == "identified", message
    assert message["user"] == {"id": user, "verified": user is not None}
    return message


async def finish(comm: WebsocketCommunicator) -> None:
    """Tell the application the client went away, and wait for it to end."""
    await comm.send_input({"type": "websocket.disconnect", "code": 1000})
    await comm.wait(3)
