"""The demo chat's part of a GDPR deletion (``chat_security.contact_deleting``)."""

from __future__ import annotations

from typing import Any

from .models import Message


def delete_messages(
    sender: Any = None, *, user_id: str, contact: Any = None, **kwargs: Any
) -> dict[str, int]:
    """Delete every message of the contact ``user_id``; say how many."""
    anonymous = bool(getattr(contact, "anonymous", False))
    deleted, _by_model = Message.objects.filter(user_id=user_id, anonymous=anonymous).delete()
    return {"messages": deleted}
