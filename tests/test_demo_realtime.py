"""The demo on ASGI (issue 10, item 3): live chat over WebSockets, agents, the bot.

Every socket goes through ``demo_site.asgi.application`` — the origin
validator, the session, ``ChatSecurityWebSocketMiddleware``, the consumers —
with Channels' in-memory layer (tests/settings.py), as ``runserver`` serves it.
"""

from __future__ import annotations

import json
import re

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import AsyncClient, Client, override_settings

from chat_security import tokens
from chat_security.identity import preview
from demo_site.asgi import application
from demo_site.chat import live
from demo_site.chat.claims import PROFILES, demo_claims
from demo_site.chat.models import Message
from demo_site.chat.routing import websocket_application
from tests import chat_helpers
from tests.chat_helpers import bearer, chat_settings, security_off
from tests.ws_helpers import expect_close, expect_identified, finish, open_socket

secret, token_for = chat_helpers.secret, chat_helpers.token_for
alice, bob = chat_helpers.alice, chat_helpers.bob

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/ws/chat/"
AGENT = "/ws/agent/"
ORIGIN = (b"origin", b"http://testserver")
GROUP_NAME = re.compile(r"[A-Za-z0-9._-]{1,99}")


def staff_cookie(username: str = "agent", *, staff: bool = True) -> bytes:
    """A logged-in site session (agents authenticate by Django login, not chat tokens)."""
    user = get_user_model().objects.create_user(username, password="pw", is_staff=staff)
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def agent_socket(cookie: bytes) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, AGENT, headers=[ORIGIN, (b"cookie", cookie)])
    connected, _ = await comm.connect(timeout=3)
    assert connected
    return comm


async def visitor(token: str | None, user: str | None, **kwargs) -> WebsocketCommunicator:
    """An identified chat socket; the bot's greeting (verified users) is read and checked."""
    headers = [ORIGIN, *kwargs.pop("headers", [])]
    comm = await open_socket(application, token, path=CHAT, headers=headers, **kwargs)
    await expect_identified(comm, user)
    if user is not None:
        greeting = await comm.receive_json_from(3)
        assert greeting["type"] == "message" and greeting["message"]["sender"] == "bot"
        assert greeting["message"]["id"] is None  # said to this connection, not kept
    return comm


async def next_message(comm: WebsocketCommunicator) -> dict:
    frame = await comm.receive_json_from(3)
    assert frame["type"] == "message", frame
    return frame


async def nothing_more(*comms: WebsocketCommunicator) -> None:
    for comm in comms:
        assert await comm.receive_nothing(0.1)


# -- visitors, devices, agents -------------------------------------------------------------


async def test_a_message_reaches_every_device_of_the_user_and_the_agents(token_for):
    agent = await agent_socket(await _cookie())
    phone = await visitor(token_for("user-7"), "user-7")
    laptop = await visitor(token_for("user-7"), "user-7")
    other = await visitor(token_for("user-8"), "user-8")

    await phone.send_json_to({"type": "message", "text": "  hello from my phone  "})
    seen_phone, seen_laptop = await next_message(phone), await next_message(laptop)
    seen_agent = await next_message(agent)

    stored = await Message.objects.aget()
    assert (stored.user_id, stored.anonymous, stored.sender, stored.text) == (
        "user-7",
        False,
        "user",
        "hello from my phone",
    )
    assert seen_phone == seen_laptop == {"type": "message", "message": stored.as_json()}
    assert seen_agent == {
        "type": "message",
        "message": stored.as_json(),
        "conversation": {"user_id": "user-7", "anonymous": False},
        "author": "",
    }
    await nothing_more(other, agent)  # another user's socket hears nothing of it
    for comm in (agent, phone, laptop, other):
        await finish(comm)


