"""The demo's WebSocket consumers: the visitor's chat and the agents' live page.

``ChatConsumer`` (``ws/chat/``) sits behind ``ChatSecurityWebSocketMiddleware``:
it trusts only ``scope["chat_identity"]``, exactly as the HTTP API trusts
``request.chat_identity``, and stores messages the same way (same model, same
conversation key, same text rules). ``AgentConsumer`` (``ws/agent/``) sits
behind Channels' ``AuthMiddlewareStack``: agents are staff who logged in to
the site, not chat users with tokens.

Frames from the server are the HTTP API's shapes: ``{"type": "message",
"message": {...}}``, and ``{"type": "error", "error": <code>, "detail": ...}``
for a refused frame (the socket stays open). The middleware's own frames
(``identified``, ``token_expiring``, the error before a close) come first.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model

from chat_security import ChatIdentity

from . import bot, live
from .api import BadRequest, clean_text, conversation_of, touch_contact
from .models import Message

logger = logging.getLogger("demo_site.chat")

CLOSE_NOT_STAFF = 4403
MAX_USER_ID = 255


def store(identity: ChatIdentity, text: str) -> Message:
    """The visitor's message, kept exactly as ``POST /chat/api/messages`` keeps it."""
    anonymous, key = conversation_of(identity)
    message = Message.objects.create(user_id=key, anonymous=anonymous, text=text)
    touch_contact(identity)
    return message


def store_bot_answer(identity: ChatIdentity, text: str) -> Message | None:
    answer = bot.answer(identity, text)
    if answer is None:
        return None
    anonymous, key = conversation_of(identity)
    return Message.objects.create(
        user_id=key, anonymous=anonymous, sender=Message.Sender.BOT, author=bot.AUTHOR, text=answer
    )


def greeting_json(text: str) -> dict[str, Any]:
    """The greeting is said to one connection and not kept: every page load opens one."""
    return {"id": None, "text": text, "sender": Message.Sender.BOT.value, "created_at": None}


class JsonErrors:
    async def send_error(self: Any, code: str, detail: str) -> None:
        await self.send_json({"type": "error", "error": code, "detail": detail})


class ChatConsumer(JsonErrors, AsyncJsonWebsocketConsumer):
    """One visitor's socket: ``{"type": "message", "text": ...}`` in, messages out."""

    group: str | None = None
    greeted = False

    @property
    def identity(self) -> ChatIdentity:
        return self.scope["chat_identity"]

    async def connect(self) -> None:
        if not isinstance(self.scope.get("chat_identity"), ChatIdentity):
            # Fail closed: without the middleware's verdict nobody is identified.
            logger.error("ws/chat/ reached without ChatSecurityWebSocketMiddleware")
            await self.close(code=1011)
            return
        await self.accept()
        await self.follow_identity()

    async def follow_identity(self) -> None:
        """Join the conversation's group; greet a verified user once per connection.

        The middleware updates the identity in place when an anonymous socket
        identifies, so this runs again before each message.
        """
        anonymous, key = conversation_of(self.identity)
        group = live.conversation_group(anonymous, key) if self.channel_layer else None
        if group != self.group:
            if self.group is not None:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            if group is not None:
                await self.channel_layer.group_add(group, self.channel_name)
            self.group = group
        if not anonymous and not self.greeted:
            self.greeted = True
            text = await database_sync_to_async(bot.greeting)(self.identity)
            if text:
                await self.send_json({"type": "message", "message": greeting_json(text)})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content.get("type") != "message":
            await self.send_error("unknown_type", 'Send {"type": "message", "text": "..."}.')
            return
        try:
            text = clean_text(content.get("text"))
        except BadRequest as exc:
            await self.send_error(exc.code, exc.detail)
            return
        await self.follow_identity()
        identity = self.identity
        await self.deliver(await database_sync_to_async(store)(identity, text))
        answer = await database_sync_to_async(store_bot_answer)(identity, text)
        if answer is not None:
            await self.deliver(answer)

    async def deliver(self, message: Message) -> None:
        delivered = await live.abroadcast(message)
        if self.group is None or not delivered:  # no group to hear it from: tell this socket
            await self.send_json({"type": "message", "message": message.as_json()})

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": "message", "message": event["message"]})

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None


def _is_agent(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def still_an_agent(scope: dict[str, Any]) -> bool:
    """The agent's login still stands: session not ended, user still active staff."""
    session, user = scope.get("session"), scope.get("user")
    key = getattr(session, "session_key", None)
    if not key or not session.exists(key) or not _is_agent(user):
        return False
    fresh = get_user_model().objects.filter(pk=user.pk).first()
    return _is_agent(fresh)


def reply_target(value: Any) -> tuple[bool, str]:
    """``(anonymous, user_id)`` of a reply's ``conversation`` object."""
    if not isinstance(value, dict):
        raise BadRequest(400, "invalid_conversation", "'conversation' must be an object.")
    user_id, anonymous = value.get("user_id"), value.get("anonymous", False)
    if not isinstance(user_id, str) or not isinstance(anonymous, bool):
        raise BadRequest(
            400, "invalid_conversation", "'conversation' needs a string user_id and a boolean."
        )
    if not 0 < len(user_id) <= MAX_USER_ID:
        raise BadRequest(400, "invalid_conversation", "This visitor has no id to reply to.")
    return anonymous, user_id


class AgentConsumer(JsonErrors, AsyncJsonWebsocketConsumer):
    """A staff member's agent page: every visitor message in, replies out."""

    joined = False

    async def connect(self) -> None:
        await self.accept()  # then close with a code the page can read (not a bare 1006)
        if not _is_agent(self.scope.get("user")):
            await self.send_error("staff_only", "The agent socket is for logged-in staff.")
            await self.close(code=CLOSE_NOT_STAFF, reason="staff_only")
            return
        if self.channel_layer is not None:
            await self.channel_layer.group_add(live.AGENTS_GROUP, self.channel_name)
            self.joined = True

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content.get("type") != "reply":
            await self.send_error(
                "unknown_type", 'Send {"type": "reply", "conversation": {...}, "text": "..."}.'
            )
            return
        try:
            anonymous, user_id = reply_target(content.get("conversation"))
            text = clean_text(content.get("text"))
        except BadRequest as exc:
            await self.send_error(exc.code, exc.detail)
            return
        if not await database_sync_to_async(still_an_agent)(self.scope):
            await self.send_error("staff_only", "Your staff login has ended; log in again.")
            await self.close(code=CLOSE_NOT_STAFF, reason="staff_only")
            return
        message = await database_sync_to_async(Message.objects.create)(
            user_id=user_id,
            anonymous=anonymous,
            sender=Message.Sender.AGENT,
            author=self.scope["user"].get_username(),
            text=text,
        )
        if not await live.abroadcast(message) or not self.joined:
            await self.agent_message(live.agent_event(message))

    async def agent_message(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {
                "type": "message",
                "message": event["message"],
                "conversation": event["conversation"],
                "author": event["author"],
            }
        )

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(live.AGENTS_GROUP, self.channel_name)
            self.joined = False
