"""A small demo bot: what a verified identity is for.

It greets a verified user by name when their socket is identified, and
answers "my plan" / "my account" from the user's ``userData`` (the token's
claims, merged into the contact record). An anonymous visitor is told to log
in: nothing a browser merely claims about itself is read back to it.

Plain functions over a :class:`~chat_security.ChatIdentity`; the contact
lookup touches the database, so the consumer calls them in a thread.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from chat_security import ChatIdentity

from .api import MAX_TEXT_CHARS

logger = logging.getLogger("demo_site.chat")

AUTHOR = "bot"
HELP = "Ask me about “my plan” or “my account”."
ANONYMOUS_ANSWER = (
    "I can tell you about your plan and account once you are logged in: "
    "I only answer for customers the site has verified."
)

_WORDS = re.compile(r"[^\w]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _asked(text: str) -> str | None:
    words = " ".join(_WORDS.sub(" ", text.lower()).split())
    for topic in ("plan", "account"):
        if f"my {topic}" in f" {words} ":
            return topic
    return None


def _contact(identity: ChatIdentity) -> Any:
    try:
        return identity.contact
    except Exception as exc:  # noqa: BLE001 - the token's own claims are enough to answer
        logger.warning("bot: contact record unavailable: %s", type(exc).__name__)
        return None


def first_name(identity: ChatIdentity) -> str:
    """The contact's first name, else the first word of the token's ``name``."""
    contact = _contact(identity)
    if contact is not None and contact.first_name:
        return contact.first_name
    name = identity.claims.get("name")
    return name.split()[0] if isinstance(name, str) and name.split() else ""


def user_data(identity: ChatIdentity) -> dict[str, Any]:
    """The user's ``userData``: the contact's (validated, merged), else the token's."""
    contact = _contact(identity)
    data = getattr(contact, "user_data", None)
    if not isinstance(data, dict) or not data:
        data = identity.claims.get("userData")
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str | int | float | bool)}


def _label(key: str) -> str:
    words = _CAMEL.sub(" ", key).replace("_", " ").split()
    return " ".join(words).capitalize() if words else key


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def greeting(identity: ChatIdentity) -> str | None:
    """The hello for a verified user's new connection; ``None`` for anonymous visitors."""
    if identity.anonymous:
        return None
    name = first_name(identity)
    return f"Hello {name}! I'm the demo bot. {HELP}" if name else f"Hello! I'm the demo bot. {HELP}"


def answer(identity: ChatIdentity, text: str) -> str | None:
    """The bot's reply to ``text``, or ``None`` when the bot has nothing to say."""
    topic = _asked(text)
    if topic is None:
        return None
    if identity.anonymous:
        return ANONYMOUS_ANSWER
    data = user_data(identity)
    plan_key = next((k for k in data if k.lower() == "plan"), None)
    if topic == "plan":
        if plan_key is None:
            return "I have no plan on file for you."
        return f"You are on the {_value(data[plan_key])} plan."
    details = [f"{_label(k)}: {_value(v)}" for k, v in data.items() if k != plan_key]
    if not details:
        return "I have no account details on file for you."
    return ("Your account: " + "; ".join(details) + ".")[:MAX_TEXT_CHARS]