async def test_the_socket_stores_messages_as_the_http_api_does(token_for):
    phone = await visitor(token_for("user-7"), "user-7")
    await phone.send_json_to({"type": "message", "text": "over the socket"})
    await next_message(phone)
    history = await AsyncClient().get("/chat/api/messages", headers=bearer(token_for("user-7")))
    assert [m["text"] for m in history.json()["messages"]] == ["over the socket"]
    await finish(phone)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "message", "text": "   "}, "invalid_text"),
        ({"type": "message", "text": "x" * 2001}, "invalid_text"),
        ({"type": "message", "text": 5}, "invalid_text"),
        ({"type": "message", "text": "a\x00b"}, "invalid_text"),
        ({"type": "shout", "text": "hi"}, "unknown_type"),
    ],
)
async def test_bad_messages_are_refused_with_the_http_codes_and_the_socket_stays(
    token_for, frame, code
):
    phone = await visitor(token_for("user-7"), "user-7")
    await phone.send_json_to(frame)
    error = await phone.receive_json_from(3)
    assert error["type"] == "error" and error["error"] == code and error["detail"]
    await phone.send_json_to({"type": "message", "text": "still here"})
    assert (await next_message(phone))["message"]["text"] == "still here"
    assert [m.text async for m in Message.objects.all()] == ["still here"]
    await finish(phone)


async def test_an_agent_reply_reaches_every_open_socket_of_the_visitor(token_for):
    agent = await agent_socket(await _cookie("ann"))
    phone = await visitor(token_for("user-7"), "user-7")
    laptop = await visitor(token_for("user-7"), "user-7")

    await agent.send_json_to(
        {
            "type": "reply",
            "conversation": {"user_id": "user-7", "anonymous": False},
            "text": "How can I help?",
        }
    )
    on_phone = await next_message(phone)
    reply = await Message.objects.aget()
    assert (reply.user_id, reply.sender, reply.author) == ("user-7", "agent", "ann")
    expected = {"type": "message", "message": reply.as_json()}
    assert on_phone == expected
    assert await next_message(laptop) == expected
    echoed = await next_message(agent)  # every agent watching sees the reply too
    assert echoed["author"] == "ann" and echoed["message"]["sender"] == "agent"
    for comm in (agent, phone, laptop):
        await finish(comm)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "reply", "conversation": "user-7", "text": "hi"}, "invalid_conversation"),
        ({"type": "reply", "conversation": {"user_id": 7}, "text": "hi"}, "invalid_conversation"),
        ({"type": "reply", "conversation": {"user_id": ""}, "text": "hi"}, "invalid_conversation"),
        (
            {"type": "reply", "conversation": {"user_id": "u", "anonymous": "no"}, "text": "hi"},
            "invalid_conversation",
        ),
        ({"type": "reply", "conversation": {"user_id": "u"}, "text": ""}, "invalid_text"),
        ({"type": "message", "text": "hi"}, "unknown_type"),
    ],
)
async def test_bad_replies_are_refused(frame, code):
    agent = await agent_socket(await _cookie())
    await agent.send_json_to(frame)
    error = await agent.receive_json_from(3)
    assert error["type"] == "error" and error["error"] == code
    assert await Message.objects.acount() == 0
    await finish(agent)


async def test_the_agent_socket_is_for_staff_only():
    for headers in ([ORIGIN], [ORIGIN, (b"cookie", await _cookie("carol", staff=False))]):
        comm = WebsocketCommunicator(application, AGENT, headers=headers)
        connected, _ = await comm.connect(timeout=3)
        assert connected  # accepted, then closed with a code the page can read
        await expect_close(comm, 4403, "staff_only")
        await finish(comm)


async def test_an_agent_who_is_no_longer_staff_cannot_reply():
    cookie = await _cookie("dave")
    agent = await agent_socket(cookie)
    await get_user_model().objects.filter(username="dave").aupdate(is_staff=False)
    await agent.send_json_to(
        {"type": "reply", "conversation": {"user_id": "user-7"}, "text": "still here?"}
    )
    await expect_close(agent, 4403, "staff_only")
    assert await Message.objects.acount() == 0
    await finish(agent)


