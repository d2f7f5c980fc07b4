"""URLs and views for ``bench_request.py``.

``/chat/api/whoami`` is the small JSON view (under ``PROTECTED_PATHS``, so the
candidate stack verifies its Bearer token first); ``/page/plain`` and
``/page/tagged`` are the same logged-in page without and with
``{% chat_identity_token %}``.
"""

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import path

from benchmarks.bench_common import AGENT_DATA, whoami

PAGE = """<!doctype html>
<html><head><title>Account</title></head>
<body><h1>Hello {{ user.get_full_name }}</h1>
<p>Signed in as {{ user.get_username }} ({{ user.email }}).</p>
<ul>{% for item in items %}<li>{{ item }}</li>{% endfor %}</ul>
{TAG}</body></html>
"""
_PLAIN = engines["django"].from_string(PAGE.replace("{TAG}", ""))
_TAGGED = engines["django"].from_string(
    "{% load chat_security %}" + PAGE.replace("{TAG}", "{% chat_identity_token %}")
)
ITEMS = ["Statements", "Payments", "Cards", "Settings"]


def bench_claims(user: Any) -> dict[str, Any]:
    """``CLAIMS_BUILDER`` for the tagged page: the same shape as the API tokens."""
    name = user.get_full_name() or user.get_username()
    return {
        "sub": str(user.pk),
        "userData": {"name": name, "email": user.email, "plan": "Premium"},
        "agentData": AGENT_DATA[:3],
    }


def plain_page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(_PLAIN.render({"items": ITEMS}, request))


def tagged_page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(_TAGGED.render({"items": ITEMS}, request))


urlpatterns = [
    path("chat/api/whoami", whoami),
    path("page/plain", plain_page),
    path("page/tagged", tagged_page),
]
