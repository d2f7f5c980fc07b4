"""Admin for chat contacts: read-only records and the GDPR deletion action.

Contacts are written only from verified tokens, so the admin shows them and
deletes them, nothing else. Every deletion — the bulk action and the single
"Delete" button — goes through :func:`chat_security.identity.delete_contact`,
the function behind ``manage.py chat_security delete-contact``, so receivers
of ``contact_deleting`` (the chat's messages) are deleted too. The contact
holds no private data (``user_payload`` is never stored), so none is shown.
A user's contact lists the anonymous ids merged into it (SPEC §11,
``continuity.link_anonymous``), which a deletion erases along with it.
Contacts are keyed by (user space, user id) (SPEC §13): the list shows each
one's space and filters by it, and a deletion erases that space's contact only.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from .. import identity
from ..exceptions import ChatSecurityError
from ..integrations import DEFAULT_USER_SPACE
from ..models import Contact
from ..templatetags.chat_security_agent import visitor_details

GDPR_ACTION = _("Delete contact and all its data (GDPR)")


def _summary(result: dict[str, Any]) -> str:
    counts = ", ".join(f"{name}: {count}" for name, count in result["deleted"].items())
    return f"{_named(result['user_id'], result.get('user_space'))} ({counts})"


def _named(user_id: str, user_space: str | None) -> str:
    """The user id, after its user space unless that is ``default`` (one-space sites: as before)."""
    if user_space is None or user_space == DEFAULT_USER_SPACE:
        return user_id
    return f"{user_space}: {user_id}"


# ModelAdmin is generic in django-stubs only (no __class_getitem__ at run time).
if TYPE_CHECKING:
    _ContactModelAdmin = admin.ModelAdmin[Contact]
else:
    _ContactModelAdmin = admin.ModelAdmin


@admin.register(Contact)
class ContactAdmin(_ContactModelAdmin):
    list_display = ["user_id", "user_space", "display_name", "email", "anonymous", "updated_at"]
    list_filter = ["user_space", "anonymous"]
    search_fields = ["user_id", "email"]
    ordering = ["-updated_at"]
    actions = ["delete_selected"]
    fieldsets = [
        (None, {"fields": ["user_id", "user_space", "anonymous"]}),
        (
            _("Identity (from the signed token)"),
            {"fields": ["first_name", "last_name", "email", "phone", "locale", "crm_link"]},
        ),
        (_("Data"), {"fields": ["user_data_json", "visitor_card"]}),
        (_("Record"), {"fields": ["created_at", "updated_at"]}),
    ]
    readonly_fields = [
        "user_id",
        "user_space",
        "anonymous",
        "first_name",
        "last_name",
        "email",
        "phone",
        "locale",
        "crm_link",
        "user_data_json",
        "visitor_card",
        "created_at",
        "updated_at",
        "linked_anonymous_ids",
    ]

    # -- read-only ---------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Contact | None = None) -> bool:
        return False

    @admin.display(description=_("name"))
    def display_name(self, obj: Contact) -> str:
        return obj.display_name

    @admin.display(description=_("CRM id"))
    def crm_link(self, obj: Contact) -> str:
        url = obj.crm_url
        if url:
            return format_html(
                '<a href="{}" target="_blank" rel="noopener noreferrer">{}</a>', url, obj.crm_id
            )
        return obj.crm_id or "-"

    @admin.display(description=_("user data"))
    def user_data_json(self, obj: Contact) -> str:
        text = json.dumps(obj.user_data, indent=2, ensure_ascii=False, sort_keys=True)
        return format_html("<pre>{}</pre>", text)

    @admin.display(description=_("Visitor Details card"))
    def visitor_card(self, obj: Contact) -> str:
        # The card's template escapes every value; its output is HTML.
        return render_to_string("chat_security/visitor_details.html", visitor_details(obj))

    def get_fieldsets(self, request: HttpRequest, obj: Contact | None = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is not None and not obj.anonymous:
            # only on a verified user's contact: anonymous contacts are what gets linked
            fieldsets.append(
                (
                    _("Anonymous conversations merged into this contact"),
                    {"fields": ["linked_anonymous_ids"]},
                )
            )
        return fieldsets

    @admin.display(description=_("linked anonymous ids"))
    def linked_anonymous_ids(self, obj: Contact) -> str:
        links = obj.anonymous_links.only("anonymous_id", "linked_at")
        return render_to_string("admin/chat_security/anonymous_links.html", {"links": links})

    # -- deletion (GDPR) -----------------------------------------------------------

    @admin.action(permissions=["delete"], description=GDPR_ACTION)
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[Contact]) -> Any:
        # Django's confirmation page; once confirmed it calls delete_queryset.
        return django_delete_selected(self, request, queryset)

    def _delete(self, request: HttpRequest, contact: Contact) -> None:
        actor = request.user.get_username() if request.user.is_authenticated else ""
        try:
            result = identity.delete_contact(
                contact.user_id, actor=f"admin:{actor}", user_space=contact.user_space
            )
        except ChatSecurityError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(
            request, _("Deleted %(summary)s.") % {"summary": _summary(result)}, messages.SUCCESS
        )

    def delete_model(self, request: HttpRequest, obj: Contact) -> None:
        self._delete(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        for contact in list(queryset):
            self._delete(request, contact)

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        # The admin log keeps the external id only, not the deleted person's name.
        content_type = ContentType.objects.get_for_model(Contact)
        user_id = request.user.pk
        assert user_id is not None  # the admin serves signed-in staff only
        return LogEntry.objects.bulk_create(
            [
                LogEntry(
                    user_id=user_id,
                    content_type=content_type,
                    object_id=str(contact.pk),
                    object_repr=_named(contact.user_id, contact.user_space)[:200],
                    action_flag=DELETION,
                )
                for contact in queryset
            ]
        )