async def test_an_agent_who_logged_out_cannot_reply():
    from django.contrib.sessions.models import Session

    agent = await agent_socket(await _cookie("fay"))
    await Session.objects.all().adelete()  # logged out in another tab
    await agent.send_json_to(
        {"type": "reply", "conversation": {"user_id": "user-7"}, "text": "anyone?"}
    )
    await expect_close(agent, 4403, "staff_only")
    assert await Message.objects.acount() == 0
    await finish(agent)


async def _end_login(username: str, change: str) -> None:
    """What may end an agent's login, done in the database as any process would."""
    from django.contrib.sessions.models import Session

    users = get_user_model().objects.filter(username=username)
    if change == "demoted":
        await users.aupdate(is_staff=False)
    elif change == "deactivated":
        await users.aupdate(is_active=False)
    elif change == "logged out":
        await Session.objects.all().adelete()
    else:  # "password changed": every session made with the old password ends
        user = await users.aget()
        user.set_password("a-new-password")
        await user.asave()


LOGIN_ENDINGS = ["demoted", "deactivated", "logged out", "password changed"]


@pytest.mark.parametrize("change", LOGIN_ENDINGS)
async def test_an_agent_whose_login_ended_receives_no_more_visitor_messages(token_for, change):
    agent = await agent_socket(await _cookie("gil"))
    phone = await visitor(token_for("user-7"), "user-7")
    await _end_login("gil", change)
    await phone.send_json_to({"type": "message", "text": "my account number is 1234"})
    await next_message(phone)
    await expect_close(agent, 4403, "staff_only")  # closed, and the message never shown
    for comm in (agent, phone):
        await finish(comm)


@pytest.mark.parametrize("change", LOGIN_ENDINGS)
async def test_an_idle_agent_socket_is_closed_once_the_login_ends(settings, change):
    settings.DEMO_AGENT_RECHECK_SECONDS = 0.1
    agent = await agent_socket(await _cookie("hal"))
    assert await agent.receive_nothing(0.3)  # still staff: the re-checks say nothing
    await _end_login("hal", change)
    await expect_close(agent, 4403, "staff_only")
    await finish(agent)


async def test_the_agent_check_writes_nothing_to_the_session():
    """A socket cannot send the browser a new session cookie: no flush, no new key."""
    from django.contrib.sessions.models import Session

    from demo_site.chat.consumers import logged_in_agent

    cookie = await _cookie("ivy")
    key = cookie.decode().split("=", 1)[1]
    before = await Session.objects.aget(session_key=key)
    await get_user_model().objects.filter(username="ivy").aupdate(password="changed-elsewhere")
    assert await sync_to_async(logged_in_agent)(key) is None  # the hash no longer holds
    after = await Session.objects.aget(session_key=key)  # still there, unchanged
    assert (after.session_data, after.expire_date) == (before.session_data, before.expire_date)
    assert await sync_to_async(logged_in_agent)(None) is None
    assert await sync_to_async(logged_in_agent)("no-such-session-key-0123") is None


# -- HTTP and the sockets --------------------------------------------------------------------


async def test_messages_posted_over_http_are_broadcast(token_for):
    agent = await agent_socket(await _cookie())
    laptop = await visitor(token_for("user-7"), "user-7")
    response = await AsyncClient().post(
        "/chat/api/messages",
        json.dumps({"text": "from the HTTP widget"}),
        "application/json",
        headers=bearer(token_for("user-7")),
    )
    assert response.status_code == 201
    posted = response.json()["message"]
    assert (await next_message(laptop))["message"] == posted
    assert (await next_message(agent))["conversation"] == {"user_id": "user-7", "anonymous": False}
    for comm in (agent, laptop):
        await finish(comm)


