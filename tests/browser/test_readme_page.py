"""The README's chat page (``templates/chat.html`` as pasted) in real headless Chromium.

The tag writes nothing for a visitor who is not logged in, or while no
secret exists; the page's script must not throw then, and must send the token
when the tag wrote one (issue 17, item 9).
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.test import Client
from django.urls import path
from playwright.sync_api import Page

from chat_security.models import Key
from tests import readme
from tests.chat_urls import whoami

pytestmark = [pytest.mark.browser, pytest.mark.urls(__name__)]

#: The README's script before the guard: it threw when the tag wrote nothing.
UNGUARDED = """{% load chat_security %}<!doctype html>
<title>Chat</title>
{% chat_identity_token %}
<script>
  fetch("/chat/api/whoami", {headers: {Authorization: "Bearer " + ConvrsUser}});
</script>
"""


def page_of(source: str):
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(engines["django"].from_string(source).render({}, request))

    return view


urlpatterns = [
    # The README's page, without its @login_required: the tag meets every visitor here.
    path("chat/", page_of(readme.file("templates/chat.html"))),
    path("chat/unguarded/", page_of(UNGUARDED)),
    path("chat/api/whoami", whoami),
]


def visit(page: Page, url: str) -> tuple[list[str], list[str]]:
    """Load ``url``: the page's uncaught errors and the chat API calls it made."""
    errors: list[str] = []
    calls: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: calls.append(request.url))
    page.goto(url)
    page.wait_for_load_state("networkidle")
    return errors, [call for call in calls if "/api/" in call]


def log_in(page: Page, base: str, user) -> None:
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base}])


@pytest.mark.parametrize("logged_in", [False, True], ids=["anonymous", "no secret yet"])
def test_no_error_when_the_tag_writes_nothing(logged_in, live_server, page, django_user_model):
    if logged_in:
        log_in(page, live_server.url, django_user_model.objects.create_user("alice"))
    errors, calls = visit(page, f"{live_server.url}/chat/")
    assert page.evaluate("typeof window.ConvrsUser") == "undefined"
    assert errors == [] and calls == []


def test_the_unguarded_script_threw_there(live_server, page):
    """The probe above sees the fault it guards against."""
    errors, calls = visit(page, f"{live_server.url}/chat/unguarded/")
    assert any("ConvrsUser is not defined" in error for error in errors), errors
    assert calls == []


def test_the_readme_page_sends_the_token(live_server, page, django_user_model):
    Key.objects.generate_secret(actor="tests")
    alice = django_user_model.objects.create_user("alice")
    log_in(page, live_server.url, alice)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    with page.expect_response(lambda r: r.url.endswith("/chat/api/whoami")) as answer:
        page.goto(f"{live_server.url}/chat/")
    assert answer.value.status == 200
    assert answer.value.json()["user_id"] == str(alice.pk)
    assert answer.value.request.headers["authorization"].startswith("Bearer ey")
    assert errors == []
