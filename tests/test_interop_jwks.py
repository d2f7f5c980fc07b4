"""Real verifiers read the site's published keys (SPEC §13, "The site as issuer").

A hosted chat (IBM, watsonx) verifies the site's tokens with the public keys
at ``/.well-known/chat-security/<name>/jwks.json``. Here the site is served by
pytest-django's live server on 127.0.0.1, tokens come from ``tokens.issue``,
and two real clients verify them through that URL: PyJWT's ``PyJWKClient``
and, in Node, jose's ``createRemoteJWKSet`` + ``jwtVerify``
(tests/interop/jose_verify_remote.mjs). No mocks: a key missing from the set,
a wrong JWK or a wrong header fails here as it would for the hosted chat.
These tests use the real clock (both clients check ``exp`` against it).
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass

import jwt
import pytest

from chat_security import tokens
from chat_security.models import Integration, Key
from tests.test_interop import node

pytestmark = pytest.mark.django_db(transaction=True)

WEB_ISSUER, WEB_AUDIENCE = "https://shop.example/web", "web-chat"
APP_ISSUER = "https://shop.example/app"


@dataclass
class Site:
    base: str

    def jwks_url(self, name: str) -> str:
        return f"{self.base}/.well-known/chat-security/{name}/jwks.json"


@pytest.fixture
def site(live_server) -> Site:
    """The live server by address (Node may resolve ``localhost`` to ::1, where it is not)."""
    return Site(f"http://127.0.0.1:{live_server.thread.port}")


@pytest.fixture
def issuers(site):
    """``web`` signs RS256 (issuer and audience set), ``app`` signs ES256 (issuer only)."""
    Integration.objects.add("web", issuer=WEB_ISSUER, audience=WEB_AUDIENCE, actor="tests")
    Integration.objects.add("app", issuer=APP_ISSUER, actor="tests")
    return {
        "web": Key.objects.generate_signing_keypair("RS256", actor="tests", integration="web"),
        "app": Key.objects.generate_signing_keypair("ES256", actor="tests", integration="app"),
    }


def pyjwt_verify(site: Site, name: str, token: str) -> dict:
    """What a Python verifier does: the key by ``kid`` from the JWKS URL, then decode."""
    signing_key = jwt.PyJWKClient(
        site.jwks_url(name), cache_jwk_set=False
    ).get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        signing_key.key,
        algorithms=["RS256", "ES256"],
        issuer=WEB_ISSUER if name == "web" else APP_ISSUER,
        audience=WEB_AUDIENCE if name == "web" else None,
        options={"require": ["exp", "iat", "sub", "iss"]},
    )


def published_kids(site: Site, name: str) -> list[str]:
    keys = jwt.PyJWKClient(site.jwks_url(name), cache_jwk_set=False).get_jwk_set().keys
    return [k.key_id for k in keys]


def jose_check(site: Site, name: str, token: str) -> dict:
    check = {"jwks_url": site.jwks_url(name), "token": token, "issuer": None, "audience": None}
    if name == "web":
        check.update(issuer=WEB_ISSUER, audience=WEB_AUDIENCE)
    elif name == "app":
        check.update(issuer=APP_ISSUER)
    return check


def jose_verify(*checks: dict) -> list[dict]:
    return json.loads(node("jose_verify_remote.mjs", list(checks)))


# -- over HTTP -------------------------------------------------------------------------------


def test_the_published_set_over_http(site, issuers):
    with urllib.request.urlopen(site.jwks_url("web"), timeout=10) as response:  # noqa: S310
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Cache-Control"] == "public, max-age=300"
        body = json.loads(response.read())
    [jwk] = body["keys"]
    assert jwk["kid"] == issuers["web"].kid and jwk["use"] == "sig" and "d" not in jwk


# -- PyJWT -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,alg", [("web", "RS256"), ("app", "ES256")])
def test_pyjwt_verifies_issued_tokens_through_the_jwks_url(name, alg, site, issuers):
    token = tokens.issue("alice", {"email": "alice@example.com"}, integration=name)
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": issuers[name].kid, "typ": "JWT"}
    claims = pyjwt_verify(site, name, token)
    assert claims["sub"] == "alice" and claims["email"] == "alice@example.com"


def test_pyjwt_refuses_a_token_against_another_integrations_jwks(site, issuers):
    web_token = tokens.issue("alice", integration="web")
    app_token = tokens.issue("alice", integration="app")
    with pytest.raises(jwt.PyJWKClientError, match="Unable to find a signing key"):
        pyjwt_verify(site, "app", web_token)
    with pytest.raises(jwt.PyJWKClientError, match="Unable to find a signing key"):
        pyjwt_verify(site, "web", app_token)
    # Taking another RS256 integration's key by force, the signature does not verify.
    Integration.objects.add("brand", actor="tests")
    Key.objects.generate_signing_keypair("RS256", actor="tests", integration="brand")
    [brand_key] = jwt.PyJWKClient(site.jwks_url("brand"), cache_jwk_set=False).get_signing_keys()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(web_token, brand_key.key, algorithms=["RS256"], audience=WEB_AUDIENCE)


# -- jose (Node) ------------------------------------------------------------------------------


def test_jose_verifies_through_the_jwks_url_and_refuses_across_integrations(site, issuers):
    web_token = tokens.issue("alice", integration="web")
    app_token = tokens.issue("bob", integration="app")
    results = jose_verify(
        jose_check(site, "web", web_token),
        jose_check(site, "app", app_token),
        jose_check(site, "app", web_token),
        jose_check(site, "web", app_token),
    )
    assert results == [
        {"valid": True, "sub": "alice", "kid": issuers["web"].kid, "alg": "RS256"},
        {"valid": True, "sub": "bob", "kid": issuers["app"].kid, "alg": "ES256"},
        {"valid": False, "code": "ERR_JWKS_NO_MATCHING_KEY"},
        {"valid": False, "code": "ERR_JWKS_NO_MATCHING_KEY"},
    ]


def test_jose_refuses_the_issuer_or_audience_of_another_integration(site, issuers):
    # Same key set, wrong expectations: what keeps web's tokens out of another chat.
    web_token = tokens.issue("alice", integration="web")
    check = jose_check(site, "web", web_token)
    [wrong_issuer, wrong_audience] = jose_verify(
        {**check, "issuer": APP_ISSUER}, {**check, "audience": "app-chat"}
    )
    assert (
        wrong_issuer
        == wrong_audience
        == {"valid": False, "code": "ERR_JWT_CLAIM_VALIDATION_FAILED"}
    )


# -- rotation, seen by both clients ---------------------------------------------------------


def test_rotation_staged_then_grace_then_retired(site, issuers):
    first = issuers["web"]
    first_token = tokens.issue("alice", integration="web")
    staged = Key.objects.generate_signing_keypair("RS256", actor="tests", integration="web")
    assert published_kids(site, "web") == [first.kid, staged.kid]  # published before it signs
    assert jwt.get_unverified_header(tokens.issue("alice", integration="web"))["kid"] == first.kid

    Key.objects.rotate_signing_key(grace=3600, actor="tests", integration="web")
    assert published_kids(site, "web") == [staged.kid, first.kid]  # new active, old in grace
    second_token = tokens.issue("alice", integration="web")
    assert jwt.get_unverified_header(second_token)["kid"] == staged.kid
    for token in (first_token, second_token):
        assert pyjwt_verify(site, "web", token)["sub"] == "alice"

    third = Key.objects.rotate_signing_key(grace=0, actor="tests", integration="web")
    third_token = tokens.issue("alice", integration="web")
    # staged.kid retired at once; first.kid still in its hour of grace
    assert published_kids(site, "web") == [third.kid, first.kid]
    results = jose_verify(
        *(jose_check(site, "web", t) for t in (first_token, second_token, third_token))
    )
    assert [r["valid"] for r in results] == [True, False, True]
    assert results[1]["code"] == "ERR_JWKS_NO_MATCHING_KEY"
    with pytest.raises(jwt.PyJWKClientError):
        pyjwt_verify(site, "web", second_token)