async def test_a_reply_from_the_agent_pages_form_is_broadcast(token_for):
    laptop = await visitor(token_for("user-7"), "user-7")
    client = AsyncClient()
    staff = await get_user_model().objects.acreate_user("erin", password="pw", is_staff=True)
    await client.aforce_login(staff)
    response = await client.post("/chat/agent/?user=user-7&anonymous=0", {"text": "Form reply"})
    assert response.status_code == 302
    frame = await next_message(laptop)
    assert frame["message"]["text"] == "Form reply" and frame["message"]["sender"] == "agent"
    await finish(laptop)


async def test_http_api_works_without_a_channel_layer(token_for, settings):
    settings.CHANNEL_LAYERS = {}
    response = await AsyncClient().post(
        "/chat/api/messages",
        json.dumps({"text": "no layer"}),
        "application/json",
        headers=bearer(token_for("user-7")),
    )
    assert response.status_code == 201
    assert await Message.objects.acount() == 1


# -- the bot -------------------------------------------------------------------------------------


async def test_the_bot_greets_by_name_and_answers_from_user_data(token_for):
    token = token_for(
        "user-7",
        name="Alice Example",
        userData={"plan": "Premium", "accountNumber": "GB29 0042", "customerSince": "2019-03-14"},
    )
    comm = await open_socket(application, token, path=CHAT, headers=[ORIGIN])
    await expect_identified(comm, "user-7")
    greeting = await next_message(comm)
    assert greeting["message"]["text"].startswith("Hello Alice!")
    assert greeting["message"]["sender"] == "bot"
    laptop = await visitor(token, "user-7")

    await comm.send_json_to({"type": "message", "text": "What is my plan?"})
    assert (await next_message(comm))["message"]["sender"] == "user"
    answer = await next_message(comm)
    assert answer["message"]["sender"] == "bot"
    assert answer["message"]["text"] == "You are on the Premium plan."
    assert (await next_message(laptop))["message"]["text"] == "What is my plan?"
    assert (await next_message(laptop))["message"] == answer["message"]  # stored, broadcast

    await comm.send_json_to({"type": "message", "text": "tell me about MY ACCOUNT please"})
    await next_message(comm)
    account = (await next_message(comm))["message"]["text"]
    assert account == "Your account: Account number: GB29 0042; Customer since: 2019-03-14."

    await comm.send_json_to({"type": "message", "text": "thanks"})
    await next_message(comm)
    await nothing_more(comm)  # the bot only answers what it knows

    stored = [(m.sender, m.author) async for m in Message.objects.filter(sender="bot")]
    assert stored == [("bot", "bot"), ("bot", "bot")]
    for c in (comm, laptop):
        await finish(c)


async def test_the_bot_says_so_when_it_has_no_user_data(token_for):
    comm = await open_socket(application, token_for("user-9"), path=CHAT, headers=[ORIGIN])
    await expect_identified(comm, "user-9")
    assert (await next_message(comm))["message"]["text"].startswith("Hello! I'm the demo bot.")
    await comm.send_json_to({"type": "message", "text": "my plan"})
    await next_message(comm)
    assert (await next_message(comm))["message"]["text"] == "I have no plan on file for you."
    await finish(comm)


async def test_anonymous_visitors_chat_without_a_token_and_the_bot_reads_them_nothing(secret):
    await _security_off()
    cookie = (b"cookie", b"chat_anonymous_id=anon-0123456789abcdef_-ABCD")
    with chat_settings(ANONYMOUS_IDS=True):
        first = await visitor(None, None, headers=[cookie])
        second = await visitor(None, None, headers=[cookie])
        stranger = await visitor(None, None)  # no cookie: no conversation to share

        await first.send_json_to({"type": "message", "text": "what's my plan?"})
        mine = await next_message(first)
        assert (await next_message(second)) == mine
        answer = (await next_message(first))["message"]
        assert answer["sender"] == "bot" and "logged in" in answer["text"]
        await next_message(second)
        await nothing_more(stranger)
        for comm in (first, second, stranger):
            await finish(comm)
    stored = await Message.objects.filter(sender="user").aget()
    assert stored.anonymous and stored.user_id.startswith("anon-")


