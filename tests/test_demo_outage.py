"""The demo while its database is down (issue 16, item 9; SPEC §12): 503 / 4503, never a 500.

In one process: the database "goes down" for the connection of the thread
that serves the request (``connection.execute_wrapper`` refusing every
query, as a dead server does), and the demo runs with its own middleware
(``demo_site.settings.MIDDLEWARE``). ``tests/test_faults.py`` stops a real
database under real servers.
"""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection
from django.test import Client, override_settings

from chat_security import keyring
from chat_security.middleware import DATABASE_UNAVAILABLE
from demo_site import settings as demo_settings
from demo_site.asgi import application
from demo_site.chat.models import Message
from tests import chat_helpers
from tests.chat_helpers import bearer, chat_settings
from tests.ws_helpers import expect_close, expect_identified, finish, open_socket

secret, token_for, alice = chat_helpers.secret, chat_helpers.token_for, chat_helpers.alice

OUTAGE_MIDDLEWARE = "demo_site.chat.outage.SessionMiddleware"
ORIGIN = (b"origin", b"http://testserver")


def demo_stack() -> override_settings:
    """The demo's own middleware and message storage (tests/settings.py has Django's)."""
    return override_settings(
        MIDDLEWARE=demo_settings.MIDDLEWARE, MESSAGE_STORAGE=demo_settings.MESSAGE_STORAGE
    )


def refuse_every_query(execute, sql, params, many, context):
    raise OperationalError("the database is down (test)")


def refuse_session_writes(execute, sql, params, many, context):
    """Up for reads, down for the session save that follows the view."""
    if "django_session" in sql and not sql.lstrip().upper().startswith("SELECT"):
        raise OperationalError("the database went down (test)")
    return execute(sql, params, many, context)


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.content
    assert response.json() == {"error": "unavailable", "detail": DATABASE_UNAVAILABLE}
    assert "no-store" in response["Cache-Control"]


def test_the_demo_puts_its_outage_session_middleware_in_djangos_place():
    stack = demo_settings.MIDDLEWARE
    assert "django.contrib.sessions.middleware.SessionMiddleware" not in stack
    assert stack.index(OUTAGE_MIDDLEWARE) < stack.index(
        "chat_security.middleware.ChatSecurityMiddleware"
    )
    assert demo_settings.MESSAGE_STORAGE.endswith(
        "CookieStorage"
    )  # no session write on the way out


# -- HTTP ------------------------------------------------------------------------------------


@pytest.fixture
def staff(db, django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("agent", is_staff=True))
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("get", "/chat/agent/", None),
        ("get", "/chat/agent/?user=user-7&anonymous=0", None),
        ("post", "/chat/agent/?user=user-7&anonymous=0", {"text": "on it"}),
        ("get", "/", None),
        ("get", "/api/chat-token", None),
        ("get", "/admin/", None),
        ("post", "/accounts/logout/", {}),
    ],
)
def test_staff_pages_answer_503_while_the_database_is_down(staff, secret, method, path, data):
    with demo_stack():
        with connection.execute_wrapper(refuse_every_query):
            assert_unavailable(getattr(staff, method)(path, data))
        # Back up: the same request is served, once the key store's first retry is due
        # (a failed read waits keyring.retry_delay(1) before the next).
        time.sleep(keyring.retry_delay(1) + 0.01)
        assert getattr(staff, method)(path, data).status_code in (200, 302)


@pytest.mark.django_db
def test_the_login_answers_503_and_a_page_that_needs_no_database_is_served(alice, secret):
    with demo_stack(), connection.execute_wrapper(refuse_every_query):
        assert Client().get("/accounts/login/").status_code == 200  # no session, no query
        login = {"username": "alice", "password": "pw-alice"}
        assert_unavailable(Client().post("/accounts/login/", login))


@pytest.mark.django_db
def test_the_chat_api_answers_503_with_a_session_and_without(alice, token_for):
    browser = Client()
    browser.force_login(alice)
    token = token_for("alice")
    with demo_stack(), chat_settings(KEY_CACHE_SECONDS=3600):
        for client in (Client(), browser):
            assert client.get("/chat/api/messages", headers=bearer(token)).status_code == 200
        with connection.execute_wrapper(refuse_every_query):
            for client in (Client(), browser):
                posted = client.post(
                    "/chat/api/messages",
                    json.dumps({"text": "hi"}),
                    content_type="application/json",
                    headers=bearer(token),
                )
                assert posted.status_code == 503 and posted.json()["error"] == "unavailable"
            # The chat logout needs the database only when there is a session to end.
            assert Client().post("/chat/api/logout", headers=bearer(token)).status_code == 200
            ended = browser.post("/chat/api/logout", headers=bearer(token))
            assert ended.status_code == 503 and ended.json()["error"] == "unavailable"


