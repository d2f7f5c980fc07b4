"""A real OpenID Connect provider (SPEC §14, issue 19 item 4).

django-oauth-toolkit, with OIDC on, runs in a process of its own
(tests/idp/). The chat registers it as a site would (``add-oidc-issuer``),
a user logs in at the provider through the authorization-code flow with
PKCE, and the ID token the site receives is sent to the chat API and to a
chat WebSocket. Then the provider rotates its signing key.
"""

from __future__ import annotations

import io
import json
import time

import pytest
from django.core.management import call_command
from django.test import Client

from tests.idp.provider import oidc_provider
from tests.ws_helpers import expect_close, expect_identified, finish, guarded, open_socket

__all__ = ["oidc_provider"]
pytestmark = [pytest.mark.urls("tests.chat_urls"), pytest.mark.django_db(transaction=True)]
COOLDOWN = 0.5


def chat_security(*args: str) -> dict:
    out = io.StringIO()
    call_command("chat_security", *args, stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture
def chat(oidc_provider, settings):
    """The chat's default integration takes its keys from the provider (audience: its client)."""
    settings.CHAT_SECURITY = {
        **settings.CHAT_SECURITY,
        "JWKS_PRIVATE_HOSTS": ["127.0.0.1"],
        "AUDIENCE": oidc_provider.client_id,
        "JWKS_COOLDOWN_SECONDS": COOLDOWN,
    }
    added = chat_security("add-oidc-issuer", oidc_provider.issuer)
    assert added["issuer"] == oidc_provider.issuer
    assert [k["kid"] for k in added["keys"]] == [oidc_provider.signing_kid]
    return oidc_provider


def whoami(token: str) -> tuple[int, dict]:
    response = Client().get("/chat/api/whoami", HTTP_AUTHORIZATION=f"Bearer {token}")
    return response.status_code, response.json()


def test_an_id_token_from_the_provider_is_accepted_as_its_user(chat):
    token = chat.id_token("alice", chat.users["alice"])
    status, body = whoami(token)
    assert status == 200, body
    assert body["user_id"] == chat.subject("alice") and body["kid"] == chat.signing_kid
    status, body = whoami(chat.id_token("bob", chat.users["bob"]))
    assert (status, body["user_id"]) == (200, chat.subject("bob"))
    keys = chat_security("status")["integrations"][0]["keys"]
    assert [(k["kind"], k["source"]) for k in keys] == [("remote_key", chat.issuer)]


def test_a_token_for_another_client_is_refused(chat, settings):
    token = chat.id_token("alice", chat.users["alice"])
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "AUDIENCE": "another-client"}
    status, body = whoami(token)
    assert (status, body["error"]) == (401, "invalid_claim")


async def test_an_id_token_opens_a_chat_websocket_as_its_user(chat):
    from channels.db import database_sync_to_async

    token = await database_sync_to_async(chat.id_token)("alice", chat.users["alice"])
    comm = await open_socket(guarded(), token)
    await expect_identified(comm, chat.subject("alice"))
    await finish(comm)


async def test_a_websocket_with_a_changed_signature_is_closed(chat):
    from channels.db import database_sync_to_async

    token = await database_sync_to_async(chat.id_token)("alice", chat.users["alice"])
    header, payload, signature = token.split(".")
    changed = "A" if signature[10] != "A" else "B"  # still canonical base64url
    forged = ".".join([header, payload, signature[:10] + changed + signature[11:]])
    comm = await open_socket(guarded(), forged)
    await expect_close(comm, 4401, "invalid_signature")


def test_the_provider_rotates_its_key(chat):
    old_kid = chat.signing_kid
    old_token = chat.id_token("alice", chat.users["alice"])
    assert whoami(old_token)[0] == 200
    new_kid = chat.rotate_key(keep_old=True)
    time.sleep(COOLDOWN + 0.1)  # the add's fetch began a cooldown
    new_token = chat.id_token("alice", chat.users["alice"])
    status, body = whoami(new_token)  # an unknown kid: one refetch finds it
    assert (status, body["kid"]) == (200, new_kid)
    assert whoami(old_token)[0] == 200  # still published, as inactive
    chat.drop_inactive_keys()
    refreshed = chat_security("refresh-keys")
    assert refreshed["ok"] and refreshed["removed"] == [old_kid]
    status, body = whoami(old_token)
    assert (status, body["error"]) == (401, "unknown_key")
    assert whoami(chat.id_token("bob", chat.users["bob"]))[0] == 200
