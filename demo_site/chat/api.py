"""The demo chat API under ``/chat/api/`` (guarded by ChatSecurityMiddleware).

These views trust only ``request.chat_identity``: the verified user id, or
the anonymous visitor's cookie id when security is off. A request with a
Bearer token is exempt from CSRF: a cross-site form cannot send an
``Authorization`` header. A request without one (security off) acts through
the browser's cookies — the anonymous id, the chat session — so its unsafe
methods are CSRF-checked like any form (``X-CSRFToken``), and refused with
403 ``csrf_failed``.
A stored message is also broadcast (``live``) to the user's open sockets on
every device and to the agents watching.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from chat_security import ChatIdentity, end_chat_session, forget_anonymous_id

from . import live
from .models import Message

logger = logging.getLogger("demo_site.chat")

MAX_BODY_BYTES = 16 * 1024
MAX_TEXT_CHARS = 2000
HISTORY_LIMIT = 200


class BadRequest(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def error(status: int, code: str, detail: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": code, "detail": detail}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    response["Cache-Control"] = "no-store"
    return response


def private_json(data: dict[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(data, status=status)
    response["Cache-Control"] = "private, no-store"
    return response


def conversation_of(identity: ChatIdentity) -> tuple[bool, str]:
    """``(anonymous, key)`` of the conversation; key "" means "not kept"."""
    if identity.anonymous:
        return True, identity.anonymous_id or ""
    return False, identity.user_id or ""


def user_json(identity: ChatIdentity) -> dict[str, Any]:
    # The anonymous id stays in its HttpOnly cookie; it is not echoed to scripts.
    return {
        "id": None if identity.anonymous else identity.user_id,
        "verified": not identity.anonymous,
    }


def clean_text(value: Any) -> str:
    """A message text: a string of 1..MAX_TEXT_CHARS characters that a database can store."""
    if not isinstance(value, str):
        raise BadRequest(400, "invalid_text", "'text' must be a string.")
    text = value.strip()
    if not text:
        raise BadRequest(400, "invalid_text", "'text' must not be empty.")
    if len(text) > MAX_TEXT_CHARS:
        raise BadRequest(400, "invalid_text", f"'text' is longer than {MAX_TEXT_CHARS} characters.")
    if "\x00" in text:
        raise BadRequest(400, "invalid_text", "'text' must not contain NUL characters.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates from "\ud800" escapes
        raise BadRequest(400, "invalid_text", "'text' is not valid Unicode.") from exc
    return text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_json(request: HttpRequest) -> dict[str, Any]:
    """The request body as a JSON object, size-checked before it is read."""
    if request.content_type != "application/json":
        raise BadRequest(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError as exc:
        raise BadRequest(400, "invalid_request", "Bad Content-Length.") from exc
    if length > MAX_BODY_BYTES:
        raise BadRequest(413, "too_large", f"The body is larger than {MAX_BODY_BYTES} bytes.")
    raw = request.body
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(413, "too_large", f"The body is larger than {MAX_BODY_BYTES} bytes.")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(400, "invalid_json", "The body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise BadRequest(400, "invalid_json", "The body must be a JSON object.")
    return data


def history(anonymous: bool, key: str) -> list[dict[str, Any]]:
    if not key:
        return []
    recent = Message.objects.filter(anonymous=anonymous, user_id=key).order_by("-created_at", "-id")
    return [m.as_json() for m in reversed(recent[:HISTORY_LIMIT])]


def identity_of(request: HttpRequest) -> ChatIdentity | None:
    identity = getattr(request, "chat_identity", None)
    return identity if isinstance(identity, ChatIdentity) else None


def not_guarded() -> JsonResponse:
    # Fail closed: without the middleware's verdict nobody is identified.
    logger.error("chat API reached without ChatSecurityMiddleware (check PROTECTED_PATHS)")
    return error(503, "unavailable", "The chat API is not guarded by ChatSecurityMiddleware.")


def _no_view(request: HttpRequest) -> HttpResponse:  # the CSRF check's callback, never called
    raise AssertionError("not a view")


def csrf_refusal(request: HttpRequest, identity: ChatIdentity) -> JsonResponse | None:
    """403 unless the request holds a token or passes Django's CSRF check.

    A verified identity means a Bearer token came with the request; an
    anonymous one means only cookies did, so a page on another site could have
    sent it. The check is Django's own (``CsrfViewMiddleware``, as
    ``csrf_protect`` runs it): safe methods pass, unsafe ones need the token.
    """
    if not identity.anonymous:
        return None
    check = CsrfViewMiddleware(_no_view)
    check.process_request(request)
    if check.process_view(request, _no_view, (), {}) is None:
        return None
    return error(
        403,
        "csrf_failed",
        "Without a chat token this request needs the site's CSRF token (X-CSRFToken header).",
    )


def touch_contact(identity: ChatIdentity) -> None:
    """Apply the token's identity claims to the contact record (SPEC §8).

    For an anonymous visitor with a cookie id this creates its ``anon:<id>`` contact.
    """
    try:
        identity.contact  # noqa: B018 - the lookup applies the claims
    except Exception as exc:  # noqa: BLE001 - the message matters more than the profile
        logger.warning("contact record not updated: %s", type(exc).__name__)


@csrf_exempt
def messages(request: HttpRequest) -> JsonResponse:
    """``GET``: this user's history; ``POST {"text": ...}``: add a message (201)."""
    if request.method not in ("GET", "HEAD", "POST"):
        return error(405, "method_not_allowed", "Use GET or POST.", Allow="GET, HEAD, POST")
    identity = identity_of(request)
    if identity is None:
        return not_guarded()
    refused = csrf_refusal(request, identity)
    if refused is not None:
        return refused
    anonymous, key = conversation_of(identity)
    if request.method != "POST":
        return private_json({"messages": history(anonymous, key), "user": user_json(identity)})
    try:
        text = clean_text(read_json(request).get("text"))
    except BadRequest as exc:
        return error(exc.status, exc.code, exc.detail)
    message = Message.objects.create(user_id=key, anonymous=anonymous, text=text)
    live.publish(message)
    # Anonymous visitors get their "anon:<id>" contact too, so a GDPR deletion finds them.
    touch_contact(identity)
    return private_json({"message": message.as_json(), "user": user_json(identity)}, status=201)


@csrf_exempt
def logout(request: HttpRequest) -> JsonResponse:
    """``POST``: destroy the chat session (its bound user id and kept token)."""
    if request.method != "POST":
        return error(405, "method_not_allowed", "Use POST.", Allow="POST")
    identity = identity_of(request)
    if identity is None:
        return not_guarded()
    refused = csrf_refusal(request, identity)
    if refused is not None:
        return refused  # a cross-site form must not end the visitor's chat
    end_chat_session(request)
    response = private_json({"status": "ended"})
    if identity.anonymous and identity.anonymous_id:
        # An anonymous visitor's "logout" starts a fresh anonymous conversation.
        forget_anonymous_id(response)
    return response
