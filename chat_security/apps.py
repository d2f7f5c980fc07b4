from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChatSecurityConfig(AppConfig):
    name = "chat_security"
    verbose_name = _("Web chat security")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, deploy_checks, receivers  # noqa: F401  (registers checks, receivers)
        from .log import install

        install()  # keeps tokens and private data out of the package's log records
        from .metrics import apply_setting

        apply_setting()  # imports prometheus_client only when METRICS is on
