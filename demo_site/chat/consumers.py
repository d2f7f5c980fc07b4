"""The demo's WebSocket consumers: the visitor's chat and the agents' live page.

``ChatConsumer`` (``ws/chat/``) sits behind ``ChatSecurityWebSocketMiddleware``:
it trusts only ``scope["chat_identity"]``, exactly as the HTTP API trusts
``request.chat_identity``, and stores messages the same way (same model, same
conversation key, same text rules). ``AgentConsumer`` (``ws/agent/``) sits
behind Channels' ``SessionMiddlewareStack``: agents are staff who logged in to
the site, not chat users with tokens. It reads the login from the database
itself, at connect, before each message it would pass on and every
``DEMO_AGENT_RECHECK_SECONDS``, so a demotion, deactivation or logout made
in any process ends the socket (4403 ``staff_only``) before the next visitor
message reaches it.

A database error in a handler closes either socket with 4503 ``unavailable``
(``outage.OutageAwareConsumer``), never a bare 1011.

Frames from the server are the HTTP API's shapes: ``{"type": "message",
"message": {...}}``, and ``{"type": "error", "error": <code>, "detail": ...}``
for a refused frame (the socket stays open). The middleware's own frames
(``identified``, ``token_expiring``, the error before a close) come first.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import import_module
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.core.exceptions import ValidationError
from django.utils.crypto import constant_time_compare

from chat_security import ChatIdentity

from . import bot, live
from .api import BadRequest, clean_text, conversation_of, touch_contact
from .models import Message
from .outage import OutageAwareConsumer

logger = logging.getLogger("demo_site.chat")

CLOSE_NOT_STAFF = 4403
MAX_USER_ID = 255
#: Default of ``DEMO_AGENT_RECHECK_SECONDS``: how long an idle agent socket outlives its login.
AGENT_RECHECK_SECONDS = 1.0


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


class ChatConsumer(JsonErrors, OutageAwareConsumer):
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


def _session_hash_holds(user: Any, session_hash: Any) -> bool:
    """The password the login was made with still stands (Django's ``get_user`` rule)."""
    if not hasattr(user, "get_session_auth_hash"):
        return True
    if not isinstance(session_hash, str) or not session_hash:
        return False
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return any(constant_time_compare(session_hash, h) for h in hashes)


def logged_in_agent(session_key: str | None) -> Any:
    """The active staff user logged in by ``session_key``, read from the database now; else None.

    The rules of ``request.user`` (the session exists and has not expired, its
    backend still returns the user — ``ModelBackend`` refuses inactive users —
    and the password hash it was made with still holds), without
    ``django.contrib.auth.get_user``'s writes: a socket cannot hand the browser
    a new session cookie, so it must not cycle or flush the session.
    """
    if not session_key:
        return None
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        user_id = get_user_model()._meta.pk.to_python(session[SESSION_KEY])
        backend_path = session[BACKEND_SESSION_KEY]
    except (KeyError, ValidationError):
        return None  # no such session (ended, expired), or no login in it
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    user = load_backend(backend_path).get_user(user_id)
    if not _is_agent(user) or not _session_hash_holds(user, session.get(HASH_SESSION_KEY)):
        return None
    return user


def recheck_seconds() -> float:
    return float(getattr(settings, "DEMO_AGENT_RECHECK_SECONDS", AGENT_RECHECK_SECONDS))


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


class AgentConsumer(JsonErrors, OutageAwareConsumer):
    """A staff member's agent page: every visitor message in, replies out.

    The login is read from the database (:func:`logged_in_agent`) at connect,
    before each message passed on or reply stored, and every
    ``DEMO_AGENT_RECHECK_SECONDS`` while the socket is idle: the database is
    where a logout, a deactivation or a demotion made in any process shows.
    """

    agent_pk: Any = None
    joined = False
    ended = False
    ticker: asyncio.Task[None] | None = None

    def session_key(self) -> str | None:
        return getattr(self.scope.get("session"), "session_key", None)

    async def connect(self) -> None:
        await self.accept()  # then close with a code the page can read (not a bare 1006)
        user = await database_sync_to_async(logged_in_agent)(self.session_key())
        if user is None:
            await self.end_staff("The agent socket is for logged-in staff.")
            return
        self.scope["user"], self.agent_pk = user, user.pk
        if self.channel_layer is not None:
            await self.channel_layer.group_add(live.AGENTS_GROUP, self.channel_name)
            self.joined = True
        self.ticker = asyncio.create_task(self.recheck_while_open(recheck_seconds()))

    async def still_an_agent(self) -> bool:
        """The login still stands; if not, the socket is closed (4403) and False returned."""
        if self.ended:
            return False
        user = await database_sync_to_async(logged_in_agent)(self.session_key())
        if self.ended:
            return False
        if user is not None and user.pk == self.agent_pk:
            self.scope["user"] = user
            return True
        await self.end_staff("Your staff login has ended; log in again.")
        return False

    async def recheck_while_open(self, seconds: float) -> None:
        """The idle socket's check: no visitor message needs to come for it to end."""
        while not self.ended:
            await asyncio.sleep(seconds)
            try:
                await self.still_an_agent()
            except Exception as exc:  # noqa: BLE001 - fail closed, from this task too
                await self.close_unavailable(exc)

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
        if not await self.still_an_agent():
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
        # Checked per message: a demoted agent must not read the next one.
        if not await self.still_an_agent():
            return
        await self.send_json(
            {
                "type": "message",
                "message": event["message"],
                "conversation": event["conversation"],
                "author": event["author"],
            }
        )

    async def end_staff(self, detail: str) -> None:
        await self.end()
        await self.send_error("staff_only", detail)
        await self.close(code=CLOSE_NOT_STAFF, reason="staff_only")

    async def close_unavailable(self, exc: BaseException) -> None:
        if not self.ended:
            await self.end()
            await super().close_unavailable(exc)

    async def end(self) -> None:
        """Nothing more reaches this socket: out of the group, the check stopped."""
        self.ended = True
        if self.ticker is not None and self.ticker is not asyncio.current_task():
            self.ticker.cancel()
        if self.joined:
            self.joined = False
            await self.channel_layer.group_discard(live.AGENTS_GROUP, self.channel_name)

    async def disconnect(self, code: int) -> None:
        await self.end()
