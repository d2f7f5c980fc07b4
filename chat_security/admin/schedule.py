"""**Turn on at** and **Cancel** beside an integration's switch (SPEC §15).

The CLI's ``security on --at`` and ``security cancel`` behind a form: the
same store methods (``SecurityConfig.schedule_on`` and ``.cancel_schedule``),
which own the rules (a time to come, a switch that is off), write the audit
entry and raise the key-store version. Nothing is written when the time
comes: every worker's snapshot turns the switch on by itself.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from ..exceptions import KeyStateError
from ..integrations import DEFAULT_INTEGRATION
from ..models import SecurityConfig
from ..timefmt import utc
from . import data as admin_data
from .panel import DeveloperPanelMixin, _actor, csrf_protect_m, integration_form


def _of(target: str) -> str:
    return "" if target == DEFAULT_INTEGRATION else " " + _("for %s") % target


class ScheduleMixin(DeveloperPanelMixin):
    """Scheduling the switch to turn on, and cancelling that; mixed into the panel."""

    @csrf_protect_m
    def schedule_security_view(self, request: HttpRequest) -> HttpResponse:
        target = self._target(request)
        if not isinstance(target, str):
            return target
        form = integration_form("schedule_form", target, request.POST)
        if not form.is_valid():
            return self.render_panel(request, target, schedule_form=form)
        at = form.cleaned_data["at"]
        try:
            SecurityConfig.schedule_on(at, _actor(request), integration=target)
        except KeyStateError as exc:  # in the past, or switched on meanwhile
            form.add_error("at", f"{capfirst(str(exc))}.")
            return self.render_panel(request, target, schedule_form=form)
        message = _("Web chat security%(of)s will turn on at %(at)s.") % {
            "of": _of(target),
            "at": utc(at.timestamp()),
        }
        return self._done(request, message, admin_data.anchor(target, "security"))

    @csrf_protect_m
    def cancel_schedule_view(self, request: HttpRequest) -> HttpResponse:
        target = self._target(request)
        if not isinstance(target, str):
            return target
        try:
            SecurityConfig.cancel_schedule(_actor(request), integration=target)
        except KeyStateError as exc:  # cancelled, switched or due meanwhile
            return self.render_panel(request, action_error=f"{capfirst(str(exc))}.")
        message = _("The scheduled switch-on%(of)s was cancelled; security stays off.")
        return self._done(
            request, message % {"of": _of(target)}, admin_data.anchor(target, "security")
        )
