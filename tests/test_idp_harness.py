"""The real OpenID Connect provider of the tests (``tests.idp``), tested on its own.

django-oauth-toolkit in its own process: what it publishes (discovery, JWKS),
the ID token a site gets from it through the authorization-code flow with
PKCE (verified here with PyJWT against the published keys, independently of
chat_security), and key rotation (a new kid signs; the old one stays published
while kept, then disappears).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.idp.provider import IdPError, OIDCProvider, oidc_provider

__all__ = ["oidc_provider"]  # the fixture, imported for the tests below


@pytest.fixture(scope="module")
def idp() -> Iterator[OIDCProvider]:
    """One provider for the tests that do not change its keys."""
    with OIDCProvider() as provider:
        yield provider


def header(token: str) -> dict[str, Any]:
    return dict(jwt.get_unverified_header(token))


def verify(token: str, provider: OIDCProvider) -> dict[str, Any]:
    """Verify ``token`` as a relying party would: the JWKS key its kid names, RS256, aud, iss."""
    keys = {key["kid"]: key for key in provider.jwks()["keys"]}
    kid = header(token)["kid"]
    assert kid in keys, (kid, list(keys))
    return dict(
        jwt.decode(
            token,
            jwt.PyJWK(keys[kid]).key,
            algorithms=["RS256"],
            audience=provider.client_id,
            issuer=provider.issuer,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
    )


def verify_key(provider: OIDCProvider) -> Any:
    (key,) = provider.jwks()["keys"]
    return jwt.PyJWK(key).key


def test_the_discovery_document_names_the_issuer_and_its_keys(idp):
    document = idp.discovery()
    assert idp.issuer == f"http://127.0.0.1:{idp.port}/o"
    assert document["issuer"] == idp.issuer
    assert document["jwks_uri"] == idp.jwks_uri == f"{idp.issuer}/.well-known/jwks.json"
    assert document["authorization_endpoint"] == f"{idp.issuer}/authorize/"
    assert document["token_endpoint"] == f"{idp.issuer}/token/"
    assert "RS256" in document["id_token_signing_alg_values_supported"]
    assert {"openid", "profile", "email"} <= set(document["scopes_supported"])


def test_the_jwks_publishes_one_rsa_signing_key_with_a_kid(idp):
    (key,) = idp.jwks()["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
    assert key["kid"] == idp.signing_kid and len(key["kid"]) == 43  # SHA-256 thumbprint
    assert "d" not in key  # public only
    public = jwt.PyJWK(key).key
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048


def test_an_id_token_from_the_flow_verifies_against_the_published_keys(idp):
    token = idp.id_token("alice", "alice-password", nonce="n-0S6_WzA2Mj")
    assert header(token) == {"typ": "JWT", "alg": "RS256", "kid": idp.signing_kid}
    claims = verify(token, idp)
    assert claims["aud"] == idp.client_id == "chat-site"
    assert claims["iss"] == idp.issuer
    assert claims["sub"] == idp.subject("alice")
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["name"] == "Alice Example"
    assert claims["preferred_username"] == "alice"
    assert claims["email"] == "alice@example.com"
    assert 0 < claims["exp"] - claims["iat"] <= 24 * 3600


def test_each_user_has_a_subject_of_their_own(idp):
    alice = verify(idp.id_token("alice", "alice-password"), idp)
    bob = verify(idp.id_token("bob", "bob-password"), idp)
    assert bob["sub"] == idp.subject("bob") != alice["sub"]
    assert bob["email"] == "bob@example.com"


def test_the_access_token_is_opaque_and_the_flow_checks_the_password(idp):
    tokens = idp.tokens("alice", "alice-password")
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "openid profile email"
    assert tokens["access_token"].count(".") != 2  # not a JWT: the ID token is the one to send
    with pytest.raises(IdPError, match="redirect"):
        idp.id_token("alice", "not-her-password")


def test_a_token_does_not_verify_with_another_key_or_audience(idp):
    token = idp.id_token("alice", "alice-password")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other, algorithms=["RS256"], audience=idp.client_id)
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, verify_key(idp), algorithms=["RS256"], audience="another-site")


def test_rotation_publishes_the_new_kid_and_keeps_then_drops_the_old(oidc_provider):
    idp = oidc_provider
    first = idp.signing_kid
    old_token = idp.id_token("alice", "alice-password")
    port, subject = idp.port, idp.subject("alice")

    second = idp.rotate_key(keep_old=True)
    assert second != first and idp.port == port
    assert idp.published_kids == [second, first]
    assert idp.inactive_kids == [first]
    new_token = idp.id_token("alice", "alice-password")  # same database: same user
    assert header(new_token)["kid"] == second
    assert verify(new_token, idp)["sub"] == subject
    assert verify(old_token, idp)["sub"] == subject  # the old key is still published

    idp.drop_inactive_keys()
    assert idp.published_kids == [second] and idp.signing_kid == second
    assert header(idp.id_token("alice", "alice-password"))["kid"] == second

    third = idp.rotate_key(keep_old=False)
    assert idp.published_kids == [third] and third not in (first, second)
    assert header(idp.id_token("alice", "alice-password"))["kid"] == third
    assert verify(idp.id_token("bob", "bob-password"), idp)["sub"] == idp.subject("bob")


def test_stop_ends_the_process_and_removes_its_directory():
    idp = OIDCProvider(users={"carol": "carol-password"})
    assert verify(idp.id_token("carol", "carol-password"), idp)["sub"] == idp.subject("carol")
    assert idp.startup_seconds < 30
    directory, port = idp.dir, idp.port
    idp.stop()
    assert not directory.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(idp.discovery_url, timeout=2)
    with socket.socket() as s:  # nothing listens there any more
        assert s.connect_ex(("127.0.0.1", port)) != 0
    idp.stop()  # twice is harmless
    assert not os.path.exists(directory)
