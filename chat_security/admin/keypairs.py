"""The panel's key-pair sections, per integration: client public keys (RS256),
the service key pair (encrypted ``user_payload``) and the site signing key
pairs (RS256/ES256, SPEC §13) that the integration issues its tokens with.

No private key ever leaves the store here: signing and service key pairs are
generated encrypted at rest, and only their public halves are downloaded
(service keys from the panel; signing keys from the public
``/.well-known/chat-security/<name>/`` views the panel links to).
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils.text import capfirst
from django.utils.translation import gettext as _

from .. import keys
from ..exceptions import ChatSecurityError, KeyImportError, KeyStateError
from ..models import Key, KeyKind
from ..timefmt import utc
from . import data as admin_data
from .forms import PublicKeyForm, auto_id
from .panel import (
    DeveloperPanelMixin,
    _actor,
    _warn_without_encryption_keys,
    csrf_protect_m,
    integration_form,
    sensitive_post_parameters_m,
)


def _grace_notes(before: list[int]) -> str:
    """ " kid is accepted until …" for each key of ``before`` now in grace."""
    notes = ""
    for old in Key.objects.filter(pk__in=before):
        if old.is_usable() and old.grace_until is not None:
            notes += " " + _("%(kid)s is accepted until %(until)s.") % {
                "kid": old.kid,
                "until": utc(old.grace_until.timestamp()),
            }
    return notes


class KeyPairsMixin(DeveloperPanelMixin):
    """Public keys, service and signing key pairs; mixed into the panel's ModelAdmin."""

    # -- 3. Client public keys -----------------------------------------------------------

    @sensitive_post_parameters_m
    @csrf_protect_m
    def add_public_key_view(self, request: HttpRequest) -> HttpResponse:
        target = self._target(request)
        if not isinstance(target, str):
            return target
        form = PublicKeyForm(request.POST, auto_id=auto_id(target))
        if form.is_valid():
            data = form.cleaned_data
            try:
                key = Key.objects.add_public_key(
                    data["public_key"], _actor(request), data["kid"], integration=target
                )
            except (KeyImportError, KeyStateError) as exc:
                form = self._refused_key_form(form, str(exc), target)
            else:
                message = _("Public key %(kid)s added (%(bits)s bits).") % {
                    "kid": key.kid,
                    "bits": key.bits,
                }
                return self._done(request, message, admin_data.anchor(target, "public-keys"))
        return self.render_panel(request, target, public_key_form=form)

    @staticmethod
    def _refused_key_form(form: PublicKeyForm, message: str, integration: str) -> PublicKeyForm:
        """Attach the store's reason; never echo a pasted private key back."""
        text = form.cleaned_data["public_key"]
        if "PRIVATE" in text.upper() or "private key" in message:
            form = PublicKeyForm(
                {"kid": form.cleaned_data.get("kid", ""), "public_key": ""},
                auto_id=auto_id(integration),
            )
            form.is_valid()
            form.errors.pop("public_key", None)
        form.add_error("public_key", capfirst(message))
        return form

    # -- 4. Service key pair ---------------------------------------------------------------

    @csrf_protect_m
    def service_key_view(self, request: HttpRequest) -> HttpResponse:
        target = self._target(request)
        if not isinstance(target, str):
            return target
        form = integration_form("service_key_form", target, request.POST)
        if not form.is_valid():
            return self.render_panel(request, target, service_key_form=form)
        before = [k.pk for k in Key.objects.active(KeyKind.SERVICE_KEY, target)]
        grace = form.cleaned_data["grace_hours"] * 3600
        try:
            key = Key.objects.generate_service_keypair(_actor(request), grace, integration=target)
        except KeyStateError as exc:  # removed since the form was read
            return self.render_panel(request, action_error=capfirst(str(exc)))
        _warn_without_encryption_keys(request)
        message = _("Service key pair %s generated.") % key.kid + _grace_notes(before)
        return self._done(request, message, admin_data.anchor(target, "service-keys"))

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

    # -- Site signing key pairs (SPEC §13) ------------------------------------------------

    @csrf_protect_m
    def generate_signing_key_view(self, request: HttpRequest) -> HttpResponse:
        """A new key pair: it signs at once if there is no active one, else it is staged."""
        target = self._target(request)
        if not isinstance(target, str):
            return target
        form = integration_form("signing_key_form", target, request.POST)
        if not form.is_valid():
            return self.render_panel(request, target, signing_key_form=form)
        alg = form.cleaned_data["alg"]
        try:
            key = Key.objects.generate_signing_keypair(alg, _actor(request), integration=target)
        except (KeyStateError, ChatSecurityError) as exc:
            return self.render_panel(request, target, signing_error=capfirst(str(exc)))
        _warn_without_encryption_keys(request)
        if key.staged:
            message = _(
                "Signing key pair %(kid)s (%(alg)s) is staged: it is published in the JWKS "
                "now and signs once you rotate."
            )
        else:
            message = _(
                "Signing key pair %(kid)s (%(alg)s) generated: the tokens this integration "
                "issues are signed with it."
            )
        anchor = admin_data.anchor(target, "signing-keys")
        return self._done(request, message % {"kid": key.kid, "alg": key.alg}, anchor)

    @csrf_protect_m
    def rotate_signing_key_view(self, request: HttpRequest) -> HttpResponse:
        """The staged key (or a new one of the active key's algorithm) signs from now on."""
        target = self._target(request)
        if not isinstance(target, str):
            return target
        form = integration_form("rotate_signing_form", target, request.POST)
        if not form.is_valid():
            return self.render_panel(request, target, rotate_signing_form=form)
        before = [k.pk for k in Key.objects.active(KeyKind.SIGNING_KEY, target)]
        grace = form.cleaned_data["grace_hours"] * 3600
        try:
            key = Key.objects.rotate_signing_key(grace, _actor(request), integration=target)
        except (KeyStateError, ChatSecurityError) as exc:
            return self.render_panel(request, target, signing_error=capfirst(str(exc)))
        _warn_without_encryption_keys(request)
        message = _("Signing key pair %(kid)s (%(alg)s) signs from now on.") % {
            "kid": key.kid,
            "alg": key.alg,
        }
        message += _grace_notes([pk for pk in before if pk != key.pk])
        return self._done(request, message, admin_data.anchor(target, "signing-keys"))
