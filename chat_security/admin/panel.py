"""The Developer – WebChat admin panel, built like Django's password-change page.

Every view is wrapped by ``admin_site.admin_view`` (staff login, CSRF,
never-cache), checks its own permission and raises ``PermissionDenied``, and
hands cleaned form values to the key store's manager methods — the same ones
the CLI calls. Changes are POST-only; a GET never changes anything. A new
secret exists in clear only in the response to the POST that created it.

The panel has one part per integration (SPEC §13), ``default`` first. Every
action on one posts its name; the view re-reads it from the store
(``TargetForm``) and changes nothing when it does not exist. A POST without a
name acts on ``default``, as on a site with one chat surface. This module
holds the plumbing, the switch, secrets, revocation and the tester;
``keypairs`` the public, service and signing keys; ``key_sources`` an
integration's identity provider (SPEC §14); ``integrations`` adding and removing
integrations.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.forms import Form
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers, patch_cache_control
from django.utils.decorators import method_decorator
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from .. import clock, keys
from ..diagnosis import Diagnosis, diagnose
from ..exceptions import KeyStateError
from ..integrations import DEFAULT_INTEGRATION
from ..models import AuditEntry, Integration, Key, KeyKind, KeySource, SecurityConfig
from ..timefmt import utc
from . import data as admin_data
from .failures import failures_context
from .forms import (
    IntegrationForm,
    KeySourceForm,
    PublicKeyForm,
    RevokeKeyForm,
    RevokeUserForm,
    RotateSecretForm,
    RotateSigningKeyForm,
    ScheduleSecurityForm,
    SecuritySwitchForm,
    ServiceKeyForm,
    SigningKeyForm,
    TargetForm,
    TokenTestForm,
    auto_id,
)
from .key_rows import revoke_warnings

csrf_protect_m = method_decorator(csrf_protect)
sensitive_post_parameters_m = method_decorator(sensitive_post_parameters())

PANEL_TITLE = "Developer – WebChat"
MANAGE_PERMISSION = "chat_security.manage_keys"
TEST_PERMISSION = "chat_security.test_tokens"
#: Forms of an integration's part: the class, and the stem of its HTML ids.
INTEGRATION_FORMS: dict[str, tuple[type[Any], str]] = {
    "switch_form": (SecuritySwitchForm, "switch_"),
    "schedule_form": (ScheduleSecurityForm, "schedule_"),
    "rotate_form": (RotateSecretForm, ""),
    "public_key_form": (PublicKeyForm, ""),
    "key_source_form": (KeySourceForm, "source_"),
    "service_key_form": (ServiceKeyForm, "service_"),
    "signing_key_form": (SigningKeyForm, "signing_"),
    "rotate_signing_form": (RotateSigningKeyForm, "signing_"),
}
#: What a failed action shows in its integration's part (the rest: at the page's top).
PER_INTEGRATION = frozenset({*INTEGRATION_FORMS, "secret_error", "signing_error"})


def can_manage(request: HttpRequest) -> bool:
    return request.user.has_perm(MANAGE_PERMISSION)


def can_test(request: HttpRequest) -> bool:
    return can_manage(request) or request.user.has_perm(TEST_PERMISSION)


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


def integration_form(key: str, integration: str, data: Any = None) -> Any:
    """A form of ``integration``'s part, bound to ``data`` if given, with its own ids."""
    cls, stem = INTEGRATION_FORMS[key]
    return cls(data, auto_id=auto_id(integration, stem))


def integration_names() -> list[str]:
    """Every integration's name, ``default`` first (for the tester's choice)."""
    names = list(Integration.objects.values_list("name", flat=True))
    return [DEFAULT_INTEGRATION, *(n for n in names if n != DEFAULT_INTEGRATION)]


def _has_errors(overrides: dict[str, Any]) -> bool:
    """Whether a failed form or an error message is shown (the page title says so)."""
    return any(
        bool(value.errors) if isinstance(value, Form) else key.endswith("_error") and bool(value)
        for key, value in overrides.items()
    )


