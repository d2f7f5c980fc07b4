"""The demo's pages: login (with an anonymous chat when security is off), the
dashboard with the widget, and the agent page for staff."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode

from chat_security import DEFAULT_USER_SPACE, KeyStoreUnavailable, find_contact, security_enabled
from chat_security.models import Contact

from . import live
from .api import BadRequest, clean_text
from .models import Message

CONVERSATION_LIMIT = 100


def security_is_on() -> bool:
    """The switch, from the in-memory key snapshot; unknown counts as on (fail closed)."""
    try:
        return security_enabled()
    except KeyStoreUnavailable:
        return True


def widget_context(*, with_token_endpoint: bool) -> dict[str, Any]:
    return {
        "chat_messages_url": reverse("chat:messages"),
        "chat_logout_url": reverse("chat:logout"),
        "chat_token_url": reverse("chat-token") if with_token_endpoint else "",
        # The live chat (demo_site/asgi.py); "" leaves the widget on the HTTP API.
        "chat_ws_url": getattr(settings, "DEMO_CHAT_WS_URL", "/ws/chat/"),
        # Seconds between history refreshes without a socket; 0 turns polling off.
        "chat_poll_seconds": getattr(settings, "DEMO_CHAT_POLL_SECONDS", 10),
    }


class DemoLoginView(LoginView):
    """Django's login view; anonymous visitors may chat here while security is off."""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["anonymous_chat"] = not security_is_on()
        context.update(widget_context(with_token_endpoint=False))
        return context


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    context = widget_context(with_token_endpoint=True)
    context["security_enabled"] = security_is_on()
    return render(request, "dashboard.html", context)


def _require_staff(request: HttpRequest) -> HttpResponse | None:
    if not request.user.is_authenticated:
        return redirect(f"{reverse('login')}?{urlencode({'next': request.get_full_path()})}")
    if not (request.user.is_active and request.user.is_staff):
        raise PermissionDenied("The agent page is for staff.")
    return None


def _conversations() -> list[dict[str, Any]]:
    rows = list(
        Message.objects.values("anonymous", "user_id")
        .annotate(count=Count("id"), last_at=Max("created_at"))
        .order_by("-last_at")[:CONVERSATION_LIMIT]
    )
    verified_ids = [r["user_id"] for r in rows if not r["anonymous"]]
    # The demo chat is default's: its user ids are of default's user space (SPEC §13).
    found = Contact.objects.filter(user_space=DEFAULT_USER_SPACE, user_id__in=verified_ids)
    contacts = {c.user_id: c for c in found}
    for row in rows:
        row["contact"] = None if row["anonymous"] else contacts.get(row["user_id"])
        row["query"] = urlencode({"user": row["user_id"], "anonymous": int(row["anonymous"])})
    return rows


def _recent(user_id: str, anonymous: bool, limit: int = 500) -> list[Message]:
    recent = Message.objects.filter(user_id=user_id, anonymous=anonymous).order_by(
        "-created_at", "-id"
    )
    return list(reversed(recent[:limit]))


def agent(request: HttpRequest) -> HttpResponse:
    """Staff only: every conversation with its verified user id, and a reply box."""
    refused = _require_staff(request)
    if refused is not None:
        return refused
    user_id = request.GET.get("user")
    anonymous = request.GET.get("anonymous") == "1"
    if request.method == "POST" and user_id is not None:
        try:
            text = clean_text(request.POST.get("text", ""))
        except BadRequest as exc:
            flash.error(request, exc.detail)
        else:
            message = Message.objects.create(
                user_id=user_id,
                anonymous=anonymous,
                sender=Message.Sender.AGENT,
                author=request.user.get_username(),
                text=text,
            )
            live.publish(message)  # the visitor's open sockets see it at once
        query = urlencode({"user": user_id, "anonymous": int(anonymous)})
        return redirect(f"{reverse('chat:agent')}?{query}")
    selected = None
    if user_id is not None:
        selected = {
            "user_id": user_id,
            "anonymous": anonymous,
            "messages": _recent(user_id, anonymous),
            "contact": find_contact(user_id, anonymous=anonymous),
        }
    context = {
        "conversations": _conversations(),
        "selected": selected,
        "agent_ws_url": getattr(settings, "DEMO_AGENT_WS_URL", "/ws/agent/"),
    }
    response = render(request, "chat/agent.html", context)
    response["Cache-Control"] = "private, no-store"
    return response
