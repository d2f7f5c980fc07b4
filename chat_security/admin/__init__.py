"""The admin: the Developer – WebChat panel, the audit log and chat contacts.

Django's autodiscovery imports this package, which registers the ModelAdmins.
Its modules: ``panel`` (the panel's plumbing, switches, secrets, revocation of
keys and the tester), ``keypairs`` (public keys, service and signing key
pairs), ``key_sources`` (an integration's identity provider: *Take keys from
an identity provider*, *Refresh now*, *Remove key source*), ``integrations``
(*Add integration*, *Remove integration*), ``schedule`` (*Turn on at* and
*Cancel* beside a switch),
``revocations`` (*Revoke a user* and the read-only list of revoked users),
``data`` (what the panel shows), ``forms`` and ``contacts`` (the contact admin
with the GDPR deletion). The
token tester's explanations are ``chat_security.diagnosis``, which the CLI's
``verify`` shares.
Nothing outside this package imports it (tests/test_layout.py).

``SecurityConfig``'s changelist *is* the panel, so the admin index links to it
under the app. None of the model's stock add/change/delete views exist: the
switch and the keys change only through the panel's confirmed, audited
actions (panel.py), which call the same manager methods as the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import URLPattern, path

from ..models import AuditEntry, SecurityConfig
from . import contacts  # noqa: F401  (contact admin with the GDPR delete action)
from .integrations import IntegrationsMixin
from .key_sources import KeySourcesMixin
from .keypairs import KeyPairsMixin
from .panel import can_manage, can_test
from .revocations import RevokeUserMixin  # also registers the revoked-users list
from .schedule import ScheduleMixin

# ModelAdmin is generic in django-stubs only (no __class_getitem__ at run time).
if TYPE_CHECKING:
    _ConfigModelAdmin = admin.ModelAdmin[SecurityConfig]
    _AuditModelAdmin = admin.ModelAdmin[AuditEntry]
else:
    _ConfigModelAdmin = _AuditModelAdmin = admin.ModelAdmin


@admin.register(SecurityConfig)
class SecurityConfigAdmin(
    RevokeUserMixin,
    KeyPairsMixin,
    KeySourcesMixin,
    IntegrationsMixin,
    ScheduleMixin,
    _ConfigModelAdmin,
):
    """The panel. Admins (manage_keys) see everything; support (test_tokens) the tester."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return can_test(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_test(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_manage(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        def wrap(view: Any) -> Any:
            return self.admin_site.admin_view(view)

        info = self.opts.app_label, self.opts.model_name
        return [
            path("", wrap(self.panel_view), name="{}_{}_changelist".format(*info)),
            path("security/", wrap(self.security_view), name="chat_security_security"),
            path(
                "security/schedule/",
                wrap(self.schedule_security_view),
                name="chat_security_schedule_security",
            ),
            path(
                "security/cancel/",
                wrap(self.cancel_schedule_view),
                name="chat_security_cancel_schedule",
            ),
            path(
                "secret/generate/",
                wrap(self.generate_secret_view),
                name="chat_security_generate_secret",
            ),
            path(
                "secret/rotate/", wrap(self.rotate_secret_view), name="chat_security_rotate_secret"
            ),
            path("key/revoke/", wrap(self.revoke_view), name="chat_security_revoke_key"),
            path("user/revoke/", wrap(self.revoke_user_view), name="chat_security_revoke_user"),
            path(
                "public-key/add/",
                wrap(self.add_public_key_view),
                name="chat_security_add_public_key",
            ),
            path(
                "service-key/generate/",
                wrap(self.service_key_view),
                name="chat_security_service_key",
            ),
            path(
                "service-key/<str:kid>/public.pem",
                wrap(self.service_key_pem_view),
                name="chat_security_service_key_pem",
            ),
            path(
                "service-key/<str:kid>/public.jwk",
                wrap(self.service_key_jwk_view),
                name="chat_security_service_key_jwk",
            ),
            path(
                "signing-key/generate/",
                wrap(self.generate_signing_key_view),
                name="chat_security_generate_signing_key",
            ),
            path(
                "signing-key/rotate/",
                wrap(self.rotate_signing_key_view),
                name="chat_security_rotate_signing_key",
            ),
            path(
                "integration/add/",
                wrap(self.add_integration_view),
                name="chat_security_add_integration",
            ),
            path(
                "integration/remove/",
                wrap(self.remove_integration_view),
                name="chat_security_remove_integration",
            ),
            path(
                "key-source/add/",
                wrap(self.add_key_source_view),
                name="chat_security_add_key_source",
            ),
            path(
                "key-source/refresh/",
                wrap(self.refresh_key_source_view),
                name="chat_security_refresh_key_source",
            ),
            path(
                "key-source/remove/",
                wrap(self.remove_key_source_view),
                name="chat_security_remove_key_source",
            ),
            path("test-token/", wrap(self.test_token_view), name="chat_security_test_token"),
        ]


@admin.register(AuditEntry)
class AuditEntryAdmin(_AuditModelAdmin):
    """Read-only: entries are written by the key store, never edited or deleted here."""

    list_display = ("at", "actor", "action", "kid", "detail")
    list_filter = ("action",)
    search_fields = ("actor", "kid", "detail")
    date_hierarchy = "at"
    readonly_fields = ("at", "actor", "action", "kid", "detail")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_manage(request) or super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
