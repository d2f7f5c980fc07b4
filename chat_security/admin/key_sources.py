"""An integration's identity provider on the panel (SPEC §14): its **key source**.

The CLI's ``add-jwks-url``, ``add-oidc-issuer``, ``refresh-keys`` and
``remove-key-source`` behind a form, a button and a confirmation: the same
functions of ``remote.sources``, which own every rule (what may be fetched,
the issuer check), store the set, write the audit entry and raise the
key-store version so every worker learns of the change. What the section
shows is read by ``data.key_sources``.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from ..exceptions import ChatSecurityError, KeyStateError
from ..integrations import DEFAULT_INTEGRATION
from ..models import KeySource
from ..remote import sources
from . import data as admin_data
from .forms import RemoveKeySourceForm
from .panel import DeveloperPanelMixin, _actor, csrf_protect_m, integration_form


def one_line(exc: BaseException | str) -> str:
    """An error of ``remote.sources`` or the fetch as one sentence for the panel."""
    text = " ".join(str(exc).split())
    if "://" not in text.split(" ", 1)[0]:  # a sentence may begin with a URL: leave it be
        text = capfirst(text)
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _of(integration: str) -> str:
    return "" if integration == DEFAULT_INTEGRATION else " " + _("of %s") % integration


#: A message names this many kids or skipped keys at most (a set may hold 100).
LISTED = 10


def _listed(items: Sequence[str], separator: str = ", ") -> str:
    if not items:
        return _("none")
    shown = separator.join(items[:LISTED])
    more = len(items) - LISTED
    return shown + (" " + _("and %d more") % more if more > 0 else "")


def added_message(source: KeySource, integration: str) -> str:
    """What adding ``source`` did: where the keys come from, which were fetched, what
    was skipped and, for an OpenID Connect issuer, the iss its tokens must carry."""
    kids = [str(item.get("kid")) for item in source.keys if isinstance(item, dict)]
    message = _("Keys%(of)s are now taken from %(url)s: %(count)d fetched (%(kids)s).") % {
        "of": _of(integration),
        "url": source.url,
        "count": len(kids),
        "kids": _listed(kids),
    }
    if source.issuer:
        message += " " + _("Its tokens must carry iss %s.") % source.issuer
    if source.skipped:
        message += " " + _("Skipped: %s.") % _listed([str(s) for s in source.skipped], "; ")
    return message


def refreshed_message(outcome: sources.Outcome, integration: str) -> str:
    """A successful Refresh now: the kids added and removed, what was skipped."""
    if outcome.changed:
        message = _("Key set%(of)s fetched: added %(added)s; removed %(removed)s.") % {
            "of": _of(integration),
            "added": _listed(outcome.added),
            "removed": _listed(outcome.removed),
        }
    else:
        message = _("Key set%s fetched: no change.") % _of(integration)
    if outcome.skipped:
        message += " " + _("Skipped: %s.") % _listed(outcome.skipped, "; ")
    return message


def remove_source_warnings(source: KeySource, integration: str) -> list[str]:
    """What removing ``integration``'s key source does, for the confirmation page."""
    kids = [str(item.get("kid")) for item in source.keys if isinstance(item, dict)]
    warnings = [
        _(
            "Its fetched keys (%s) stop verifying at once: tokens signed by this identity "
            "provider are refused from now on, unless another key of the integration "
            "verifies them."
        )
        % _listed(kids),
    ]
    if source.issuer and integration == DEFAULT_INTEGRATION:
        warnings.append(
            _(
                "The issuer %s came from this provider: without it, iss is checked only "
                "if the ISSUER setting names one."
            )
            % source.issuer
        )
    elif source.issuer:
        warnings.append(
            _("The integration's issuer stays %s; change it with 'integration set'.")
            % source.issuer
        )
    warnings.append(_("You can add the provider again later: its keys are fetched anew."))
    return warnings


class KeySourcesMixin(DeveloperPanelMixin):
    """Adding, refreshing and removing an integration's key source; mixed into the
    panel's ModelAdmin."""

    def _source_anchor(self, integration: str) -> str:
        return admin_data.anchor(integration, "key-source")

    @csrf_protect_m
    def add_key_source_view(self, request: HttpRequest) -> HttpResponse:
        target = self._target(request)
        if not isinstance(target, str):
            return target
        form = integration_form("key_source_form", target, request.POST)
        if form.is_valid():
            kind, url = form.cleaned_data["kind"], form.cleaned_data["url"]
            oidc = kind == KeySource.Kind.OIDC_ISSUER
            add = sources.add_oidc_issuer if oidc else sources.add_jwks_url
            try:
                source = add(url, target, _actor(request))
            except KeyStateError as exc:  # a source already, or the integration went away
                form.add_error(None, one_line(exc))
            except ChatSecurityError as exc:  # the fetch or what it found (SourceError)
                form.add_error("url", one_line(exc))
            else:
                message = added_message(source, target)
                return self._done(request, message, self._source_anchor(target))
        return self.render_panel(request, target, key_source_form=form)

    @csrf_protect_m
    def refresh_key_source_view(self, request: HttpRequest) -> HttpResponse:
        target = self._target(request)
        if not isinstance(target, str):
            return target
        try:
            outcome = sources.refresh(target, _actor(request))
        except KeyStateError as exc:  # removed since the page was read
            return self.render_panel(request, action_error=one_line(exc))
        if outcome.ok:
            return self._done(
                request, refreshed_message(outcome, target), self._source_anchor(target)
            )
        # The failure is stored with the source; the last good set stays in use.
        messages.error(
            request,
            _("The key set%(of)s could not be fetched: %(error)s The last good set stays in use.")
            % {"of": _of(target), "error": one_line(outcome.error)},
        )
        return HttpResponseRedirect(self._panel_url(self._source_anchor(target)))

    @csrf_protect_m
    def remove_key_source_view(self, request: HttpRequest) -> HttpResponse:
        target = self._target(request)
        if not isinstance(target, str):
            return target
        form = RemoveKeySourceForm(request.POST)
        form.is_valid()  # the name was checked by _target; confirm is a checkbox
        source = KeySource.objects.filter(integration__name=target).first()
        if source is None:
            message = _("Integration %s has no key source.") % target
            return self.render_panel(request, action_error=message)
        if not form.cleaned_data.get("confirm"):
            return self._confirm(
                request,
                title=_("Remove the key source%(of)s, %(url)s?")
                % {"of": _of(target), "url": source.url},
                crumb=_("Remove key source"),
                action=self._url("chat_security_remove_key_source"),
                hidden={"integration": target, "confirm": "yes"},
                warnings=remove_source_warnings(source, target),
                submit=_("Yes, remove it"),
            )
        try:
            sources.remove(target, _actor(request))
        except KeyStateError as exc:  # removed meanwhile by someone else
            return self.render_panel(request, action_error=one_line(exc))
        message = _("Keys%(of)s are no longer taken from %(url)s.") % {
            "of": _of(target),
            "url": source.url,
        }
        return self._done(request, message, self._source_anchor(target))
