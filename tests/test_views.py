from __future__ import annotations

import logging

import pytest
from django.test import Client

from chat_security import keyring, tokens
from chat_security.exceptions import KeyStoreUnavailable
from chat_security.models import Key
from tests import chat_helpers
from tests.chat_helpers import REFUSED_BUILDERS, chat_settings

pytestmark = pytest.mark.urls("tests.chat_urls")
secret, alice = chat_helpers.secret, chat_helpers.alice

URL = "/api/chat-token"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_logged_in_user_gets_token_and_times(alice, secret, clock):
    response = logged_in(alice).get(URL)
    assert response.status_code == 200
    assert response["Cache-Control"] == "private, no-store"
    body = response.json()
    assert set(body) == {"token", "expires_at", "refresh_at"}
    verified = tokens.verify(body["token"])
    assert verified.user_id == str(alice.pk)
    iat = verified.claims["iat"]
    assert body["expires_at"] == verified.claims["exp"] == iat + 3600
    assert body["refresh_at"] == iat + 2700
    assert isinstance(body["expires_at"], int) and isinstance(body["refresh_at"], int)


@pytest.mark.django_db
def test_same_token_until_refresh_at_then_a_new_one(alice, secret, clock):
    client = logged_in(alice)
    first = client.get(URL).json()
    clock.advance(first["refresh_at"] - clock.t - 1)
    assert client.get(URL).json()["token"] == first["token"]
    clock.advance(1)
    second = client.get(URL).json()
    assert second["token"] != first["token"]
    assert second["refresh_at"] > first["refresh_at"]


@pytest.mark.django_db
def test_the_endpoint_and_the_tag_share_the_kept_token(alice, secret):
    client = logged_in(alice)
    page = client.get("/pages/tag").content.decode()
    assert client.get(URL).json()["token"] in page


@pytest.mark.django_db
def test_not_logged_in_is_401_json(secret):
    response = Client().get(URL)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "login_required"
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "options"])
def test_other_methods_are_405_json(method, alice, secret):
    response = getattr(logged_in(alice), method)(URL)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert response["Allow"] == "GET, HEAD"


@pytest.mark.django_db
def test_head_is_allowed(alice, secret):
    assert logged_in(alice).head(URL).status_code == 200


@pytest.mark.django_db
def test_no_active_secret_is_the_middlewares_401(alice):
    """Issue 17, item 9: one state, one answer (SPEC §5), here and on the chat API."""
    client = logged_in(alice)
    response = client.get(URL)
    api = client.get("/chat/api/whoami", headers={"Authorization": "Bearer a.b.c"})
    for answer in (response, api):
        assert answer.status_code == 401
        assert answer.json()["error"] == "security_not_configured"
        assert answer["WWW-Authenticate"] == (
            'Bearer error="invalid_token", error_description="security_not_configured"'
        )
    assert "signing secret" in response.json()["detail"]
    assert response["Cache-Control"] == "private, no-store"


@pytest.mark.django_db
@pytest.mark.parametrize("builder", REFUSED_BUILDERS.values(), ids=REFUSED_BUILDERS)
def test_claims_that_cannot_be_issued_are_503_unavailable_not_500(builder, alice, secret, caplog):
    client = logged_in(alice)
    with chat_settings(CLAIMS_BUILDER=builder), caplog.at_level(logging.WARNING):
        response = client.get(URL)
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "private, no-store"
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == "unavailable"
    assert "CLAIMS_BUILDER" in body["detail"]
    ours = [r for r in caplog.records if r.name.startswith("chat_security")]
    assert len(ours) == 1 and "\n" not in ours[0].getMessage()
    assert "2031" not in caplog.text and "2031" not in body["detail"]  # no claim value


@pytest.mark.django_db
def test_key_store_down_is_503_json(alice, secret, monkeypatch):
    client = logged_in(alice)

    def broken():
        raise KeyStoreUnavailable("down")

    monkeypatch.setattr(keyring, "get_snapshot", broken)
    response = client.get(URL)
    assert response.status_code == 503
    assert response.json() == {"error": "unavailable"}


@pytest.mark.django_db
def test_jwks_is_still_routed(clock):
    key = Key.objects.generate_service_keypair()
    response = Client().get("/.well-known/chat-security/jwks.json")
    assert response.status_code == 200
    assert [k["kid"] for k in response.json()["keys"]] == [key.kid]
