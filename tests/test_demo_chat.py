from __future__ import annotations

import json
import re

import pytest
from django.test import AsyncClient, Client

from chat_security.session import SUBJECT_SESSION_KEY
from chat_security.signals import contact_deleting
from demo_site.chat.models import Message
from tests import chat_helpers
from tests.chat_helpers import bearer, chat_settings, security_off

secret, token_for = chat_helpers.secret, chat_helpers.token_for
alice, bob = chat_helpers.alice, chat_helpers.bob

MESSAGES = "/chat/api/messages"
LOGOUT = "/chat/api/logout"


def post(client: Client, body, headers=None, content_type="application/json"):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(MESSAGES, data, content_type=content_type, headers=headers or {})


@pytest.fixture
def contacts(monkeypatch):
    """Replace identity.contact_for (built elsewhere) with a recorder."""
    import chat_security.identity as identity_module

    seen = []
    monkeypatch.setattr(identity_module, "contact_for", seen.append, raising=False)
    return seen


# -- verified users ------------------------------------------------------------------


@pytest.mark.django_db
def test_post_and_history_for_a_verified_user(token_for, contacts):
    client = Client()
    response = post(client, {"text": "  hello there  "}, bearer(token_for("user-7")))
    assert response.status_code == 201
    body = response.json()
    assert body["user"] == {"id": "user-7", "verified": True}
    assert body["message"]["text"] == "hello there" and body["message"]["sender"] == "user"
    assert response["Cache-Control"] == "private, no-store"
    stored = Message.objects.get()
    assert (stored.user_id, stored.anonymous) == ("user-7", False)
    assert [c.user_id for c in contacts] == ["user-7"]

    history = client.get(MESSAGES, headers=bearer(token_for("user-7"))).json()
    assert [m["text"] for m in history["messages"]] == ["hello there"]
    assert history["user"] == {"id": "user-7", "verified": True}


@pytest.mark.django_db
def test_history_follows_the_user_not_the_browser(token_for, contacts):
    post(Client(), {"text": "from my laptop"}, bearer(token_for("user-7")))
    post(Client(), {"text": "someone else"}, bearer(token_for("user-8")))
    phone = Client().get(MESSAGES, headers=bearer(token_for("user-7"))).json()
    assert [m["text"] for m in phone["messages"]] == ["from my laptop"]
    other = Client().get(MESSAGES, headers=bearer(token_for("user-8"))).json()
    assert [m["text"] for m in other["messages"]] == ["someone else"]


@pytest.mark.django_db(transaction=True)
async def test_chat_api_async(token_for, contacts):
    client = AsyncClient()
    response = await client.post(
        MESSAGES, json.dumps({"text": "async hi"}), "application/json", headers=bearer(token_for())
    )
    assert response.status_code == 201
    history = await client.get(MESSAGES, headers=bearer(token_for()))
    assert [m["text"] for m in history.json()["messages"]] == ["async hi"]


@pytest.mark.django_db
def test_a_failing_contact_update_does_not_lose_the_message(token_for, monkeypatch):
    import chat_security.identity as identity_module

    def broken(identity):
        raise RuntimeError("contact store down")

    monkeypatch.setattr(identity_module, "contact_for", broken, raising=False)
    assert post(Client(), {"text": "hi"}, bearer(token_for())).status_code == 201
    assert Message.objects.count() == 1


@pytest.mark.django_db
def test_api_requires_a_token_when_security_is_on(secret):
    response = post(Client(), {"text": "hi"})
    assert response.status_code == 401 and response.json()["error"] == "missing_token"
    assert Client().get(MESSAGES).status_code == 401
    assert Message.objects.count() == 0


# -- anonymous visitors (security off) -------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_history_is_kept_by_the_cookie(secret):
    security_off()
    with chat_settings(ANONYMOUS_IDS=True):
        browser = Client()
        response = post(browser, {"text": "anyone there?"})
        assert response.status_code == 201
        assert response.json()["user"] == {"id": None, "verified": False}
        anon_id = response.cookies["chat_anonymous_id"].value
        assert Message.objects.get().user_id == anon_id and Message.objects.get().anonymous
        reloaded = browser.get(MESSAGES).json()
        assert [m["text"] for m in reloaded["messages"]] == ["anyone there?"]
        assert Client().get(MESSAGES).json()["messages"] == []

        ended = browser.post(LOGOUT)
        assert ended.status_code == 200
        assert ended.cookies["chat_anonymous_id"].value == ""  # deleted: a fresh visitor next
        assert browser.get(MESSAGES).json()["messages"] == []


