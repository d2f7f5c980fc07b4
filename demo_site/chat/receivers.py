"""The demo chat's receivers: GDPR deletion (``chat_security.contact_deleting``) and
anonymous → verified continuity (``user_logged_in``, ``chat_security.anonymous_linked``)."""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest

from chat_security import (
    DEFAULT_USER_SPACE,
    ChatSecurityError,
    anonymous_id_of,
    link_anonymous,
)

from .models import Message

logger = logging.getLogger("demo_site.chat")


def delete_messages(
    sender: Any = None, *, user_id: str, contact: Any = None, **kwargs: Any
) -> dict[str, int]:
    """Delete every message of the contact ``user_id``; say how many.

    The demo's chat is ``default``'s: a contact of another user space (SPEC
    §13) has no messages here, whatever its id.
    """
    if not _demo_space(contact):
        return {"messages": 0}
    anonymous = bool(getattr(contact, "anonymous", False))
    deleted, _by_model = Message.objects.filter(user_id=user_id, anonymous=anonymous).delete()
    return {"messages": deleted}


def move_messages(
    sender: Any = None, *, anonymous_id: str, user_id: str, contact: Any = None, **kwargs: Any
) -> dict[str, int]:
    """The anonymous conversation becomes the user's (agent replies included).

    Only for a user of ``default``'s space, the demo chat's.
    """
    if not _demo_space(contact):
        return {"messages": 0}
    moved = Message.objects.filter(anonymous=True, user_id=anonymous_id).update(
        anonymous=False, user_id=user_id
    )
    return {"messages": moved}


def _demo_space(contact: Any) -> bool:
    """Whether ``contact`` is of the user space the demo chat keys its messages in."""
    return getattr(contact, "user_space", DEFAULT_USER_SPACE) == DEFAULT_USER_SPACE


def link_on_login(
    sender: Any = None, *, request: HttpRequest | None = None, user: Any = None, **kwargs: Any
) -> None:
    """``user_logged_in``: what the visitor wrote before logging in stays theirs.

    The user id is the ``sub`` of this user's chat tokens: the primary key, in
    the demo's claims builder (``claims.demo_claims``) as in the default one.
    """
    anonymous_id = anonymous_id_of(request) if request is not None and user is not None else None
    if anonymous_id is None:
        return
    try:
        link_anonymous(anonymous_id, str(user.pk))
    except ChatSecurityError as exc:  # e.g. this browser's id already went to another user
        logger.warning("anonymous conversation not linked: %s", exc)
    except Exception as exc:  # noqa: BLE001 - logging in matters more than the old conversation
        logger.error("anonymous conversation not linked: %s", type(exc).__name__)
        return  # keep the id: the next login tries again
    # Spent: whoever chats anonymously in this browser after a logout starts anew.
    anonymous_id_of(request, renew=True)