async def test_a_visitor_without_an_id_still_sees_their_own_messages(secret):
    await _security_off()
    with chat_settings(ANONYMOUS_IDS=False):
        comm = await visitor(None, None)
        other = await visitor(None, None)
        await comm.send_json_to({"type": "message", "text": "hello?"})
        assert (await next_message(comm))["message"]["text"] == "hello?"
        await nothing_more(other)
        for c in (comm, other):
            await finish(c)


# -- the route is guarded -------------------------------------------------------------------------


async def test_the_chat_route_is_behind_the_middleware(secret, token_for):
    forged = token_for("user-7")[:-4] + "AAAA"
    comm = await open_socket(application, forged, path=CHAT, headers=[ORIGIN])
    await expect_close(comm, 4401, "invalid_signature")
    await comm.wait(3)
    assert await Message.objects.acount() == 0


async def test_a_foreign_origin_is_refused(token_for):
    with override_settings(ALLOWED_HOSTS=["testserver"]):
        app = websocket_application()
    for path in (CHAT, AGENT):
        comm = WebsocketCommunicator(
            app,
            path,
            headers=[(b"origin", b"https://evil.example")],
            subprotocols=["chat-security"],
        )
        connected, _ = await comm.connect(timeout=3)
        assert not connected


def test_group_names_are_valid_for_any_user_id():
    for anonymous, key in ((False, "x" * 255), (False, "a b/c:d"), (True, "anon-1")):
        name = live.conversation_group(anonymous, key)
        assert GROUP_NAME.fullmatch(name)
        get_channel_layer().require_valid_group_name(name)
    assert live.conversation_group(False, "u") != live.conversation_group(True, "u")
    assert live.conversation_group(True, "") is None


# -- the claims builder ---------------------------------------------------------------------------


@pytest.mark.parametrize("username", sorted(PROFILES))
def test_the_claims_builder_passes_the_engine_and_the_identity_rules(username, secret):
    user = get_user_model().objects.create_user(
        username, f"{username}@example.com", "pw", first_name=username.title(), last_name="Example"
    )
    claims = demo_claims(user)
    assert claims["sub"] == str(user.pk) and claims["name"] == f"{username.title()} Example"
    token = tokens.issue(claims.pop("sub"), claims)
    verified = tokens.verify(token, count_use=False)
    identity = preview(verified.claims)
    assert identity["ignored"] == []
    assert identity["user_data"] == PROFILES[username][1]
    items = identity["agent_data"]
    assert len(items) == len(PROFILES[username][2]) >= 5
    assert {"plain", "currency", "date", "status", "link"} <= {
        i.get("type", "plain") for i in items
    }


def test_the_token_endpoint_uses_the_demo_builder(alice, secret):
    client = Client()
    client.force_login(alice)
    with chat_settings(CLAIMS_BUILDER="demo_site.chat.claims.demo_claims"):
        token = client.get("/api/chat-token").json()["token"]
    claims = tokens.verify(token, count_use=False).claims
    assert claims["userData"]["plan"] == "Premium" and claims["crmID"] == "CRM-1001"
    assert claims["agentData"][0] == {
        "label": "Plan",
        "value": "Premium",
        "type": "status",
        "color": "success",
    }


def test_other_users_get_identity_claims_only(bob, db):
    bob.username = "carol"
    assert set(demo_claims(bob)) == {"sub", "email"}


# -- helpers that touch the database from async tests ----------------------------------------------


async def _cookie(username: str = "agent", *, staff: bool = True) -> bytes:
    from asgiref.sync import sync_to_async

    return await sync_to_async(staff_cookie)(username, staff=staff)


async def _security_off() -> None:
    from asgiref.sync import sync_to_async

    await sync_to_async(security_off)()