@pytest.mark.django_db
def test_anonymous_without_ids_never_sees_a_shared_history(secret):
    security_off()
    assert post(Client(), {"text": "one"}).status_code == 201
    assert post(Client(), {"text": "two"}).status_code == 201
    assert Client().get(MESSAGES).json()["messages"] == []


# -- bad input -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("not json", 400, "invalid_json"),
        (" ", 400, "invalid_json"),
        ("[1, 2]", 400, "invalid_json"),
        ('{"text": NaN}', 400, "invalid_json"),
        (b"\xff\xfe{}", 400, "invalid_json"),
        ("[" * 5000 + "]" * 5000, 400, "invalid_json"),
        ("{}", 400, "invalid_text"),
        ('{"text": 12}', 400, "invalid_text"),
        ('{"text": null}', 400, "invalid_text"),
        ('{"text": ["a"]}', 400, "invalid_text"),
        ('{"text": ""}', 400, "invalid_text"),
        ('{"text": "   \\n "}', 400, "invalid_text"),
        ('{"text": "a\\u0000b"}', 400, "invalid_text"),
        ('{"text": "\\ud800"}', 400, "invalid_text"),
        (json.dumps({"text": "x" * 2001}), 400, "invalid_text"),
        (json.dumps({"text": "x" * 20000}), 413, "too_large"),
    ],
)
def test_bad_bodies_are_clear_4xx_and_store_nothing(body, status, code, token_for):
    response = post(Client(), body, bearer(token_for()))
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == code
    assert Message.objects.count() == 0


@pytest.mark.django_db
def test_longest_text_is_accepted(token_for):
    response = post(Client(), {"text": "é" * 2000}, bearer(token_for()))
    assert response.status_code == 201


@pytest.mark.django_db
def test_non_json_content_type_is_415(token_for):
    response = post(Client(), "text=hi", bearer(token_for()), "application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert Message.objects.count() == 0


@pytest.mark.django_db
def test_lying_content_length_is_refused(token_for):
    client = Client()
    response = client.generic(
        "POST",
        MESSAGES,
        b'{"text": "hi"}',
        content_type="application/json",
        headers=bearer(token_for()),
        CONTENT_LENGTH="99999999",
    )
    assert response.status_code == 413
    assert Message.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["put", "patch", "delete", "options"])
def test_wrong_methods_are_405_json(method, token_for):
    for url, allow in ((MESSAGES, "GET, HEAD, POST"), (LOGOUT, "POST")):
        response = getattr(Client(), method)(url, headers=bearer(token_for()))
        assert response.status_code == 405
        assert response.json()["error"] == "method_not_allowed"
        assert response["Allow"] == allow
    assert Client().get(LOGOUT, headers=bearer(token_for())).status_code == 405


@pytest.mark.django_db
def test_api_is_csrf_exempt_but_bearer_only(alice, token_for):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert post(client, {"text": "hi"}).status_code == 401  # the session cookie is not enough
    assert post(client, {"text": "hi"}, bearer(token_for(str(alice.pk)))).status_code == 201


@pytest.mark.django_db
def test_unguarded_api_fails_closed(token_for):
    with chat_settings(PROTECTED_PATHS=["/somewhere-else/"]):
        response = post(Client(), {"text": "hi"}, bearer(token_for()))
    assert response.status_code == 503
    assert Message.objects.count() == 0


# -- chat logout ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_logout_destroys_the_chat_session(alice, token_for):
    client = Client()
    client.force_login(alice)
    client.get(MESSAGES, headers=bearer(token_for("alice")))
    assert client.session[SUBJECT_SESSION_KEY] == "alice"
    refused = client.get(MESSAGES, headers=bearer(token_for("mallory")))
    assert refused.json()["error"] == "subject_changed"
    assert client.post(LOGOUT, headers=bearer(token_for("alice"))).json() == {"status": "ended"}
    assert SUBJECT_SESSION_KEY not in client.session
    assert client.get(MESSAGES, headers=bearer(token_for("mallory"))).status_code == 200


def _anonymous_browser() -> Client:
    """A visitor chatting anonymously (security off), with the site's CSRF cookie."""
    browser = Client(enforce_csrf_checks=True)
    assert post(browser, {"text": "hello"}, _csrf(browser)).status_code == 201
    return browser


def _csrf(browser: Client) -> dict[str, str]:
    """The header the widget sends: the token of the page it sits on."""
    page = browser.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())
    return {"X-CSRFToken": token.group(1)}


