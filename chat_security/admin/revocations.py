"""Revoke a user from the panel (SPEC §7 ``revoke-user``) and the list of revoked users.

The action is the CLI's ``revoke-user`` behind a confirmation: the same
user-id rule (``tokens.user_id_of``, in the form) and the same store method
(``RevokedUser.objects.revoke``, which writes the audit entry and raises the
key-store version so every worker learns of it), in the user space of the
integration the form names (SPEC §13; ``revoke-user --integration``): one with
its own users has its own revocations, the others share ``default``'s. The
list is a read-only ModelAdmin, like the audit log: support staff may read it,
nobody edits it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import clock
from ..exceptions import KeyStateError
from ..integrations import DEFAULT_USER_SPACE
from ..models import RevokedUser
from ..timefmt import exact_utc
from .forms import RevokeUserForm
from .panel import DeveloperPanelMixin, can_manage, can_test, csrf_protect_m
from .revoked_users import revoke_user_warnings


class RevokeUserMixin(DeveloperPanelMixin):
    """The panel's *Revoke a user* action; mixed into the panel's ModelAdmin."""

    @csrf_protect_m
    def revoke_user_view(self, request: HttpRequest) -> HttpResponse:
        refused = self._require(request, manage=True, method="POST")
        if refused:
            return refused
        form = RevokeUserForm(request.POST)
        if not form.is_valid():
            return self.render_panel(request, revoke_user_form=form)
        user_id = form.cleaned_data["user_id"]
        name = form.cleaned_data["integration"]
        assert form.target is not None  # noqa: S101  (set by clean_integration)
        space = form.target.user_space
        # Named only when it is not default's: a one-chat site reads as before.
        where = "" if space == DEFAULT_USER_SPACE else " " + _("in user space %s") % space
        if not form.cleaned_data["confirm"]:
            return self._confirm(
                request,
                title=_("Revoke user %(user_id)s%(where)s?") % {"user_id": user_id, "where": where},
                crumb=_("Revoke a user"),
                action=reverse(f"{self.admin_site.name}:chat_security_revoke_user"),
                hidden={"user_id": user_id, "integration": name, "confirm": "yes"},
                warnings=revoke_user_warnings(user_id, clock.now(), form.target),
                submit=_("Yes, revoke this user now"),
            )
        try:
            revoked = RevokedUser.objects.revoke(
                user_id, request.user.get_username(), integration=name
            )
        except KeyStateError as exc:  # removed since the form was read: nothing revoked
            return self.render_panel(request, action_error=capfirst(str(exc)))
        message = _(
            "User %(user_id)s is revoked%(where)s. From now on every token of this user "
            "issued before %(at)s is refused (token_revoked), and so is every token of this "
            "user without iat. Tokens issued after that are accepted."
        ) % {"user_id": user_id, "where": where, "at": exact_utc(revoked.revoked_at)}
        return self._done(request, message, "revoke-user")


# ModelAdmin is generic in django-stubs only (no __class_getitem__ at run time).
if TYPE_CHECKING:
    _RevokedUserModelAdmin = admin.ModelAdmin[RevokedUser]
else:
    _RevokedUserModelAdmin = admin.ModelAdmin


@admin.register(RevokedUser)
class RevokedUserAdmin(_RevokedUserModelAdmin):
    """Read-only, newest first: revocations are made by the panel or the CLI, never edited."""

    list_display = ("user_id", "user_space", "revoked_since", "first_revoked", "revoked_by")
    list_display_links = None
    list_filter = ("user_space",)
    search_fields = ("user_id",)
    ordering = ("-revoked_at", "-pk")
    list_per_page = 50
    actions = None
    fields = readonly_fields = (
        "user_id",
        "user_space",
        "revoked_at",
        "first_revoked_at",
        "revoked_by",
    )

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return can_test(request) or super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=gettext_lazy("Revoked at"), ordering="revoked_at")
    def revoked_since(self, obj: RevokedUser) -> str:
        return exact_utc(obj.revoked_at)

    @admin.display(description=gettext_lazy("First revoked at"), ordering="first_revoked_at")
    def first_revoked(self, obj: RevokedUser) -> str:
        return exact_utc(obj.first_revoked_at or obj.revoked_at)

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        panel = reverse(f"{self.admin_site.name}:chat_security_securityconfig_changelist")
        context = {
            "title": _("Revoked users"),
            "can_manage": can_manage(request),
            "panel_url": panel,
            "revoke_url": f"{panel}#revoke-user",
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)
