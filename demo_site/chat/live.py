"""Live delivery of chat messages over the channel layer.

Two kinds of group:

* one per conversation (a verified user id, or an anonymous visitor's id):
  every open socket of that person, on every device, is in it and receives
  ``{"type": "message", "message": {...}}``, the shape the HTTP API returns;
* ``AGENTS_GROUP``: every open agent page, which also learns the conversation
  (and the agent's name for replies).

Whatever stores a message (the HTTP API, the agent page's form, the sockets)
announces it here, so a message written anywhere reaches everyone watching.
Delivery is best effort: a message is stored first, and a channel layer that
cannot be reached never fails the request that stored it (the HTTP widget
still sees it in its history).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from .models import Message

logger = logging.getLogger("demo_site.chat")

AGENTS_GROUP = "chat.agents"
#: Group events: the consumer method that handles each (``chat.message`` -> ``chat_message``).
VISITOR_EVENT = "chat.message"
AGENT_EVENT = "agent.message"


def conversation_group(anonymous: bool, key: str) -> str | None:
    """The group of one conversation; ``None`` for a visitor without an id (nothing shared).

    Group names allow only a few ASCII characters and under 100 of them, while a
    user id is any printable ASCII up to 255: hence the digest.
    """
    if not key:
        return None
    kind = "anon" if anonymous else "user"
    digest = hashlib.sha256(f"{kind}:{key}".encode()).hexdigest()[:40]
    return f"chat.{kind}.{digest}"


def conversation_json(message: Message) -> dict[str, Any]:
    return {"user_id": message.user_id, "anonymous": message.anonymous}


def visitor_event(message: Message) -> dict[str, Any]:
    return {"type": VISITOR_EVENT, "message": message.as_json()}


def agent_event(message: Message) -> dict[str, Any]:
    return {
        "type": AGENT_EVENT,
        "message": message.as_json(),
        "conversation": conversation_json(message),
        "author": message.author,
    }


async def abroadcast(message: Message) -> bool:
    """Send ``message`` to its conversation and to the agents; False if nobody could be told."""
    layer = get_channel_layer()
    if layer is None:
        return False
    try:
        group = conversation_group(message.anonymous, message.user_id)
        if group is not None:
            await layer.group_send(group, visitor_event(message))
        await layer.group_send(AGENTS_GROUP, agent_event(message))
    except Exception as exc:  # noqa: BLE001 - stored already; live delivery is a bonus
        logger.warning("chat message %s not broadcast: %s", message.pk, type(exc).__name__)
        return False
    return True


def publish(message: Message) -> None:
    """From synchronous code: broadcast ``message`` once the transaction that stored it commits."""
    transaction.on_commit(lambda: _broadcast_now(message))


def _broadcast_now(message: Message) -> None:
    try:
        async_to_sync(abroadcast)(message)
    except RuntimeError as exc:  # sync code called straight from an event loop's thread
        logger.warning("chat message %s not broadcast: %s", message.pk, exc)