@pytest.mark.django_db
def test_a_cross_site_form_cannot_end_the_chat_session(alice, secret):
    """Security off: without a token the cookies speak for the browser, so CSRF applies."""
    security_off()
    with chat_settings(ANONYMOUS_IDS=True):
        browser = Client(enforce_csrf_checks=True)
        browser.force_login(alice)
        session = browser.session
        session[SUBJECT_SESSION_KEY] = "alice"
        session.save()
        browser.cookies["chat_anonymous_id"] = "anon-0123456789abcdef_-ABCD"
        # What a form on another site makes the browser send: its cookies, no token.
        forged = browser.post(LOGOUT, headers={"Origin": "https://evil.example"})
        assert forged.status_code == 403 and forged.json()["error"] == "csrf_failed"
        assert forged["Content-Type"] == "application/json"
        assert "chat_anonymous_id" not in forged.cookies  # the anonymous id stays
        assert browser.session[SUBJECT_SESSION_KEY] == "alice"  # the chat session stays
        assert browser.post(LOGOUT).status_code == 403  # no Origin, no token: the same

        ended = browser.post(LOGOUT, headers=_csrf(browser))  # the widget, on the site's page
        assert ended.status_code == 200 and ended.json() == {"status": "ended"}
        assert ended.cookies["chat_anonymous_id"].value == ""
        assert SUBJECT_SESSION_KEY not in browser.session


@pytest.mark.django_db
def test_an_anonymous_message_needs_the_csrf_token_too(secret):
    security_off()
    with chat_settings(ANONYMOUS_IDS=True):
        browser = _anonymous_browser()
        refused = post(browser, {"text": "from another site"})
        assert refused.status_code == 403 and refused.json()["error"] == "csrf_failed"
        assert browser.get(MESSAGES).status_code == 200  # reading is not acting
    assert list(Message.objects.values_list("text", flat=True)) == ["hello"]


@pytest.mark.django_db
def test_a_bearer_request_needs_no_csrf_token(alice, token_for):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    token = bearer(token_for("alice"))
    assert post(browser, {"text": "hi"}, token).status_code == 201
    assert browser.post(LOGOUT, headers=token).json() == {"status": "ended"}


# -- GDPR ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_contact_deleting_removes_the_users_messages(token_for, contacts):
    post(Client(), {"text": "mine"}, bearer(token_for("user-7")))
    post(Client(), {"text": "mine too"}, bearer(token_for("user-7")))
    post(Client(), {"text": "not mine"}, bearer(token_for("user-8")))
    results = contact_deleting.send(sender=None, user_id="user-7", contact=None)
    assert {"messages": 2} in [result for _receiver, result in results]
    assert list(Message.objects.values_list("user_id", flat=True)) == ["user-8"]


# -- pages ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_dashboard_needs_login_and_carries_the_token(alice, secret):
    assert Client().get("/").status_code == 302
    client = Client()
    client.force_login(alice)
    response = client.get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "var ConvrsUser = " in html and 'id="chat-widget"' in html
    assert 'data-token-url="/api/chat-token"' in html
    assert "private" in response["Cache-Control"]


@pytest.mark.django_db
def test_login_page_offers_anonymous_chat_only_when_security_is_off(secret):
    assert 'id="chat-widget"' not in Client().get("/accounts/login/").content.decode()
    security_off()
    html = Client().get("/accounts/login/").content.decode()
    assert 'id="chat-widget"' in html and 'data-token-url=""' in html


@pytest.mark.django_db
def test_agent_page_is_for_staff(alice, django_user_model, token_for, contacts):
    post(Client(), {"text": "help me"}, bearer(token_for("user-7")))
    assert Client().get("/chat/agent/").status_code == 302
    regular = Client()
    regular.force_login(alice)
    assert regular.get("/chat/agent/").status_code == 403
    staff = Client()
    staff.force_login(django_user_model.objects.create_user("agent", is_staff=True))
    listing = staff.get("/chat/agent/")
    assert listing.status_code == 200
    assert "user-7" in listing.content.decode() and "verified" in listing.content.decode()

    reply = staff.post("/chat/agent/?user=user-7&anonymous=0", {"text": "on it"})
    assert reply.status_code == 302
    history = Client().get(MESSAGES, headers=bearer(token_for("user-7"))).json()["messages"]
    assert [(m["sender"], m["text"]) for m in history] == [("user", "help me"), ("agent", "on it")]
    page = staff.get("/chat/agent/?user=user-7&anonymous=0").content.decode()
    assert "help me" in page and "on it" in page


@pytest.mark.django_db
def test_agent_page_escapes_messages(django_user_model, token_for, contacts):
    post(Client(), {"text": "<script>alert(1)</script>"}, bearer(token_for("<b>x</b>")))
    staff = Client()
    staff.force_login(django_user_model.objects.create_user("agent", is_staff=True))
    page = staff.get("/chat/agent/?user=%3Cb%3Ex%3C/b%3E&anonymous=0").content.decode()
    assert "<script>alert(1)</script>" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;" in page
