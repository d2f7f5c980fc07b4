from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "demo_site.chat"
    label = "chat"
    verbose_name = "Demo chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from chat_security import anonymous_linked, contact_deleting

        from .receivers import delete_messages, link_on_login, move_messages

        contact_deleting.connect(delete_messages, dispatch_uid="demo_site.chat.delete_messages")
        anonymous_linked.connect(move_messages, dispatch_uid="demo_site.chat.move_messages")
        user_logged_in.connect(link_on_login, dispatch_uid="demo_site.chat.link_on_login")
