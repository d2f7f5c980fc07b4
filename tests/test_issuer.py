"""The site as issuer (SPEC §13): published signing keys, and the tag and endpoint per integration.

The published key set and PEM downloads (``chat_security.views.integration_jwks``,
``signing_key_pem``), ``{% chat_identity_token integration=... %}`` and
``GET /api/chat-token?integration=...``. Real clients verifying through the
published URL are in tests/test_interop_jwks.py.
"""

from __future__ import annotations

import logging

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.template import Context, Template
from django.test import Client

from chat_security import jws, keyring, tokens
from chat_security.exceptions import KeyStoreUnavailable
from chat_security.models import Integration, Key
from chat_security.session import kept_token
from tests import chat_helpers
from tests.test_templatetags import SCRIPT, request_for

pytestmark = [pytest.mark.urls("tests.chat_urls"), pytest.mark.django_db]
secret, alice = chat_helpers.secret, chat_helpers.alice

ISSUER = "https://shop.example/ios"
AUDIENCE = "ios-chat"
TOKEN_URL = "/api/chat-token"
#: Members of a private JWK (RFC 7518 §6.2.2, §6.3.2): none may ever be published.
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def jwks_url(name: str) -> str:
    return f"/.well-known/chat-security/{name}/jwks.json"


def pem_url(name: str, kid: str) -> str:
    return f"/.well-known/chat-security/{name}/{kid}.pem"


def published(name: str) -> list[str]:
    response = Client().get(jwks_url(name))
    assert response.status_code == 200, response.content
    return [jwk["kid"] for jwk in response.json()["keys"]]


def rsa_public_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def ios(clock, db):
    """An integration ``ios`` (issuer and audience set) with an active RS256 signing key pair."""
    Integration.objects.add("ios", issuer=ISSUER, audience=AUDIENCE, actor="tests")
    return Key.objects.generate_signing_keypair("RS256", actor="tests", integration="ios")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# -- the published key set ----------------------------------------------------------------


