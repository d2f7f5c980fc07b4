"""The demo chat's messages, keyed by the verified user id (or an anonymous id)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Message(models.Model):
    """One chat line. ``user_id`` is the token's ``sub``, or the anonymous cookie id."""

    class Sender(models.TextChoices):
        USER = "user", "visitor"
        AGENT = "agent", "agent"
        BOT = "bot", "bot"

    user_id = models.CharField(max_length=255, db_index=True)
    anonymous = models.BooleanField(default=False)
    sender = models.CharField(max_length=8, choices=Sender.choices, default=Sender.USER)
    #: the staff member's username for agent replies ("bot" for the demo bot)
    author = models.CharField(max_length=150, blank=True)
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(
                fields=["anonymous", "user_id", "created_at"], name="chat_msg_conversation"
            )
        ]

    def __str__(self) -> str:
        who = "anonymous " if self.anonymous else ""
        return f"{self.sender} ({who}{self.user_id}): {self.text[:40]}"

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.pk,
            "text": self.text,
            "sender": self.sender,
            "created_at": self.created_at.isoformat(),
        }
