"""The Developer – WebChat admin panel, built like Django's password-change page.

Every view is wrapped by ``admin_site.admin_view`` (staff login, CSRF,
never-cache), checks its own permission and raises ``PermissionDenied``, and
hands cleaned form values to the key store's manager methods — the same ones
the CLI calls. Changes are POST-only; a GET never changes anything. A new
secret exists in clear only in the response to the POST that created it.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
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
from ..exceptions import KeyImportError, KeyStateError
from ..models import AuditEntry, Key, KeyKind, SecurityConfig
from ..timefmt import utc
from . import data as admin_data
from .forms import (
    PublicKeyForm,
    RevokeKeyForm,
    RevokeUserForm,
    RotateSecretForm,
    SecuritySwitchForm,
    ServiceKeyForm,
    TokenTestForm,
)

csrf_protect_m = method_decorator(csrf_protect)
sensitive_post_parameters_m = method_decorator(sensitive_post_parameters())

PANEL_TITLE = "Developer – WebChat"
MANAGE_PERMISSION = "chat_security.manage_keys"
TEST_PERMISSION = "chat_security.test_tokens"


def can_manage(request: HttpRequest) -> bool:
    return request.user.has_perm(MANAGE_PERMISSION)


def can_test(request: HttpRequest) -> bool:
    return can_manage(request) or request.user.has_perm(TEST_PERMISSION)


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


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

    def _panel_url(self, anchor: str = "") -> str:
        url = reverse(f"{self.admin_site.name}:chat_security_securityconfig_changelist")
        return f"{url}#{anchor}" if anchor else url

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

    def render_panel(self, request: HttpRequest, **overrides: Any) -> TemplateResponse:
        """The whole panel; a failed form passes itself in ``overrides`` (shown inline)."""
        request.current_app = self.admin_site.name
        manage = can_manage(request)
        forms: dict[str, Any] = {"test_form": TokenTestForm()}
        data: dict[str, Any] = {}
        if manage:
            forms.update(
                switch_form=SecuritySwitchForm(),
                rotate_form=RotateSecretForm(),
                public_key_form=PublicKeyForm(),
                service_key_form=ServiceKeyForm(),
                revoke_user_form=RevokeUserForm(),
            )
            data = admin_data.manager_data(request, clock.now())
        forms.update(overrides)
        has_errors = any(
            getattr(f, "errors", None) for f in forms.values() if hasattr(f, "is_bound")
        ) or bool(overrides.get("secret_error") or overrides.get("revoke_error"))
        context = self._context(request, title=PANEL_TITLE, has_errors=has_errors, **data, **forms)
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

    # -- 1. Secure your web chat ----------------------------------------------------

    @csrf_protect_m
    def security_view(self, request: HttpRequest) -> HttpResponse:
        refused = self._require(request, manage=True, method="POST")
        if refused:
            return refused
        form = SecuritySwitchForm(request.POST)
        if not form.is_valid():
            return self.render_panel(request, switch_form=form)
        enabled = form.cleaned_data["enabled"]
        if not enabled and not form.cleaned_data["confirm"]:
            return self._confirm(
                request,
                title=_("Switch web chat security off?"),
                crumb=_("Switch security off"),
                action=reverse(f"{self.admin_site.name}:chat_security_security"),
                hidden={"enabled": "off", "confirm": "yes"},
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
        SecurityConfig.set_enabled(enabled, _actor(request))
        if enabled and not (
            Key.objects.usable(KeyKind.SECRET) or Key.objects.usable(KeyKind.PUBLIC_KEY)
        ):
            messages.warning(
                request,
                _(
                    "No usable signing key exists: every chat request is refused "
                    "(security_not_configured) until you generate a secret or add a public key."
                ),
            )
        state = _("on") if enabled else _("off")
        return self._done(request, _("Web chat security is now %s.") % state, "security")

    # -- 2. Signing secret ------------------------------------------------------------

    @csrf_protect_m
    def generate_secret_view(self, request: HttpRequest) -> HttpResponse:
        refused = self._require(request, manage=True, method="POST")
        if refused:
            return refused
        try:
            key, secret = Key.objects.generate_secret(_actor(request))
        except KeyStateError as exc:
            return self.render_panel(request, secret_error=capfirst(str(exc)))
        return self._show_secret(request, key, secret, previous=[])

    @csrf_protect_m
    def rotate_secret_view(self, request: HttpRequest) -> HttpResponse:
        refused = self._require(request, manage=True, method="POST")
        if refused:
            return refused
        form = RotateSecretForm(request.POST)
        if not form.is_valid():
            return self.render_panel(request, rotate_form=form)
        before = [k.pk for k in Key.objects.active(KeyKind.SECRET)]
        grace = form.cleaned_data["grace_hours"] * 3600
        key, secret = Key.objects.rotate_secret(grace, _actor(request))
        previous = list(Key.objects.filter(pk__in=before).order_by("-created_at"))
        return self._show_secret(request, key, secret, previous)

    def _show_secret(
        self, request: HttpRequest, key: Key, secret: str, previous: list[Key]
    ) -> TemplateResponse:
        """The one response that ever carries the secret: no-store, nowhere else."""
        now = clock.now()
        ctx = self._context(
            request,
            title=_("Your new signing secret"),
            key=key,
            secret=secret,
            created=utc(key.created_at.timestamp()),
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
        refused = self._require(request, manage=True, method="POST")
        if refused:
            return refused
        form = RevokeKeyForm(request.POST)
        if not form.is_valid():
            errors = [str(e) for errs in form.errors.values() for e in errs]
            return self.render_panel(request, revoke_error=" ".join(errors))
        key = form.key
        assert key is not None  # noqa: S101  (set by clean_kid)
        if not form.cleaned_data["confirm"]:
            return self._confirm(
                request,
                title=_("Revoke %(kind)s %(kid)s?")
                % {"kind": key.get_kind_display(), "kid": key.kid},
                crumb=_("Revoke key"),
                action=reverse(f"{self.admin_site.name}:chat_security_revoke_key"),
                hidden={"kid": key.kid, "confirm": "yes"},
                warnings=admin_data.revoke_warnings(key, clock.now()),
                submit=_("Yes, revoke it now"),
            )
        try:
            Key.objects.revoke(key.kid, _actor(request))
        except KeyStateError as exc:
            return self.render_panel(request, revoke_error=capfirst(str(exc)))
        return self._done(request, _("Key %s was revoked.") % key.kid, admin_data.anchor_of(key))

    # -- 3. Client public keys -----------------------------------------------------------

    @sensitive_post_parameters_m
    @csrf_protect_m
    def add_public_key_view(self, request: HttpRequest) -> HttpResponse:
        refused = self._require(request, manage=True, method="POST")
        if refused:
            return refused
        form = PublicKeyForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                key = Key.objects.add_public_key(data["public_key"], _actor(request), data["kid"])
            except (KeyImportError, KeyStateError) as exc:
                form = self._refused_key_form(form, str(exc))
            else:
                message = _("Public key %(kid)s added (%(bits)s bits).") % {
                    "kid": key.kid,
                    "bits": key.bits,
                }
                return self._done(request, message, "public-keys")
        return self.render_panel(request, public_key_form=form)

    @staticmethod
    def _refused_key_form(form: PublicKeyForm, message: str) -> PublicKeyForm:
        """Attach the store's reason; never echo a pasted private key back."""
        text = form.cleaned_data["public_key"]
        if "PRIVATE" in text.upper() or "private key" in message:
            form = PublicKeyForm({"kid": form.cleaned_data.get("kid", ""), "public_key": ""})
            form.is_valid()
            form.errors.pop("public_key", None)
        form.add_error("public_key", capfirst(message))
        return form

    # -- 4. Service key pair ---------------------------------------------------------------

    @csrf_protect_m
    def service_key_view(self, request: HttpRequest) -> HttpResponse:
        refused = self._require(request, manage=True, method="POST")
        if refused:
            return refused
        form = ServiceKeyForm(request.POST)
        if not form.is_valid():
            return self.render_panel(request, service_key_form=form)
        before = [k.pk for k in Key.objects.active(KeyKind.SERVICE_KEY)]
        grace = form.cleaned_data["grace_hours"] * 3600
        key = Key.objects.generate_service_keypair(_actor(request), grace)
        _warn_without_encryption_keys(request)
        message = _("Service key pair %s generated.") % key.kid
        for old in Key.objects.filter(pk__in=before):
            if old.is_usable() and old.grace_until is not None:
                message += " " + _("%(kid)s is accepted until %(until)s.") % {
                    "kid": old.kid,
                    "until": utc(old.grace_until.timestamp()),
                }
        return self._done(request, message, "service-keys")

    def _service_key(self, request: HttpRequest, kid: str) -> HttpResponse | Key:
        """The service key ``kid``, or the response that refuses the request."""
        refused = self._require(request, manage=True, method="GET")
        key = Key.objects.filter(kind=KeyKind.SERVICE_KEY, kid=kid).first()
        if refused is not None:
            return refused
        if key is None:
            raise Http404(_("No service key has this kid."))
        return key

    def service_key_pem_view(self, request: HttpRequest, kid: str) -> HttpResponse:
        key = self._service_key(request, kid)
        if not isinstance(key, Key):
            return key
        response = HttpResponse(key.public_pem, content_type="application/x-pem-file")
        response["Content-Disposition"] = f'attachment; filename="{key.kid}.pem"'
        return response

    def service_key_jwk_view(self, request: HttpRequest, kid: str) -> HttpResponse:
        key = self._service_key(request, kid)
        if not isinstance(key, Key):
            return key
        response = JsonResponse(
            keys.public_jwk(key.public_pem, key.kid), json_dumps_params={"indent": 2}
        )
        response["Content-Disposition"] = f'attachment; filename="{key.kid}.jwk.json"'
        return response

    # -- 5. Test a JWT Token ------------------------------------------------------------------

    @sensitive_post_parameters_m
    @csrf_protect_m
    def test_token_view(self, request: HttpRequest) -> HttpResponse:
        refused = self._require(request, manage=False, method="POST")
        if refused:
            return refused
        form = TokenTestForm(request.POST)
        diagnosis: Diagnosis | None = None
        if form.is_valid():
            diagnosis = diagnose(form.cleaned_data["token"])
            AuditEntry.record(_actor(request), "test_token", detail=diagnosis.outcome)
        return self.render_panel(request, test_form=form, diagnosis=diagnosis)


def _warn_without_encryption_keys(request: HttpRequest) -> None:
    """The CLI's W001 warning, where the panel has just encrypted a key with SECRET_KEY."""
    warning = keys.encrypted_with_secret_key_warning()
    if warning:
        messages.warning(request, warning)
