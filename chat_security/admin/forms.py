"""Forms of the Developer – WebChat admin panel.

They only validate input; the views hand the cleaned values to the key
store's manager methods (the same ones the CLI calls), which own every rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.core.validators import RegexValidator
from django.utils import timezone
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from .. import public_keys, tokens
from ..conf import MAX_GRACE_HOURS, app_settings
from ..exceptions import KeyStateError, TokenError
from ..integrations import DEFAULT_INTEGRATION, check_new
from ..models import Integration, Key, KeySource

#: The tester accepts more than MAX_TOKEN_BYTES so that an oversized token gets
#: the engine's token_too_large explanation rather than a form error.
MAX_TESTED_TOKEN = 64 * 1024

_TEXTAREA = {"rows": 6, "cols": 80, "spellcheck": "false", "autocomplete": "off"}


def auto_id(integration: str, form: str = "") -> str:
    """HTML ids of one integration's form: ``default``'s stay as they always were
    (``id_grace_hours``); another's carry its name (``id_ios__grace_hours``), so every
    id on the page is unique and each label finds its own field. POSTed names stay."""
    base = "id_" if integration == DEFAULT_INTEGRATION else f"id_{integration}__"
    return f"{base}{form}%s"


def default_grace_hours() -> float:
    hours = app_settings.GRACE_PERIOD / 3600
    return int(hours) if hours == int(hours) else round(hours, 2)


class GraceHoursField(forms.FloatField):
    """Hours the previous key keeps working; 0 retires it at once."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("label", _("Grace period (hours)"))
        kwargs.setdefault(
            "help_text",
            _("How long the previous key keeps being accepted. 0 retires it at once."),
        )
        super().__init__(min_value=0, max_value=MAX_GRACE_HOURS, **kwargs)
        self.widget.attrs.update({"step": "any", "class": "vIntegerField"})


class TargetForm(forms.Form):
    """The integration an action is for, re-read from the store on every POST.

    Absent or empty means ``default`` (a site with one chat surface). A name
    the store does not hold (removed meanwhile, or forged) is an error: the
    view changes nothing.
    """

    integration = forms.CharField(required=False, max_length=50)

    def clean_integration(self) -> str:
        name: str = self.cleaned_data["integration"] or DEFAULT_INTEGRATION
        if name != DEFAULT_INTEGRATION and not Integration.objects.filter(name=name).exists():
            raise forms.ValidationError(
                _("No integration is named %(name)s."), code="unknown", params={"name": name}
            )
        return name


class RemoveIntegrationForm(TargetForm):
    """**Remove integration**; the first POST asks for confirmation."""

    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)


class RemoveKeySourceForm(RemoveIntegrationForm):
    """**Remove key source** of the integration named; the first POST asks for confirmation."""


class SecuritySwitchForm(forms.Form):
    """Turn **Secure your web chat** on or off (off needs ``confirm``)."""

    enabled = forms.TypedChoiceField(
        choices=[("on", _("On")), ("off", _("Off"))], coerce=lambda v: v == "on"
    )
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)


