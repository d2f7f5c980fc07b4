from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "demo_site.chat"
    label = "chat"
    verbose_name = "Demo chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chat_security import contact_deleting

        from .receivers import delete_messages

        contact_deleting.connect(delete_messages, dispatch_uid="demo_site.chat.delete_messages")
