"""``{% chat_identity_token %}``: the logged-in user's token as a page variable (SPEC §6).

Usage::

    {% load chat_security %}
    {% chat_identity_token %}                      {# <script>var ConvrsUser = "…";</script> #}
    {% chat_identity_token nonce=request.csp_nonce %}
    {% chat_identity_token integration="ios" %}    {# signed by that integration (SPEC §13) #}

The token comes from the login session (:func:`chat_security.session.kept_token`),
so rendering does not sign anything once a token is kept. A page that carries
a token is marked (:mod:`chat_security.marks`) so
:class:`~chat_security.middleware.ChatSecurityMiddleware` ends it with
``Cache-Control: private`` and Django's cache machinery (``cache_page``, the
cache middleware) does not store it.
"""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from .. import keyring
from ..conf import JS_IDENTIFIER, app_settings
from ..exceptions import ChatSecurityError, KeyUnreadable, TokenError
from ..integrations import DEFAULT_INTEGRATION, NAME
from ..log import get_logger
from ..marks import anonymous_id_for, is_finished, mark_private
from ..session import kept_token

logger = get_logger("chat_security.templatetags")
register = template.Library()

# Everything that could end a <script> element or a JavaScript string early.
_SCRIPT_ESCAPES = {
    ord("<"): "\\u003C",
    ord(">"): "\\u003E",
    ord("&"): "\\u0026",
    ord("\u2028"): "\\u2028",
    ord("\u2029"): "\\u2029",
}


def script_string(value: str) -> str:
    """``value`` as a JavaScript string literal that is safe inside ``<script>``."""
    return json.dumps(value).translate(_SCRIPT_ESCAPES)


def js_variable() -> str | None:
    name = app_settings.JS_VARIABLE
    if isinstance(name, str) and JS_IDENTIFIER.fullmatch(name):
        return name
    logger.error("CHAT_SECURITY['JS_VARIABLE'] is not a JavaScript identifier; no token written")
    return None


def _unknown_integration(integration: Any) -> str | None:
    """Why ``integration`` cannot sign (a one-line log reason), or None when it can be asked.

    The name is checked before it is looked up; one that is not a name is not
    repeated in the log.
    """
    if not isinstance(integration, str) or not NAME.fullmatch(integration):
        return "integration= is not an integration name (1-50 lower-case letters, digits, hyphens)"
    if integration == DEFAULT_INTEGRATION or integration in keyring.get_snapshot().integrations:
        return None
    return f"no integration is named {integration!r}"


@register.simple_tag(takes_context=True)
def chat_identity_token(
    context: template.Context, nonce: Any = None, integration: Any = DEFAULT_INTEGRATION
) -> str:
    """``<script>var ConvrsUser = "<jwt>";</script>`` for a logged-in user, else nothing.

    ``integration`` names the integration whose key signs the token (SPEC §13);
    an unknown one writes nothing and logs a warning.
    """
    request = context.get("request")
    if request is None:
        logger.error(
            "{% chat_identity_token %} needs the request context processor; no token written"
        )
        return ""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        if app_settings.ANONYMOUS_IDS:
            anonymous_id_for(request)  # the middleware sets the cookie if it is new
        return ""
    if is_finished(request):
        # Rendered after the middleware sent the headers (a streaming response):
        # nothing can mark this page private any more, so it gets no token.
        logger.error(
            "{% chat_identity_token %} rendered after the response headers were final "
            "(a streaming response?); no token written"
        )
        return ""
    # Before issuing: whatever happens next, this page belongs to one person.
    mark_private(request)
    name = js_variable()
    if name is None:
        return ""
    try:
        unknown = _unknown_integration(integration)
        if unknown is not None:
            logger.warning("no chat token written: %s", unknown)
            return ""
        kept = kept_token(request, integration)
    except ChatSecurityError as exc:
        # A page must render even while the chat cannot be secured; the widget then
        # falls back to the token endpoint, which reports the problem as JSON. A
        # TokenError says its §4 code and which claim, never a claim's value.
        reason = str(exc) if isinstance(exc, TokenError | KeyUnreadable) else type(exc).__name__
        logger.warning("no chat token written: %s", reason)
        return ""
    if kept is None:
        return ""
    if nonce is None:
        nonce = getattr(request, "csp_nonce", None)
    nonce_attr = format_html(' nonce="{}"', nonce) if nonce else ""
    return mark_safe(  # noqa: S308 - the name is an identifier, the value is escaped above
        f"<script{nonce_attr}>var {name} = {script_string(kept.token)};</script>"
    )


@register.simple_tag
def chat_js_variable() -> SafeString:
    """The configured variable name (``JS_VARIABLE``), e.g. for a widget's data attribute."""
    return format_html("{}", js_variable() or "")
