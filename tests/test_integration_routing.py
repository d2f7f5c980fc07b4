"""Which integration a request belongs to when no token decides it (SPEC §13).

* An anonymous visitor let in by an integration whose switch is off belongs to
  that integration and its user space (HTTP and WebSocket).
* While the key store cannot be read, a path not known to be guarded gives a view
  that asks who is talking a 503, never an identity and never a 500.
* The tester names the integration a foreign key belongs to.
"""

from __future__ import annotations

import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import OperationalError, connection
from django.http import JsonResponse
from django.test import Client, override_settings
from django.urls import path

from chat_security import diagnosis, keyring, tokens
from chat_security.models import Integration, Key, SecurityConfig
from chat_security.websocket import ChatSecurityWebSocketMiddleware
from tests.chat_helpers import sign
from tests.ws_helpers import expect_identified, finish, open_socket


def who(request):
    identity = request.chat_identity  # what a view under another integration's path reads
    return JsonResponse(
        {
            "user_id": identity.user_id,
            "integration": identity.integration,
            "user_space": identity.user_space,
        }
    )


urlpatterns = [path("b/api/who", who), path("chat/api/who", who)]


class Who(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        identity = self.scope["chat_identity"]
        await self.send_json(
            {"integration": identity.integration, "user_space": identity.user_space}
        )


@pytest.fixture
def brand_b(db):
    """A tenant with its own users on its own path, its security switched off."""
    Integration.objects.add("brand-b", own_users=True, paths=["/b/api/"])
    SecurityConfig.set_enabled(False, "t", integration="brand-b")


@override_settings(ROOT_URLCONF=__name__)
def test_an_anonymous_visitor_belongs_to_the_integration_that_let_it_in(brand_b):
    body = Client().get("/b/api/who").json()
    assert body == {"user_id": None, "integration": "brand-b", "user_space": "brand-b"}


@override_settings(ROOT_URLCONF=__name__)
def test_a_path_of_a_switched_on_integration_refuses_a_visitor_without_a_token(brand_b):
    SecurityConfig.set_enabled(True, "t", integration="brand-b")
    Key.objects.generate_secret(integration="brand-b")
    response = Client().get("/b/api/who")
    assert (response.status_code, response.json()["error"]) == (401, "missing_token")


@pytest.mark.django_db(transaction=True)
async def test_an_anonymous_socket_belongs_to_the_integration_that_let_it_in():
    from channels.db import database_sync_to_async

    @database_sync_to_async
    def prepare():
        Integration.objects.add("brand-b", own_users=True)
        SecurityConfig.set_enabled(False, "t", integration="brand-b")

    await prepare()
    app = ChatSecurityWebSocketMiddleware(Who.as_asgi(), integrations=["brand-b"])
    comm = await open_socket(app)
    await expect_identified(comm, None)
    await comm.send_json_to({"type": "who"})
    assert await comm.receive_json_from(3) == {"integration": "brand-b", "user_space": "brand-b"}
    await finish(comm)


def _refuse_every_query(*args, **kwargs):
    raise OperationalError("the database is down")


@override_settings(ROOT_URLCONF=__name__)
def test_an_unknown_path_while_the_store_cannot_be_read_answers_503_to_who_is_talking(brand_b):
    keyring.reset()  # a worker that never read the store: it knows only PROTECTED_PATHS
    with connection.execute_wrapper(_refuse_every_query):
        response = Client().get("/b/api/who")
    assert response.status_code == 503 and response.json()["error"] == "unavailable"


@override_settings(ROOT_URLCONF=__name__)
def test_a_path_known_from_an_earlier_read_answers_503_while_the_store_cannot_be_read(brand_b):
    keyring.get_snapshot()
    keyring.invalidate()  # the current snapshot is gone; the paths it knew are kept
    with connection.execute_wrapper(_refuse_every_query):
        response = Client().get("/b/api/who")
    assert response.status_code == 503 and response.json()["error"] == "unavailable"


def test_the_tester_names_the_integration_a_foreign_key_belongs_to(db, clock):
    Integration.objects.add("ios", issuer="https://ios.example")
    key, secret = Key.objects.generate_secret(integration="ios")
    Key.objects.generate_secret()  # default has a key too: not security_not_configured
    now = int(clock.t)
    claims = {"sub": "u-1", "iss": "https://ios.example", "iat": now, "exp": now + 600}
    token = sign(secret, claims, kid=key.kid)
    diag = diagnosis.diagnose(token, integration="default")
    assert (diag.valid, diag.code, diag.integration) == (False, "unknown_key", "default")
    assert diag.signer is not None and diag.signer.integration == "ios"
    assert "'ios'" in diag.hints[0] and "'default'" in diag.hints[0]
    assert diagnosis.diagnose(token).integration == "ios"  # every integration: iss picks
    assert tokens.verify(token, integration="ios", count_use=False).integration == "ios"