class ScheduleSecurityForm(forms.Form):
    """**Turn on at**: schedule the switch to turn on (SPEC §15). The time is UTC."""

    at = forms.DateTimeField(
        label=_("Turn on at (UTC)"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text=_("A time in UTC; every worker requires tokens from then on."),
    )

    def clean_at(self) -> datetime:
        # Django read it in the current time zone; the form says UTC, so it is UTC.
        value: datetime = self.cleaned_data["at"]
        if timezone.is_aware(value):
            value = timezone.make_naive(value)
        return value.replace(tzinfo=UTC)


class RotateSecretForm(forms.Form):
    grace_hours = GraceHoursField()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["grace_hours"].initial = default_grace_hours()


class ServiceKeyForm(RotateSecretForm):
    """Generate the service key pair; an active one goes into grace.

    The panel shows it beside :class:`RotateSecretForm`: its own HTML ids
    (``id_service_grace_hours``) keep the page's ids unique and each label
    tied to its own field. The POSTed names stay the same.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "id_service_%s")
        super().__init__(*args, **kwargs)


class SigningKeyForm(forms.Form):
    """Generate a site signing key pair: it signs at once if the integration has no
    active one, else it is staged (published in the JWKS, signing once rotated)."""

    alg = forms.ChoiceField(
        label=_("Algorithm"),
        choices=[("RS256", _("RS256 (RSA 2048)")), ("ES256", _("ES256 (ECDSA P-256)"))],
        initial="RS256",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "id_signing_%s")
        super().__init__(*args, **kwargs)


class RotateSigningKeyForm(RotateSecretForm):
    """Promote the staged signing key (or a new one); the active one goes into grace."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "id_signing_%s")
        super().__init__(*args, **kwargs)


def _store_rule(
    name: str = "x", issuer: str = "", audience: str = "", paths: Sequence[str] = ()
) -> None:
    """The store's rule for one field of a new integration (the others given valid
    values): its one-line refusal becomes that field's error."""
    try:
        check_new(name, issuer, audience, paths)
    except KeyStateError as exc:
        raise forms.ValidationError(f"{capfirst(str(exc))}.", code="invalid") from exc


class IntegrationForm(forms.Form):
    """**Add integration**: the store's own rules (``integrations.check_new``), field by field."""

    name = forms.CharField(
        label=_("Name"),
        max_length=50,
        help_text=_("Lower-case letters, digits and hyphens: web, ios, brand-b."),
        widget=forms.TextInput(attrs={"class": "vTextField", "autocomplete": "off"}),
    )
    issuer = forms.CharField(
        label=_("Issuer (iss)"),
        required=False,
        max_length=255,
        help_text=_(
            "Optional. Its tokens must carry this iss; on a path several "
            "integrations serve, the iss picks this one."
        ),
        widget=forms.TextInput(attrs={"class": "vTextField chat-mono", "autocomplete": "off"}),
    )
    audience = forms.CharField(
        label=_("Audience (aud)"),
        required=False,
        max_length=255,
        help_text=_("Optional. A value its tokens' aud must hold."),
        widget=forms.TextInput(attrs={"class": "vTextField chat-mono", "autocomplete": "off"}),
    )
    own_users = forms.BooleanField(
        label=_("Own users"),
        required=False,
        help_text=_(
            "Its user ids name other people than default's (a tenant, a brand with its own "
            "accounts): its own contacts and user revocations. Unticked, it shares them."
        ),
    )
    paths = forms.CharField(
        label=_("Paths"),
        required=False,
        widget=forms.Textarea(attrs={**_TEXTAREA, "rows": 3, "class": "vLargeTextField chat-mono"}),
        help_text=_("HTTP path prefixes it guards, one per line (e.g. /ios/chat/api/)."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_id", "id_integration_%s")
        super().__init__(*args, **kwargs)

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"]
        _store_rule(name=name)
        if name == DEFAULT_INTEGRATION or Integration.objects.filter(name=name).exists():
            raise forms.ValidationError(
                _("An integration named %(name)s already exists."),
                code="exists",
                params={"name": name},
            )
        return name

    def clean_issuer(self) -> str:
        issuer: str = self.cleaned_data["issuer"]
        _store_rule(issuer=issuer)
        return issuer

    def clean_audience(self) -> str:
        audience: str = self.cleaned_data["audience"]
        _store_rule(audience=audience)
        return audience

    def clean_paths(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["paths"].splitlines()]
        paths = [line for line in lines if line]
        _store_rule(paths=paths)
        return paths


class KeySourceForm(forms.Form):
    """**Take keys from an identity provider**: a JWKS URL or an OpenID Connect issuer.

    Only the shape is checked here; ``remote.sources`` fetches the URL, and its
    refusal (https only, a private address, an issuer mismatch …) becomes the
    form's error.
    """

    kind = forms.ChoiceField(
        label=_("The provider gives"),
        choices=KeySource.Kind.choices,
        initial=KeySource.Kind.JWKS_URL,
    )
    url = forms.CharField(
        label=_("URL"),
        max_length=2048,
        widget=forms.TextInput(
            attrs={
                "class": "vURLField chat-mono",
                "autocomplete": "off",
                "spellcheck": "false",
                "inputmode": "url",
            }
        ),
        help_text=_(
            "A JWKS URL (https://idp.example/.well-known/jwks.json), or an issuer "
            "(https://idp.example/realms/shop): its discovery document names the JWKS URL, "
            "and its issuer becomes the integration's issuer. https only; the keys are "
            "fetched now, and nothing is stored if that fails."
        ),
    )


class RevokeKeyForm(forms.Form):
    """Revoke (remove) a key now; the first POST asks for confirmation."""

    kid = forms.CharField(max_length=255, widget=forms.HiddenInput)
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)

    key: Key | None = None

    def clean_kid(self) -> str:
        kid: str = self.cleaned_data["kid"]
        key = Key.objects.filter(kid=kid).first()
        if key is None:
            raise forms.ValidationError(_("No key has this kid."), code="unknown")
        if key.revoked_at is not None:
            raise forms.ValidationError(
                _("Key %(kid)s is already revoked."), code="revoked", params={"kid": kid}
            )
        self.key = key
        return kid


class RevokeUserForm(forms.Form):
    """Revoke a user id (``revoke-user``) in one integration's user space; the first
    POST asks for confirmation.

    ``integration`` is re-read from the store (absent or empty: ``default``). A name
    it does not hold is an error and nothing is revoked: revoking in another space
    than the one asked for would leave the user in. The panel shows it as a select
    only when there are several integrations (the template lists them; the form
    reads nothing on a GET).
    """

    user_id = forms.CharField(
        label=_("User id"),
        # Not stripped: " alice" is not alice. The engine refuses it, so do we.
        strip=False,
        widget=forms.TextInput(
            attrs={
                "class": "vTextField chat-mono",
                "maxlength": 255,
                "autocomplete": "off",
                "spellcheck": "false",
            }
        ),
        help_text=_("Exactly as your tokens carry it in sub (or userId)."),
    )
    integration = forms.CharField(label=_("Integration"), required=False, max_length=50)
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)

    #: The integration read by :meth:`clean_integration`; its ``user_space`` is revoked in.
    target: Integration | None = None

    def clean_integration(self) -> str:
        name: str = self.cleaned_data["integration"] or DEFAULT_INTEGRATION
        try:
            self.target = Integration.objects.named(name)
        except KeyStateError as exc:
            raise forms.ValidationError(
                _("No integration is named %(name)s."), code="unknown", params={"name": name}
            ) from exc
        return name

    def clean_user_id(self) -> str:
        """The engine's own rule for user ids (SPEC §3 step 7), as the CLI applies it."""
        try:
            return tokens.user_id_of({"sub": self.cleaned_data["user_id"]})
        except TokenError as exc:
            raise forms.ValidationError(f"{capfirst(exc.detail)}.", code=exc.code) from exc


class PublicKeyForm(forms.Form):
    """Paste a client public key: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA), as
    PEM, a certificate, an OpenSSH line or a JWK."""

    public_key = forms.CharField(
        label=_("Public key"),
        max_length=public_keys.MAX_KEY_TEXT,
        widget=forms.Textarea(attrs={**_TEXTAREA, "class": "vLargeTextField chat-mono"}),
        help_text=_(
            "RSA of at least 2048 bits (RS256), EC P-256 (ES256) or Ed25519 (EdDSA); its "
            "type sets the algorithm your tokens must use. PEM (BEGIN PUBLIC KEY or BEGIN "
            "RSA PUBLIC KEY), an X.509 certificate, an OpenSSH line (ssh-rsa, "
            "ecdsa-sha2-nistp256, ssh-ed25519) or a JWK. Never paste the private key: it is "
            "refused and not stored."
        ),
    )
    kid = forms.CharField(
        label=_("Key id (kid)"),
        required=False,
        max_length=100,
        validators=[
            RegexValidator(
                r"^[A-Za-z0-9._:-]+\Z",
                _("Use letters, digits and . _ : - only."),
            )
        ],
        help_text=_(
            "Optional. Put the same kid in your tokens' header; by default the JWK's kid "
            "or the key's thumbprint."
        ),
    )


class TokenTestForm(forms.Form):
    """The tester: a token, and optionally the integration to judge it by."""

    token = forms.CharField(
        label=_("Token"),
        max_length=MAX_TESTED_TOKEN,
        widget=forms.Textarea(attrs={**_TEXTAREA, "class": "vLargeTextField chat-mono"}),
        help_text=_("Paste a token exactly as your site produced it. It is not stored."),
    )
    integration = forms.ChoiceField(
        label=_("Integration"),
        required=False,
        help_text=_(
            "By default the token's iss picks the integration, as on a path "
            "several integrations serve."
        ),
    )

    def __init__(self, *args: Any, integrations: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["integration"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [("", _("Found by the token's iss")), *((n, n) for n in integrations)]