class DeveloperPanelMixin:
    """Views of the panel; mixed into the ModelAdmin of ``SecurityConfig``."""

    admin_site: Any
    opts: Any
    panel_template = "admin/chat_security/panel.html"

    # -- plumbing -------------------------------------------------------------------

    def _require(self, request: HttpRequest, manage: bool, method: str) -> HttpResponse | None:
        """Permission first (403 whatever the method), then the HTTP method (405)."""
        if not (can_manage(request) if manage else can_test(request)):
            raise PermissionDenied
        allowed = ["GET", "HEAD"] if method == "GET" else [method]
        if request.method not in allowed:
            return HttpResponseNotAllowed(allowed)
        return None

    def _target(self, request: HttpRequest) -> str | HttpResponse:
        """For a change: the integration the POST names, or the response that refuses it.

        Permission and method first (:meth:`_require`), then the name, re-read
        from the store: an unknown one gets the panel with the error, nothing changed.
        """
        refused = self._require(request, manage=True, method="POST")
        if refused is not None:
            return refused
        form = TargetForm(request.POST)
        if form.is_valid():
            name: str = form.cleaned_data["integration"]
            return name
        errors = [str(e) for errs in form.errors.values() for e in errs]
        return self.render_panel(request, action_error=" ".join(errors))

    def _panel_url(self, anchor: str = "") -> str:
        url = reverse(f"{self.admin_site.name}:chat_security_securityconfig_changelist")
        return f"{url}#{anchor}" if anchor else url

    def _url(self, name: str) -> str:
        return reverse(f"{self.admin_site.name}:{name}")

    def _context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        request.current_app = self.admin_site.name
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "panel_title": PANEL_TITLE,
            "panel_url": self._panel_url(),
            "can_manage": can_manage(request),
            "can_test": can_test(request),
            **extra,
        }

    def render_panel(
        self, request: HttpRequest, integration: str = DEFAULT_INTEGRATION, **overrides: Any
    ) -> TemplateResponse:
        """The whole panel; a failed form passes itself in ``overrides`` (shown inline,
        in the part of ``integration`` when it is one of that part's forms)."""
        request.current_app = self.admin_site.name
        manage = can_manage(request)
        data: dict[str, Any] = admin_data.manager_data(request, clock.now()) if manage else {}
        names = data.get("integration_names") or integration_names()
        page: dict[str, Any] = {
            "test_form": TokenTestForm(integrations=names),
            "several_integrations": len(names) > 1,
            **failures_context(names, clock.now()),  # support staff and managers alike
        }
        if not manage:  # support staff see where fetched keys come from, and no form
            page["source_parts"] = admin_data.key_source_parts(clock.now())
        if manage:
            page.update(revoke_user_form=RevokeUserForm(), add_integration_form=IntegrationForm())
            for entry in data["integrations"]:
                entry.update(
                    {key: integration_form(key, entry["name"]) for key in INTEGRATION_FORMS}
                )
                if entry["name"] == integration:
                    entry.update({k: v for k, v in overrides.items() if k in PER_INTEGRATION})
        page.update({k: v for k, v in overrides.items() if k not in PER_INTEGRATION})
        has_errors = _has_errors(overrides)
        context = self._context(
            request, title=PANEL_TITLE, has_errors=has_errors, **{**data, **page}
        )
        return TemplateResponse(request, self.panel_template, context)

    def _confirm(self, request: HttpRequest, **context: Any) -> TemplateResponse:
        ctx = self._context(request, **context)
        return TemplateResponse(request, "admin/chat_security/confirm.html", ctx)

    def _done(self, request: HttpRequest, message: str, anchor: str) -> HttpResponseRedirect:
        messages.success(request, message)
        return HttpResponseRedirect(self._panel_url(anchor))

    # -- the panel ------------------------------------------------------------------

    def panel_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        refused = self._require(request, manage=False, method="GET")
        return refused or self.render_panel(request)

    # -- 1. Secure your web chat (one switch per integration) -------------------------

    @csrf_protect_m
    def security_view(self, request: HttpRequest) -> HttpResponse:
        target = self._target(request)
        if not isinstance(target, str):
            return target
        form = SecuritySwitchForm(request.POST)
        if not form.is_valid():
            return self.render_panel(request, target, switch_form=form)
        enabled = form.cleaned_data["enabled"]
        of = "" if target == DEFAULT_INTEGRATION else " " + _("for %s") % target
        if not enabled and not form.cleaned_data["confirm"]:
            return self._confirm(
                request,
                title=_("Switch web chat security off%s?") % of,
                crumb=_("Switch security off"),
                action=self._url("chat_security_security"),
                hidden={"enabled": "off", "confirm": "yes", "integration": target},
                warnings=[
                    _(
                        "Anonymous access becomes possible: chat requests without a token "
                        "are accepted as anonymous visitors, so anyone can chat without "
                        "proving who they are."
                    ),
                    _(
                        "Requests that carry a token are still verified; a bad token is "
                        "still refused."
                    ),
                ],
                submit=_("Yes, switch security off"),
            )
        try:
            SecurityConfig.set_enabled(enabled, _actor(request), integration=target)
        except KeyStateError as exc:  # removed since the form was read
            return self.render_panel(request, action_error=capfirst(str(exc)))
        if enabled and not _has_verifying_keys(target):
            messages.warning(
                request,
                _(
                    "No usable signing key exists: every chat request is refused "
                    "(security_not_configured) until you generate a secret or a signing "
                    "key pair, or add a public key."
                ),
            )
        state = _("on") if enabled else _("off")
        return self._done(
            request,
            _("Web chat security%(of)s is now %(state)s.") % {"of": of, "state": state},
            admin_data.anchor(target, "security"),
        )

    # -- 2. Signing secret ------------------------------------------------------------

    @csrf_protect_m
    def generate_secret_view(self, request: HttpRequest) -> HttpResponse:
        target = self._target(request)
        if not isinstance(target, str):
            return target
        try:
            key, secret = Key.objects.generate_secret(_actor(request), integration=target)
        except KeyStateError as exc:
            return self.render_panel(request, target, secret_error=capfirst(str(exc)))
        return self._show_secret(request, key, secret, previous=[], integration=target)

    @csrf_protect_m
    def rotate_secret_view(self, request: HttpRequest) -> HttpResponse:
        target = self._target(request)
        if not isinstance(target, str):
            return target
        form = integration_form("rotate_form", target, request.POST)
        if not form.is_valid():
            return self.render_panel(request, target, rotate_form=form)
        before = [k.pk for k in Key.objects.active(KeyKind.SECRET, target)]
        grace = form.cleaned_data["grace_hours"] * 3600
        try:
            key, secret = Key.objects.rotate_secret(grace, _actor(request), integration=target)
        except KeyStateError as exc:
            return self.render_panel(request, target, secret_error=capfirst(str(exc)))
        previous = list(Key.objects.filter(pk__in=before).order_by("-created_at"))
        return self._show_secret(request, key, secret, previous, integration=target)

    def _show_secret(
        self, request: HttpRequest, key: Key, secret: str, previous: list[Key], integration: str
    ) -> TemplateResponse:
        """The one response that ever carries the secret: no-store, nowhere else."""
        now = clock.now()
        row = Integration.objects.filter(name=integration).first()
        ctx = self._context(
            request,
            title=_("Your new signing secret"),
            key=key,
            secret=secret,
            created=utc(key.created_at.timestamp()),
            integration=integration,
            several_integrations=Integration.objects.exclude(name=DEFAULT_INTEGRATION).exists(),
            issuer=row.issuer if row is not None and integration != DEFAULT_INTEGRATION else "",
            audience=row.audience if row is not None and integration != DEFAULT_INTEGRATION else "",
            back_url=self._panel_url(admin_data.anchor(integration, "secrets")),
            previous=[
                {
                    "kid": old.kid,
                    "until": utc(old.grace_until.timestamp()) if old.grace_until else None,
                    "usable": old.is_usable(now),
                }
                for old in previous
            ],
        )
        _warn_without_encryption_keys(request)
        response = TemplateResponse(request, "admin/chat_security/new_secret.html", ctx)
        add_never_cache_headers(response)
        patch_cache_control(response, no_store=True, private=True)
        return response

    # -- revoke / remove (all kinds) ----------------------------------------------------

    @csrf_protect_m
    def revoke_view(self, request: HttpRequest) -> HttpResponse:
        target = self._target(request)
        if not isinstance(target, str):
            return target
        form = RevokeKeyForm(request.POST)
        if not form.is_valid():
            errors = [str(e) for errs in form.errors.values() for e in errs]
            return self.render_panel(request, revoke_error=" ".join(errors))
        key = form.key
        assert key is not None  # noqa: S101  (set by clean_kid)
        if key.integration.name != target:  # a stale page, or a forged one: change nothing
            return self.render_panel(
                request,
                revoke_error=_("Key %(kid)s is not a key of integration %(name)s.")
                % {"kid": key.kid, "name": target},
            )
        if not form.cleaned_data["confirm"]:
            of = "" if target == DEFAULT_INTEGRATION else " " + _("of %s") % target
            return self._confirm(
                request,
                title=_("Revoke %(kind)s %(kid)s%(of)s?")
                % {"kind": key.get_kind_display(), "kid": key.kid, "of": of},
                crumb=_("Revoke key"),
                action=self._url("chat_security_revoke_key"),
                hidden={"kid": key.kid, "confirm": "yes", "integration": target},
                warnings=revoke_warnings(key, clock.now(), target),
                submit=_("Yes, revoke it now"),
            )
        try:
            Key.objects.revoke(key.kid, _actor(request))
        except KeyStateError as exc:
            return self.render_panel(request, revoke_error=capfirst(str(exc)))
        return self._done(
            request, _("Key %s was revoked.") % key.kid, admin_data.anchor_of(key, target)
        )

    # -- 5. Test a JWT Token ------------------------------------------------------------------

    @sensitive_post_parameters_m
    @csrf_protect_m
    def test_token_view(self, request: HttpRequest) -> HttpResponse:
        refused = self._require(request, manage=False, method="POST")
        if refused:
            return refused
        form = TokenTestForm(request.POST, integrations=integration_names())
        diagnosis: Diagnosis | None = None
        if form.is_valid():
            chosen = form.cleaned_data["integration"] or None  # None: the iss picks
            diagnosis = diagnose(form.cleaned_data["token"], integration=chosen)
            AuditEntry.record(_actor(request), "test_token", detail=diagnosis.outcome)
        return self.render_panel(request, test_form=form, diagnosis=diagnosis)


def _has_verifying_keys(integration: str) -> bool:
    """Whether ``integration`` has a key that verifies tokens: a stored one, or a key
    source (its fetched keys; SPEC §14)."""
    return KeySource.objects.filter(integration__name=integration).exists() or any(
        Key.objects.usable(kind, integration)
        for kind in (KeyKind.SECRET, KeyKind.PUBLIC_KEY, KeyKind.SIGNING_KEY)
    )


def _warn_without_encryption_keys(request: HttpRequest) -> None:
    """The CLI's W001 warning, where the panel has just encrypted a key with SECRET_KEY."""
    warning = keys.encrypted_with_secret_key_warning()
    if warning:
        messages.warning(request, warning)