@pytest.mark.django_db
def test_a_session_save_that_fails_after_the_view_is_503_not_500(alice, token_for):
    """The chat logout changes the session; the database dies before SessionMiddleware saves it."""
    browser = Client()
    browser.force_login(alice)
    token = token_for("alice")
    with demo_stack():
        assert browser.get("/chat/api/messages", headers=bearer(token)).status_code == 200
        with connection.execute_wrapper(refuse_session_writes):
            assert_unavailable(browser.post("/chat/api/logout", headers=bearer(token)))


def delete_the_session_first(execute, sql, params, many, context):
    """Another request logs the user out just before this one saves the session."""
    if sql.lstrip().upper().startswith("UPDATE") and "django_session" in sql:
        execute('DELETE FROM "django_session"', (), False, context)
    return execute(sql, params, many, context)


@pytest.mark.django_db
def test_a_session_ended_by_a_concurrent_logout_is_still_djangos_400(alice, token_for):
    browser = Client()
    browser.force_login(alice)
    with demo_stack(), connection.execute_wrapper(delete_the_session_first):
        response = browser.post("/chat/api/logout", headers=bearer(token_for("alice")))
    assert response.status_code == 400  # SessionInterrupted: not an outage


@pytest.mark.django_db
def test_django_errors_that_are_not_the_database_stay_errors(staff, monkeypatch):
    from demo_site.chat import views

    def broken(*args, **kwargs):
        raise ValueError("a bug, not an outage")

    monkeypatch.setattr(views, "_conversations", broken)
    with demo_stack(), pytest.raises(ValueError):
        staff.get("/chat/agent/")


# -- WebSockets ------------------------------------------------------------------------------

pytest_ws = pytest.mark.django_db(transaction=True)


@contextlib.asynccontextmanager
async def database_down_for_consumers(wrapper=refuse_every_query):
    """The database down for ``database_sync_to_async``: asgiref's one sync thread."""
    stack = contextlib.ExitStack()
    await sync_to_async(lambda: stack.enter_context(connection.execute_wrapper(wrapper)))()
    try:
        yield
    finally:
        await sync_to_async(stack.close)()


async def _staff_cookie(username: str) -> bytes:
    def login() -> bytes:
        client = Client()
        client.force_login(get_user_model().objects.create_user(username, is_staff=True))
        return f"sessionid={client.cookies['sessionid'].value}".encode()

    return await sync_to_async(login)()


async def _agent(cookie: bytes) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, "/ws/agent/", headers=[ORIGIN, (b"cookie", cookie)])
    connected, _ = await comm.connect(timeout=3)
    assert connected
    return comm


@pytest_ws
async def test_a_chat_message_while_the_database_is_down_closes_4503(token_for):
    comm = await open_socket(application, token_for("user-7"), path="/ws/chat/", headers=[ORIGIN])
    await expect_identified(comm, "user-7")
    await comm.receive_json_from(3)  # the bot's greeting
    async with database_down_for_consumers():
        await comm.send_json_to({"type": "message", "text": "anyone?"})
        error = await expect_close(comm, 4503, "unavailable")
    assert error["detail"] == DATABASE_UNAVAILABLE
    await finish(comm)
    assert await Message.objects.acount() == 0


@pytest_ws
async def test_an_agent_socket_opened_while_the_database_is_down_closes_4503():
    cookie = await _staff_cookie("ann")
    async with database_down_for_consumers():
        comm = await _agent(cookie)  # accepted, so the page reads the code (not a bare 1006)
        await expect_close(comm, 4503, "unavailable")
    await finish(comm)


@pytest_ws
async def test_an_agent_reply_while_the_database_is_down_closes_4503():
    comm = await _agent(await _staff_cookie("ann"))
    async with database_down_for_consumers():
        reply = {"type": "reply", "conversation": {"user_id": "user-7"}, "text": "hello"}
        await comm.send_json_to(reply)
        await expect_close(comm, 4503, "unavailable")
    await finish(comm)


@pytest_ws
async def test_an_idle_agent_socket_closes_4503_when_the_database_goes_down(settings):
    settings.DEMO_AGENT_RECHECK_SECONDS = 0.1
    comm = await _agent(await _staff_cookie("ann"))
    assert await comm.receive_nothing(0.3)  # the login holds: nothing said, nothing closed
    async with database_down_for_consumers():
        await expect_close(comm, 4503, "unavailable")
    await finish(comm)
