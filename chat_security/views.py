"""Public HTTP views of the app (the demo site routes them)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from . import clock, keyring, keys
from .exceptions import (
    ChatSecurityError,
    KeyStateError,
    KeyStoreUnavailable,
    KeyUnreadable,
    TokenError,
)
from .log import get_logger
from .middleware import rejection
from .models import Key, KeyKind
from .session import kept_token

logger = get_logger("chat_security.views")


@require_GET
def jwks(request: HttpRequest) -> JsonResponse:
    """The service public keys (active and in grace) as a JWKS, for encrypting user_payload."""
    try:
        now = clock.now()
        usable = {e.kid for e in keyring.get_snapshot().usable(KeyKind.SERVICE_KEY, now)}
    except KeyStoreUnavailable:
        return JsonResponse({"error": "unavailable"}, status=503)
    rows = Key.objects.filter(kid__in=usable).order_by("-created_at")
    response = JsonResponse({"keys": [keys.public_jwk(k.public_pem, k.kid) for k in rows]})
    response["Cache-Control"] = "public, max-age=300"
    return response


def _no_store(response: JsonResponse) -> JsonResponse:
    response["Cache-Control"] = "private, no-store"
    return response


def _cannot_issue(exc: ChatSecurityError) -> JsonResponse:
    """The refusal for a token that cannot be issued: the client can fix none of it.

    No active secret: 401 ``security_not_configured``, the middleware's answer to a
    site without keys (SPEC §5), so a widget meets one answer for one state.
    Anything else: 503 ``unavailable``.
    """
    if isinstance(exc, KeyStateError):
        return rejection(
            TokenError(
                "security_not_configured",
                "no active signing secret exists yet, so no chat token can be issued",
            )
        )
    if isinstance(exc, TokenError):
        # Claims (from CLAIMS_BUILDER) that the verifier would refuse: server-side
        # trouble, answered like an outage; the code is a hint, the log names the claim.
        error = "unavailable"
        detail = f"No chat token can be issued: it would be refused ({exc.code}); "
        detail += "check CLAIMS_BUILDER."
    else:  # our own one-line messages (e.g. a CLAIMS_BUILDER returning no dict)
        error, detail = "unavailable", f"No chat token can be issued: {exc}."
    return JsonResponse({"error": error, "detail": detail}, status=503)


def chat_token(request: HttpRequest) -> JsonResponse:
    """``GET /api/chat-token``: the logged-in user's kept chat token (SPEC §5).

    ``{"token", "expires_at", "refresh_at"}`` with times in POSIX seconds;
    ``refresh_at`` is at 75 % of the lifetime. The same token comes back until
    then, so widgets may call this on every page load. When no token can be
    issued the answer is a JSON error, never a 500: 401 ``security_not_configured``
    without an active secret (as the middleware answers), 503 ``unavailable`` when
    the key store cannot be read or the claims from ``CLAIMS_BUILDER`` would be
    refused by the verifier.
    """
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse({"error": "method_not_allowed", "detail": "Use GET."}, status=405)
        response["Allow"] = "GET, HEAD"
        return _no_store(response)
    try:
        kept = kept_token(request)
    except KeyUnreadable as exc:
        logger.error("no chat token issued: %s", exc.detail)
        return _no_store(JsonResponse({"error": "unavailable", "detail": exc.detail}, status=503))
    except KeyStoreUnavailable:
        return _no_store(JsonResponse({"error": "unavailable"}, status=503))
    except ChatSecurityError as exc:
        logger.warning("no chat token issued: %s", exc)
        return _no_store(_cannot_issue(exc))
    if kept is None:
        return _no_store(
            JsonResponse(
                {"error": "login_required", "detail": "Log in to get a chat token."}, status=401
            )
        )
    return _no_store(JsonResponse(kept.as_json()))