def test_jwks_lists_the_signing_public_key_with_use_alg_and_kid(ios):
    response = Client().get(jwks_url("ios"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "public, max-age=300"
    [jwk] = response.json()["keys"]
    assert jwk["kid"] == ios.kid and jwk["alg"] == "RS256" and jwk["use"] == "sig"
    assert jwk["kty"] == "RSA" and {"n", "e"} <= set(jwk)
    assert not PRIVATE_MEMBERS & set(jwk)


def test_an_es256_key_is_published_as_an_ec_jwk(clock, db):
    Integration.objects.add("web", actor="tests")
    key = Key.objects.generate_signing_keypair("ES256", integration="web")
    [jwk] = Client().get(jwks_url("web")).json()["keys"]
    assert jwk["kid"] == key.kid and jwk["alg"] == "ES256" and jwk["use"] == "sig"
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and {"x", "y"} <= set(jwk)
    assert not PRIVATE_MEMBERS & set(jwk)


def test_only_signing_key_pairs_are_published_never_secrets_service_or_client_keys(ios):
    _key, value = Key.objects.generate_secret("tests", integration="ios")
    service = Key.objects.generate_service_keypair("tests", integration="ios")
    client_key = Key.objects.add_public_key(rsa_public_pem(), integration="ios")
    body = Client().get(jwks_url("ios")).content.decode()
    assert published("ios") == [ios.kid]
    assert service.kid not in body and client_key.kid not in body
    assert value not in body  # the secret, in any form
    for material in Key.objects.exclude(encrypted_material="").values_list(
        "encrypted_material", flat=True
    ):
        assert material[:40] not in body


def test_each_integration_publishes_its_own_keys(ios, secret):
    default_pair = Key.objects.generate_signing_keypair("ES256")
    assert published("ios") == [ios.kid]
    assert published("default") == [default_pair.kid]


def test_an_integration_without_signing_keys_publishes_an_empty_set(ios, secret):
    assert published("default") == []  # a secret alone: nothing public to show


def test_staged_grace_and_retired_visibility(ios, clock):
    staged = Key.objects.generate_signing_keypair("ES256", integration="ios")
    assert staged.staged
    assert published("ios") == [ios.kid, staged.kid]  # the next key, before it signs
    promoted = Key.objects.rotate_signing_key(grace=3600, integration="ios")
    assert promoted.kid == staged.kid
    assert published("ios") == [staged.kid, ios.kid]  # the old one, in grace
    following = Key.objects.generate_signing_keypair("RS256", integration="ios")
    assert published("ios") == [staged.kid, following.kid, ios.kid]  # signing key first
    clock.advance(3601)  # the grace ends: retired
    assert published("ios") == [staged.kid, following.kid]
    Key.objects.revoke(following.kid)
    assert published("ios") == [staged.kid]


def test_rotation_with_no_grace_unpublishes_the_old_key_at_once(ios):
    new = Key.objects.rotate_signing_key(grace=0, integration="ios")
    assert published("ios") == [new.kid]


def test_a_warm_jwks_costs_no_query(ios, django_assert_num_queries):
    first = Client().get(jwks_url("ios")).json()  # warms the key snapshot
    with django_assert_num_queries(0):
        response = Client().get(jwks_url("ios"))
        pem = Client().get(pem_url("ios", ios.kid))
    assert response.json() == first
    assert pem.status_code == 200


def test_unknown_integration_is_404_json(ios):
    response = Client().get(jwks_url("android"))
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "unknown_integration"
    assert "public" not in response["Cache-Control"]


def test_a_name_that_is_no_integration_name_is_404_before_any_lookup(ios, monkeypatch):
    monkeypatch.setattr(keyring, "get_snapshot", _broken)
    response = Client().get(jwks_url("IOS_app"))  # a slug to the URL, not an integration name
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_integration"


def test_key_store_down_is_503_json(ios, monkeypatch):
    monkeypatch.setattr(keyring, "get_snapshot", _broken)
    for url in (jwks_url("ios"), pem_url("ios", ios.kid)):
        response = Client().get(url)
        assert response.status_code == 503
        assert response.json() == {"error": "unavailable"}
        assert response["Cache-Control"] == "no-store"


def test_the_service_key_jwks_is_unchanged(ios):
    service = Key.objects.generate_service_keypair("tests")
    response = Client().get("/.well-known/chat-security/jwks.json")
    assert [k["kid"] for k in response.json()["keys"]] == [service.kid]
    assert response.json()["keys"][0]["use"] == "enc"


def _broken():
    raise KeyStoreUnavailable("down")


# -- PEM downloads -------------------------------------------------------------------------


def test_pem_download_is_the_public_key_as_an_attachment(ios):
    response = Client().get(pem_url("ios", ios.kid))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-pem-file"
    assert response["Content-Disposition"] == f'attachment; filename="ios-{ios.kid}.pem"'
    assert response["Cache-Control"] == "public, max-age=300"
    pem = response.content.decode()
    assert pem == ios.public_pem
    assert pem.startswith("-----BEGIN PUBLIC KEY-----") and "PRIVATE" not in pem
    serialization.load_pem_public_key(pem.encode())  # a key, not just text


def test_every_published_key_has_a_pem_and_none_holds_private_material(ios):
    staged = Key.objects.generate_signing_keypair("ES256", integration="ios")
    Key.objects.rotate_signing_key(grace=3600, integration="ios")
    Key.objects.generate_signing_keypair("RS256", integration="ios")
    kids = published("ios")
    assert len(kids) == 3 and staged.kid in kids
    for kid in kids:
        pem = Client().get(pem_url("ios", kid)).content.decode()
        assert "BEGIN PUBLIC KEY" in pem and "PRIVATE" not in pem


def test_pem_of_anything_not_published_is_404(ios, secret, clock):
    Integration.objects.add("web", actor="tests")
    other = Key.objects.generate_signing_keypair("RS256", integration="web")
    service = Key.objects.generate_service_keypair("tests", integration="ios")
    Key.objects.rotate_signing_key(grace=0, integration="ios")  # ios.kid is now retired
    for url in (
        pem_url("ios", ios.kid),  # retired
        pem_url("ios", other.kid),  # another integration's key
        pem_url("web", ios.kid),
        pem_url("ios", service.kid),  # a service key: never a download here
        pem_url("default", secret[0].kid),  # a secret's kid
        pem_url("ios", "no.such-kid"),
        pem_url("android", other.kid),
    ):
        response = Client().get(url)
        assert response.status_code == 404, url
        assert response["Content-Type"] == "application/json"
        assert b"PUBLIC KEY" not in response.content


def test_the_key_entry_keeps_its_public_pem_out_of_its_repr(ios):
    entry = keyring.get_snapshot().by_kid[ios.kid]
    assert entry.public_pem == ios.public_pem
    assert "BEGIN PUBLIC KEY" not in repr(entry) and "kid=" in repr(entry)


def test_retired_signing_keys_keep_no_pem_in_memory(ios):
    Key.objects.rotate_signing_key(grace=0, integration="ios")
    assert keyring.get_snapshot().by_kid[ios.kid].public_pem == ""


# -- the tag -------------------------------------------------------------------------------


def render(source: str, request, **context) -> str:
    template = Template("{% load chat_security %}" + source)
    return template.render(Context({"request": request, **context}))


def token_of(html: str) -> str:
    match = SCRIPT.fullmatch(html)
    assert match, html
    return match.group(1)


def test_the_tag_signs_with_the_named_integration(alice, secret, ios):
    request = request_for(alice)
    token = token_of(render('{% chat_identity_token integration="ios" %}', request))
    header = jws.parse(token).header
    assert header["alg"] == "RS256" and header["kid"] == ios.kid
    verified = tokens.verify(token, integration="ios")
    assert verified.user_id == str(alice.pk) and verified.integration == "ios"
    assert verified.claims["iss"] == ISSUER and verified.claims["aud"] == AUDIENCE
    default = token_of(render("{% chat_identity_token %}", request))
    assert jws.parse(default).header["kid"] == secret[0].kid  # default, as before


def test_the_tag_takes_the_integration_from_a_variable(alice, secret, ios):
    html = render("{% chat_identity_token integration=name %}", request_for(alice), name="ios")
    assert jws.parse(token_of(html)).header["kid"] == ios.kid


def test_the_tag_keeps_one_token_per_integration(alice, secret, ios, monkeypatch):
    calls = []
    real = tokens.issue
    monkeypatch.setattr(tokens, "issue", lambda *a, **k: calls.append(k) or real(*a, **k))
    request = request_for(alice)
    first = render('{% chat_identity_token integration="ios" %}', request)
    assert render('{% chat_identity_token integration="ios" %}', request) == first
    render("{% chat_identity_token %}", request)
    assert [c["integration"] for c in calls] == ["ios", "default"]


@pytest.mark.parametrize("name", ["android", "IOS", "ios\n", "x" * 51, "", None, 7])
def test_the_tag_writes_nothing_for_an_unknown_integration(name, alice, secret, ios, caplog):
    request = request_for(alice)
    with caplog.at_level(logging.WARNING, logger="chat_security"):
        html = render("before{% chat_identity_token integration=name %}after", request, name=name)
    assert html == "beforeafter"
    [record] = [r for r in caplog.records if r.name.startswith("chat_security")]
    assert record.levelno == logging.WARNING
    assert "\n" not in record.getMessage()
    assert "eyJ" not in caplog.text  # no token material
    if name == "android":
        assert "android" in record.getMessage()
    else:
        assert "not an integration name" in record.getMessage()
    assert kept_token(request, "default") is not None  # the session itself is fine


def test_a_bad_name_is_refused_before_the_key_store_is_asked(
    alice, secret, ios, monkeypatch, caplog
):
    monkeypatch.setattr(keyring, "get_snapshot", _broken)
    with caplog.at_level(logging.WARNING, logger="chat_security"):
        html = render('{% chat_identity_token integration="Bad Name" %}', request_for(alice))
    assert html == ""
    assert "not an integration name" in caplog.text  # not KeyStoreUnavailable: no lookup
    assert "Bad Name" not in caplog.text


# -- the token endpoint ----------------------------------------------------------------------


def test_the_endpoint_signs_with_the_named_integration(alice, secret, ios):
    client = logged_in(alice)
    response = client.get(TOKEN_URL, {"integration": "ios"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "private, no-store"
    token = response.json()["token"]
    assert jws.parse(token).header["kid"] == ios.kid
    assert tokens.verify(token, integration="ios").claims["iss"] == ISSUER
    assert client.get(TOKEN_URL, {"integration": "ios"}).json()["token"] == token  # kept
    default = client.get(TOKEN_URL).json()["token"]
    assert jws.parse(default).header["kid"] == secret[0].kid
    assert client.get(TOKEN_URL, {"integration": "default"}).json()["token"] == default


def test_the_endpoint_and_the_tag_share_the_kept_token_of_an_integration(alice, secret, ios):
    client = logged_in(alice)
    page = client.get("/pages/tag").content.decode()  # the default token
    token = client.get(TOKEN_URL, {"integration": "ios"}).json()["token"]
    assert token not in page
    request = request_for(alice)
    request.session = client.session
    assert token_of(render('{% chat_identity_token integration="ios" %}', request)) == token


@pytest.mark.parametrize("logged", [True, False], ids=["logged-in", "anonymous"])
def test_the_endpoint_answers_400_for_an_unknown_integration(logged, alice, secret, ios):
    client = logged_in(alice) if logged else Client()
    response = client.get(TOKEN_URL, {"integration": "android"})
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "private, no-store"
    assert response.json()["error"] == "unknown_integration"
    assert "android" in response.json()["detail"]


@pytest.mark.parametrize("name", ["", "IOS", "ios/../default", "i" * 51, "ios\n", "-ios"])
def test_a_bad_integration_parameter_is_400_before_any_lookup(name, alice, secret, monkeypatch):
    client = logged_in(alice)
    monkeypatch.setattr(keyring, "get_snapshot", _broken)
    response = client.get(TOKEN_URL, {"integration": name})
    assert response.status_code == 400  # not the 503 a lookup would have met
    assert response.json()["error"] == "unknown_integration"
    assert "ios" not in response.json()["detail"]  # what came is not echoed


def test_a_fifty_character_name_is_a_name(alice, secret):
    name = "i" * 50
    Integration.objects.add(name, actor="tests")
    Key.objects.generate_signing_keypair("ES256", integration=name)
    response = logged_in(alice).get(TOKEN_URL, {"integration": name})
    assert response.status_code == 200
    assert tokens.verify(response.json()["token"], integration=name).integration == name


def test_the_default_needs_no_key_store_for_an_anonymous_caller(secret, monkeypatch):
    monkeypatch.setattr(keyring, "get_snapshot", _broken)
    assert Client().get(TOKEN_URL).status_code == 401  # login_required, as before
    response = Client().get(TOKEN_URL, {"integration": "ios"})
    assert response.status_code == 503  # it must ask whether ios exists: fail closed


def test_an_integration_without_a_signing_key_is_security_not_configured(alice, secret):
    Integration.objects.add("web", actor="tests")
    response = logged_in(alice).get(TOKEN_URL, {"integration": "web"})
    assert response.status_code == 401
    assert response.json()["error"] == "security_not_configured"
