"""Forms of the Developer – WebChat admin panel.

They only validate input; the views hand the cleaned values to the key
store's manager methods (the same ones the CLI calls), which own every rule.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.validators import RegexValidator
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from .. import keys, tokens
from ..conf import MAX_GRACE_HOURS, app_settings
from ..exceptions import TokenError
from ..models import Key

#: The tester accepts more than MAX_TOKEN_BYTES so that an oversized token gets
#: the engine's token_too_large explanation rather than a form error.
MAX_TESTED_TOKEN = 64 * 1024

_TEXTAREA = {"rows": 6, "cols": 80, "spellcheck": "false", "autocomplete": "off"}


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


class SecuritySwitchForm(forms.Form):
    """Turn **Secure your web chat** on or off (off needs ``confirm``)."""

    enabled = forms.TypedChoiceField(
        choices=[("on", _("On")), ("off", _("Off"))], coerce=lambda v: v == "on"
    )
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)


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
    """Revoke a user id (``revoke-user``); the first POST asks for confirmation."""

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
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def clean_user_id(self) -> str:
        """The engine's own rule for user ids (SPEC §3 step 7), as the CLI applies it."""
        try:
            return tokens.user_id_of({"sub": self.cleaned_data["user_id"]})
        except TokenError as exc:
            raise forms.ValidationError(f"{capfirst(exc.detail)}.", code=exc.code) from exc


class PublicKeyForm(forms.Form):
    """Paste a client RS256 public key (PEM, certificate, ssh-rsa line or JWK)."""

    public_key = forms.CharField(
        label=_("Public key"),
        max_length=keys.MAX_KEY_TEXT,
        widget=forms.Textarea(attrs={**_TEXTAREA, "class": "vLargeTextField chat-mono"}),
        help_text=_(
            "PEM (BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY), an X.509 certificate, an "
            "'ssh-rsa' line or an RSA JWK. RSA, at least 2048 bits. Never paste the "
            "private key: it is refused and not stored."
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
    token = forms.CharField(
        label=_("Token"),
        max_length=MAX_TESTED_TOKEN,
        widget=forms.Textarea(attrs={**_TEXTAREA, "class": "vLargeTextField chat-mono"}),
        help_text=_("Paste a token exactly as your site produced it. It is not stored."),
    )
