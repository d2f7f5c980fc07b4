"""Public HTTP views of the app (the demo site routes them)."""

from __future__ import annotations

import re

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from . import clock, keyring, keys
from .exceptions import (
    ChatSecurityError,
    KeyStateError,
    KeyStoreUnavailable,
    KeyUnreadable,
    TokenError,
)
from .integrations import DEFAULT_INTEGRATION, NAME
from .keyring import KeyEntry
from .log import get_logger
from .middleware import rejection
from .models import Key, KeyKind, KeyState
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


#: The order of a published key set: the key that signs first (a client that
#: takes the first key when a token names none gets the right one), then the
#: next one, then those still in grace.
_PUBLISHED = (KeyState.ACTIVE, KeyState.STAGED, KeyState.GRACE)
#: What a kid in a URL may look like (ours are RFC 7638 thumbprints, base64url).
_KID = re.compile(r"[A-Za-z0-9_-]{1,255}")


def published_signing_keys(name: str) -> list[KeyEntry] | None:
    """The integration's site signing key pairs anyone may see (SPEC §13), from the snapshot.

    Active, staged (the next key, published before it signs so that verifiers
    have it in time) and in grace (tokens it signed are still valid); never a
    retired or revoked one. None for an integration that does not exist. Costs
    no query while the snapshot is fresh; raises KeyStoreUnavailable as
    :func:`keyring.get_snapshot` does.
    """
    owner = keyring.get_snapshot().integrations.get(name)
    if owner is None:
        return None
    now = clock.now()
    entries = [
        e
        for e in owner.by_alg.get(KeyKind.SIGNING_KEY, ())
        if e.state(now) in _PUBLISHED and e.public_pem and not e.unreadable
    ]
    return sorted(entries, key=lambda e: _PUBLISHED.index(e.state(now)))  # stable: newest first


def _not_found(error: str, detail: str) -> JsonResponse:
    response = JsonResponse({"error": error, "detail": detail}, status=404)
    response["Cache-Control"] = "no-store"  # the integration or key may exist a minute later
    return response


def _unavailable() -> JsonResponse:
    response = JsonResponse({"error": "unavailable"}, status=503)
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def integration_jwks(request: HttpRequest, name: str) -> JsonResponse:
    """``/.well-known/chat-security/<name>/jwks.json``: the integration's signing public keys.

    What a hosted chat (IBM, watsonx) verifies the site's tokens with: one
    ``"use": "sig"`` JWK per published key (:func:`published_signing_keys`),
    with its ``kid`` and ``alg``. Public halves only; secrets, service keys and
    pasted client keys are never in it. Unknown integration: 404 JSON.
    """
    if not NAME.fullmatch(name):
        return _not_found("unknown_integration", "No integration has this name.")
    try:
        entries = published_signing_keys(name)
    except KeyStoreUnavailable:
        return _unavailable()
    if entries is None:
        return _not_found("unknown_integration", "No integration has this name.")
    jwks = [keys.signing_jwk(e.public_pem, e.kid, e.alg) for e in entries]
    response = JsonResponse({"keys": jwks})
    response["Cache-Control"] = "public, max-age=300"
    return response


@require_GET
def signing_key_pem(request: HttpRequest, name: str, kid: str) -> HttpResponse:
    """``/.well-known/chat-security/<name>/<kid>.pem``: one published signing key's public PEM.

    For verifiers configured with a PEM rather than a JWKS URL (the panel links
    here). The same keys as :func:`integration_jwks`, as a download; anything
    else (another integration's kid, a retired key, a secret's kid) is 404.
    """
    if not NAME.fullmatch(name) or not _KID.fullmatch(kid):
        return _not_found("not_found", "No published signing key of this integration has this kid.")
    try:
        entries = published_signing_keys(name) or []
    except KeyStoreUnavailable:
        return _unavailable()
    entry = next((e for e in entries if e.kid == kid), None)
    if entry is None:
        return _not_found("not_found", "No published signing key of this integration has this kid.")
    response = HttpResponse(entry.public_pem, content_type="application/x-pem-file")
    # Both parts were matched above against [A-Za-z0-9_-]: nothing to quote.
    response["Content-Disposition"] = f'attachment; filename="{name}-{kid}.pem"'
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


def _unknown_integration(detail: str) -> JsonResponse:
    return _no_store(JsonResponse({"error": "unknown_integration", "detail": detail}, status=400))


def chat_token(request: HttpRequest) -> JsonResponse:
    """``GET /api/chat-token[?integration=NAME]``: the logged-in user's kept chat token (SPEC §5).

    ``{"token", "expires_at", "refresh_at"}`` with times in POSIX seconds;
    ``refresh_at`` is at 75 % of the lifetime. The same token comes back until
    then, so widgets may call this on every page load. ``integration`` (default
    ``default``, SPEC §13) names the integration that signs it; a name that is
    no integration's is 400 ``unknown_integration``, whoever asks (the query
    string is the caller's mistake, not the session's). When no token can be
    issued the answer is a JSON error, never a 500: 401 ``security_not_configured``
    without an active secret (as the middleware answers), 503 ``unavailable`` when
    the key store cannot be read or the claims from ``CLAIMS_BUILDER`` would be
    refused by the verifier.
    """
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse({"error": "method_not_allowed", "detail": "Use GET."}, status=405)
        response["Allow"] = "GET, HEAD"
        return _no_store(response)
    name = request.GET.get("integration", DEFAULT_INTEGRATION)
    if not NAME.fullmatch(name):  # checked before anything is looked up by it
        return _unknown_integration(
            "integration= is an integration name: 1-50 lower-case letters, digits and hyphens."
        )
    try:
        # default always exists: asking the key store for it would only turn a
        # logged-out caller's 401 into a 503 while the store is down.
        if name != DEFAULT_INTEGRATION and name not in keyring.get_snapshot().integrations:
            return _unknown_integration(f"No integration is named {name!r}.")
        kept = kept_token(request, name)
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
