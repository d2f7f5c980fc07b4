"""**Add integration** and **Remove integration** on the panel (SPEC §13).

The CLI's ``integration add`` and ``integration remove`` behind a form and a
confirmation: the same store methods (``Integration.objects.add`` and
``.remove``), which own every rule, write the audit entry and raise the
key-store version so every worker learns of the change.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from .. import clock
from ..exceptions import KeyStateError
from ..integrations import DEFAULT_INTEGRATION
from ..models import Integration, Key, KeySource
from . import data as admin_data
from .forms import IntegrationForm, RemoveIntegrationForm
from .panel import DeveloperPanelMixin, _actor, csrf_protect_m


def usable_kids(name: str) -> list[str]:
    """The kids of ``name``'s keys that still verify, decrypt or are staged to sign."""
    now = clock.now()
    rows = Key.objects.filter(integration__name=name, revoked_at=None).order_by("created_at")
    return [key.kid for key in rows if key.is_usable(now)]


class IntegrationsMixin(DeveloperPanelMixin):
    """Adding and removing integrations; mixed into the panel's ModelAdmin."""

    @csrf_protect_m
    def add_integration_view(self, request: HttpRequest) -> HttpResponse:
        refused = self._require(request, manage=True, method="POST")
        if refused is not None:
            return refused
        form = IntegrationForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                Integration.objects.add(
                    data["name"],
                    issuer=data["issuer"],
                    audience=data["audience"],
                    own_users=data["own_users"],
                    paths=data["paths"],
                    actor=_actor(request),
                )
            except KeyStateError as exc:  # added meanwhile by someone else
                form.add_error(None, f"{capfirst(str(exc))}.")
            else:
                message = _(
                    "Integration %s added; its security is on. Give it a key: generate a "
                    "secret or a signing key pair, or add a public key."
                )
                anchor = admin_data.anchors(data["name"])["integration"]
                return self._done(request, message % data["name"], anchor)
        return self.render_panel(request, add_integration_form=form)

    @csrf_protect_m
    def remove_integration_view(self, request: HttpRequest) -> HttpResponse:
        target = self._target(request)
        if not isinstance(target, str):
            return target
        form = RemoveIntegrationForm(request.POST)
        form.is_valid()  # the name was checked by _target; confirm is a checkbox
        if target == DEFAULT_INTEGRATION:
            return self.render_panel(
                request, action_error=_("The default integration cannot be removed.")
            )
        held = usable_kids(target)
        if held:
            return self.render_panel(request, action_error=_still_holds(target, held))
        if not form.cleaned_data.get("confirm"):
            return self._confirm(
                request,
                title=_("Remove integration %s?") % target,
                crumb=_("Remove integration"),
                action=self._url("chat_security_remove_integration"),
                hidden={"integration": target, "confirm": "yes"},
                warnings=remove_warnings(target),
                submit=_("Yes, remove it"),
            )
        try:
            Integration.objects.remove(target, _actor(request))
        except KeyStateError as exc:  # a key was added since the confirmation page
            return self.render_panel(request, action_error=f"{capfirst(str(exc))}.")
        return self._done(request, _("Integration %s was removed.") % target, "add-integration")


def _still_holds(name: str, kids: list[str]) -> str:
    return _(
        "Integration %(name)s still holds usable keys (%(kids)s): revoke them first, "
        "then remove it."
    ) % {"name": name, "kids": ", ".join(kids)}


def remove_warnings(name: str) -> list[str]:
    """What removing ``name`` (which holds no usable key) does, for the confirmation page."""
    row = Integration.objects.get(name=name)
    warnings = [
        _("Its retired and revoked keys are deleted with it; the audit log keeps their history."),
    ]
    source = KeySource.objects.filter(integration=row).first()
    if source is not None:
        warnings.insert(
            0,
            _(
                "It takes its keys from %s: that key source goes with it, and the keys "
                "fetched from there stop verifying."
            )
            % source.url,
        )
    if row.paths:
        warnings.append(
            _(
                "Its paths (%s) are no longer guarded by it: a request there is checked only "
                "if a path prefix of another integration covers it."
            )
            % ", ".join(row.paths)
        )
    if row.own_users:
        warnings.append(
            _(
                "The contacts and user revocations of its user space (%s) stay in the "
                "database; an integration added later with this name and its own users "
                "finds them again."
            )
            % row.user_space
        )
    warnings.append(_("This cannot be undone."))
    return warnings
