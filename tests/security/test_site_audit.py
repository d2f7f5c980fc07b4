"""Findings of the site-facing audit (middleware, tag, identity, admin, demo), one test each."""

from __future__ import annotations

import hashlib
import hmac
import logging
from types import SimpleNamespace

import pytest
from django.http import StreamingHttpResponse
from django.template import engines
from django.test import Client, override_settings
from django.urls import path

from chat_security import identity, values
from chat_security.models import Contact
from demo_site.chat.models import Message
from tests import chat_helpers
from tests.chat_helpers import chat_settings, security_off
from tests.chat_urls import TAG_PAGE
from tests.chat_urls import urlpatterns as chat_urlpatterns
from tests.tokencraft import b64

secret, alice = chat_helpers.secret, chat_helpers.alice

TESTER = "/admin/chat_security/securityconfig/test-token/"
LONE_SURROGATE = '"\\ud800"'  # legal JSON; Python decodes it to a str no page can encode


def streaming_tag_page(request):
    # The template renders while the body streams, after the middleware saw the response.
    template = engines["django"].from_string(TAG_PAGE)
    return StreamingHttpResponse(template.render({}, request) for _ in range(1))


urlpatterns = [path("pages/streaming-tag", streaming_tag_page), *chat_urlpatterns]


def raw_hs256(secret_value: str, header: str, payload: str, good: bool = True) -> str:
    signing_input = b64(header.encode()) + "." + b64(payload.encode())
    key = secret_value.encode() if good else b"not-the-secret-" * 3
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def verified(claims: dict) -> SimpleNamespace:
    return SimpleNamespace(
        user_id=claims["sub"], claims=claims, kid="k", anonymous=False, private=None
    )


# -- token tester: a lone surrogate in a token's JSON was a 500 ----------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("good_signature", [True, False], ids=["valid", "invalid_signature"])
@pytest.mark.parametrize(
    ("header", "payload"),
    [
        ('{"alg":"HS256","x":' + LONE_SURROGATE + "}", '{"sub":"u","exp":%(exp)d}'),
        ('{"alg":"HS256"}', '{"sub":"u","exp":%(exp)d,"note":' + LONE_SURROGATE + "}"),
        (
            '{"alg":"HS256"}',
            '{"sub":"u","exp":%(exp)d,"agentData":[{"label":"a","value":"b",'
            + LONE_SURROGATE
            + ":1}]}",
        ),
    ],
    ids=["header", "claim", "ignored_member_name"],
)
def test_tester_shows_lone_surrogates_instead_of_failing(
    admin_client, secret, clock, header, payload, good_signature
):
    token = raw_hs256(secret[1], header, payload % {"exp": clock.t + 600}, good_signature)
    response = admin_client.post(TESTER, {"token": token})
    assert response.status_code == 200
    page = response.content.decode()
    assert ("Valid token" in page) is good_signature
    assert "\\ud800" in page  # shown the way JSON spells it


# -- the tag: a token rendered after the headers were final ---------------------------------


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_streaming_page_gets_no_token_it_could_not_make_private(alice, secret, caplog):
    client = Client()
    client.force_login(alice)
    with caplog.at_level(logging.ERROR, logger="chat_security.templatetags"):
        response = client.get("/pages/streaming-tag")
        body = b"".join(response.streaming_content).decode()
    assert "private" not in response.get("Cache-Control", "")
    assert "ConvrsUser" not in body and "eyJ" not in body
    assert "streaming response" in caplog.text
    # An ordinary page still gets its token, privately.
    page = client.get("/pages/tag")
    assert "var ConvrsUser = " in page.content.decode()
    assert page["Cache-Control"].startswith("private")


# -- demo: anonymous visitors' contacts, for GDPR deletion -----------------------------------


@pytest.mark.django_db
def test_anonymous_visitor_gets_a_contact_that_deletion_finds(secret, admin_client):
    security_off()
    with chat_settings(ANONYMOUS_IDS=True):
        visitor = Client()
        posted = visitor.post(
            "/chat/api/messages", {"text": "hi, no login"}, content_type="application/json"
        )
        assert posted.status_code == 201
        cookie_id = posted.cookies["chat_anonymous_id"].value
        contact = Contact.objects.get(user_id=f"anon:{cookie_id}")
        assert contact.anonymous

        agent = admin_client.get(f"/chat/agent/?user={cookie_id}&anonymous=1").content.decode()
        assert "Anonymous visitor (not verified)" in agent and f"anon:{cookie_id}" in agent

        result = identity.delete_contact(contact.user_id, actor="auditor")
    assert result["deleted"] == {"contact": 1, "messages": 1}
    assert not Message.objects.exists()


# -- identity: values that would mislead an agent ----------------------------------------


@pytest.mark.parametrize("crm_id", [".", ".."])
def test_crm_dot_segments_get_no_link(crm_id):
    with override_settings(
        CHAT_SECURITY={"CRM_URL_TEMPLATE": "https://crm.example.com/c/{crm_id}"}
    ):
        assert values.crm_url(crm_id) is None
        assert values.crm_url("../x") == "https://crm.example.com/c/..%2Fx"
        assert values.crm_url("a/b?c#d") == "https://crm.example.com/c/a%2Fb%3Fc%23d"


@pytest.mark.django_db
def test_bidi_overrides_never_reach_the_agent(admin_client):
    rlo, lri = "\u202e", "\u2067"
    contact = identity.contact_for(
        verified(
            {
                "sub": "eve",
                "iat": 1,
                "name": f"Eve{rlo} Mallory",
                "userData": {"plan": f"gold{lri}"},
                "agentData": [
                    {"label": f"Tier{rlo}", "value": f"{rlo}dlog"},
                    {"label": "Site", "value": f"https://example.com/{rlo}x", "type": "link"},
                ],
            }
        )
    )
    assert (contact.first_name, contact.last_name) == ("Eve", "Mallory")
    assert contact.user_data == {"plan": "gold"}
    assert contact.agent_data == [{"label": "Tier", "type": "plain", "value": "dlog"}]
    Message.objects.create(user_id="eve", text="hello")
    page = admin_client.get("/chat/agent/").content.decode()
    assert rlo not in page and lri not in page
