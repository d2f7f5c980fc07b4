"""Identity providers (SPEC §14): an integration's keys fetched from a JWKS URL or an
OpenID Connect issuer, in one process.

A real HTTP server on 127.0.0.1 (tests/jwks_server.py) plays the identity
provider and counts its requests; tokens are signed by PyJWT with the
provider's private keys. Several processes sharing one fetch are in
tests/test_remote_workers.py; a real OpenID Connect provider in tests/test_idp.py.
"""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.test import Client
from joserfc.jwk import ECKey, OKPKey, RSAKey

from chat_security import keyring, tokens
from chat_security.exceptions import KeySetStale, KeyStateError, TokenError
from chat_security.models import AuditEntry, Integration, KeySource, SecurityConfig
from chat_security.remote import sources
from chat_security.remote.sources import SourceError
from tests.jwks_server import jwks_server

__all__ = ["jwks_server"]
pytestmark = pytest.mark.django_db

AUDIENCE = "chat-site"
USER = "idp-user-7"


class Provider:
    """The identity provider's signing keys, and the key set it publishes."""

    def __init__(self, server) -> None:
        self.server = server
        self.keys: dict[str, object] = {}
        self.published: list[str] = []

    def new_key(self, kid: str, kind: str = "RSA", publish: bool = True) -> str:
        if kind == "RSA":
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif kind == "EC":
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        else:
            self.keys[kid] = ed25519.Ed25519PrivateKey.generate()
        if publish:
            self.published.append(kid)
            self.publish()
        return kid

    def jwk(self, kid: str) -> dict:
        private = self.keys[kid]
        cls = {
            rsa.RSAPrivateKey: RSAKey,
            ec.EllipticCurvePrivateKey: ECKey,
            ed25519.Ed25519PrivateKey: OKPKey,
        }
        for base, key_class in cls.items():
            if isinstance(private, base):
                public = key_class.import_key(private.public_key()).as_dict(private=False)
                return {**public, "kid": kid, "use": "sig"}
        raise AssertionError(private)

    def publish(self, *extra: dict) -> None:
        self.server.set_jwks({"keys": [self.jwk(k) for k in self.published] + list(extra)})

    def unpublish(self, kid: str) -> None:
        self.published.remove(kid)
        self.publish()

    def token(self, kid: str | None, clock, sub: str = USER, **claims) -> str:
        private = self.keys[kid or self.published[0]]
        alg = (
            "RS256"
            if isinstance(private, rsa.RSAPrivateKey)
            else "ES256"
            if isinstance(private, ec.EllipticCurvePrivateKey)
            else "EdDSA"
        )
        payload = {"sub": sub, "aud": AUDIENCE, "iat": int(clock.t), "exp": int(clock.t) + 600}
        headers = {"kid": kid} if kid is not None else {}
        return jwt.encode({**payload, **claims}, private, algorithm=alg, headers=headers)


@pytest.fixture
def private_hosts(settings):
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "JWKS_PRIVATE_HOSTS": ["127.0.0.1"]}


@pytest.fixture
def idp(jwks_server, private_hosts, clock, db):
    """A provider publishing one RSA key ("k1") at /jwks, and integration ``idp`` taking it."""
    provider = Provider(jwks_server)
    provider.new_key("k1")
    Integration.objects.add("idp", audience=AUDIENCE, paths=["/idp/"], actor="tests")
    sources.add_jwks_url(jwks_server.url(), "idp", actor="tests")
    return provider


def verify(token: str):
    return tokens.verify(token, integration="idp", count_use=False)


def code_of(token: str) -> str:
    with pytest.raises(TokenError) as caught:
        verify(token)
    return caught.value.code


# -- adding a source --------------------------------------------------------------------------


def test_a_token_signed_by_the_providers_key_is_accepted_as_a_remote_key(idp, clock):
    result = verify(idp.token("k1", clock))
    assert result.user_id == USER and result.kid == "k1" and result.integration == "idp"
    assert result.key_kind == "remote_key"
    source = KeySource.objects.get(integration__name="idp")
    assert [k["kid"] for k in source.keys] == ["k1"] and source.outcome == "ok"
    assert AuditEntry.objects.filter(action="add_key_source").exists()


def test_a_verification_from_a_fetched_set_costs_no_query_and_no_fetch(
    idp, clock, django_assert_num_queries
):
    verify(idp.token("k1", clock))  # the snapshot is read
    fetches = idp.server.count()
    another = idp.token("k1", clock, sub="someone-else")
    with django_assert_num_queries(0):
        assert verify(another).user_id == "someone-else"
    assert idp.server.count() == fetches


@pytest.mark.parametrize("kind", ["EC", "OKP"])
def test_es256_and_eddsa_keys_from_a_set_verify_with_their_algorithm(idp, clock, kind):
    kid = idp.new_key(f"{kind.lower()}-1", kind)
    assert sources.refresh("idp").added == (kid,)
    token = idp.token(kid, clock)
    assert verify(token).kid == kid
    assert jwt.get_unverified_header(token)["alg"] == ("ES256" if kind == "EC" else "EdDSA")


def test_a_token_whose_alg_does_not_fit_the_kids_key_type_is_refused(idp, clock):
    idp.new_key("ec-1", "EC")
    sources.refresh("idp")
    # An RS256 token naming the EC key's kid: the key type pins the algorithm.
    forged = jwt.encode(
        {"sub": USER, "aud": AUDIENCE, "exp": int(clock.t) + 60, "iat": int(clock.t)},
        idp.keys["k1"],
        algorithm="RS256",
        headers={"kid": "ec-1"},
    )
    assert code_of(forged) == "algorithm_not_allowed"


def test_nothing_is_stored_when_the_first_fetch_fails(jwks_server, private_hosts, clock, db):
    Integration.objects.add("idp", audience=AUDIENCE, actor="tests")
    jwks_server.set_route("/jwks", status=500, body="down")
    with pytest.raises(SourceError, match="500"):
        sources.add_jwks_url(jwks_server.url(), "idp")
    assert not KeySource.objects.exists()


def test_a_second_source_for_an_integration_is_refused(idp, jwks_server):
    with pytest.raises(KeyStateError, match="remove-key-source"):
        sources.add_jwks_url(jwks_server.url(), "idp")


def test_a_private_address_is_refused_unless_listed(jwks_server, clock, db):
    Integration.objects.add("idp", audience=AUDIENCE, actor="tests")
    Provider(jwks_server).new_key("k1")
    with pytest.raises(SourceError, match="JWKS_PRIVATE_HOSTS"):
        sources.add_jwks_url(jwks_server.url(), "idp")
    assert jwks_server.count() == 0  # refused before connecting


def test_skipped_keys_are_reported_and_the_rest_serve(jwks_server, private_hosts, clock, db):
    provider = Provider(jwks_server)
    provider.new_key("k1", publish=False)
    provider.published.append("k1")
    enc = {**provider.jwk("k1"), "kid": "enc-1", "use": "enc"}
    odd = {"kty": "oct", "kid": "sym-1", "k": "c2VjcmV0"}
    p384 = ECKey.generate_key("P-384").as_dict(private=False)
    provider.publish(enc, odd, {**p384, "kid": "p384"})
    Integration.objects.add("idp", audience=AUDIENCE, actor="tests")
    source = sources.add_jwks_url(jwks_server.url(), "idp")
    assert [k["kid"] for k in source.keys] == ["k1"]
    reasons = " | ".join(source.skipped)
    assert "enc-1" in reasons and "sym-1" in reasons and "p384" in reasons
    assert verify(provider.token("k1", clock)).kid == "k1"


def test_more_than_100_keys_or_no_usable_key_is_a_failed_fetch(idp, clock):
    jwk = idp.jwk("k1")
    idp.server.set_jwks({"keys": [{**jwk, "kid": f"k{i}"} for i in range(101)]})
    outcome = sources.refresh("idp")
    assert not outcome.ok and "101 keys" in outcome.error
    idp.server.set_jwks({"keys": [{**jwk, "use": "enc"}]})
    assert "no usable signing key" in sources.refresh("idp").error
    assert verify(idp.token("k1", clock)).kid == "k1"  # the last good set still serves


def test_a_private_jwk_in_the_set_is_skipped(idp, clock):
    private = RSAKey.import_key(idp.keys["k1"]).as_dict(private=True)
    idp.publish({**private, "kid": "leaked"})
    outcome = sources.refresh("idp")
    assert outcome.ok and any("leaked" in s for s in outcome.skipped)
    assert "leaked" not in json.dumps(KeySource.objects.get().keys)


# -- a key the provider adds or removes -------------------------------------------------------


def test_a_new_kid_is_accepted_from_its_first_token_with_one_refetch(idp, clock):
    verify(idp.token("k1", clock))
    clock.advance(31)  # the add's own fetch began the cooldown
    before = idp.server.count()
    idp.new_key("k2")
    assert verify(idp.token("k2", clock)).kid == "k2"
    assert idp.server.count() == before + 1
    version = SecurityConfig.objects.get().version
    assert verify(idp.token("k2", clock, sub="other")).kid == "k2"
    assert idp.server.count() == before + 1 and SecurityConfig.objects.get().version == version


def test_unknown_kids_refetch_at_most_once_per_cooldown(idp, clock, django_assert_num_queries):
    verify(idp.token("k1", clock))
    clock.advance(31)  # past the add's own fetch
    base = idp.server.count()
    idp.new_key("ghost", publish=False)
    assert code_of(idp.token("ghost", clock)) == "unknown_key"
    assert idp.server.count() == base + 1
    with django_assert_num_queries(0):  # the cooldown is known here: no query, no fetch
        for _ in range(50):
            assert code_of(idp.token("ghost", clock)) == "unknown_key"
    assert idp.server.count() == base + 1
    clock.advance(31)
    assert code_of(idp.token("ghost", clock)) == "unknown_key"
    assert idp.server.count() == base + 2


def test_another_process_fetch_within_the_cooldown_is_found_in_the_store(idp, clock):
    """The claim fails (someone fetched recently); the stored set is read, not fetched."""
    verify(idp.token("k1", clock))
    idp.new_key("k2")
    # What another process's fetch leaves behind: the new set stored, the version moved.
    sources.refresh("idp")
    keyring._State.checked_at = __import__("time").monotonic()  # as if just checked
    before = idp.server.count()
    assert verify(idp.token("k2", clock)).kid == "k2"
    assert idp.server.count() == before


def test_a_removed_key_is_refused_after_the_next_refresh(idp, clock):
    idp.new_key("k2")
    sources.refresh("idp")
    assert verify(idp.token("k1", clock)).kid == "k1"
    idp.unpublish("k1")
    clock.advance(599)
    assert verify(idp.token("k1", clock)).kid == "k1"  # not refreshed yet
    before = idp.server.count()
    clock.advance(2)  # JWKS_REFRESH_SECONDS passed: the next verification refreshes
    assert code_of(idp.token("k1", clock)) == "unknown_key"
    assert idp.server.count() == before + 1
    assert verify(idp.token("k2", clock)).kid == "k2"


def test_a_remembered_token_of_a_removed_key_is_refused_after_the_refresh(idp, clock):
    token = idp.token("k1", clock)
    idp.new_key("k2")
    sources.refresh("idp")
    assert verify(token).kid == "k1"
    assert verify(token).kid == "k1"  # remembered
    idp.unpublish("k1")
    clock.advance(601)
    assert code_of(token) == "unknown_key"


# -- the provider down ---------------------------------------------------------------------


def test_the_last_good_set_serves_while_the_provider_is_down_then_503(idp, clock):
    idp.server.set_route("/jwks", status=503, body="maintenance")
    clock.advance(601)
    assert verify(idp.token("k1", clock)).kid == "k1"
    source = KeySource.objects.get()
    assert source.outcome == "error" and "503" in source.error
    clock.advance(24 * 3600 - 601)
    with pytest.raises(KeySetStale) as caught:
        verify(idp.token("k1", clock))
    assert idp.server.url() in caught.value.detail and "503" in caught.value.detail
    response = Client().get(
        "/idp/x", HTTP_AUTHORIZATION=f"Bearer {idp.token('k1', clock)}"
    )  # the middleware's answer
    assert response.status_code == 503 and response.json()["error"] == "unavailable"
    assert "JWKS_MAX_STALE" in response.json()["detail"]
    idp.publish()  # the provider is back: the next attempt after the cooldown heals it
    clock.advance(31)
    assert verify(idp.token("k1", clock)).kid == "k1"


def test_a_remembered_token_is_refused_once_the_set_is_stale(idp, clock):
    token = idp.token("k1", clock, exp=int(clock.t) + 3 * 24 * 3600)
    with pytest.raises(TokenError):
        verify(token)  # beyond the lifetime cap: build one within it instead
    token = idp.token("k1", clock)
    assert verify(token).kid == "k1"
    idp.server.set_route("/jwks", hang=True)
    KeySource.objects.update(fetched_at=KeySource.objects.get().fetched_at.replace(year=2020))
    keyring.reset()
    with pytest.raises(KeySetStale):
        verify(token)


# -- OpenID Connect discovery -----------------------------------------------------------------


def discovery(server, issuer: str, jwks_path: str = "/jwks") -> None:
    server.set_jwks(
        {"issuer": issuer, "jwks_uri": server.url(jwks_path)},
        path="/o/.well-known/openid-configuration",
    )


def test_an_oidc_issuer_gives_the_jwks_uri_and_the_integrations_issuer(
    jwks_server, private_hosts, clock, db
):
    provider = Provider(jwks_server)
    provider.new_key("k1")
    issuer = jwks_server.url("/o")
    discovery(jwks_server, issuer)
    Integration.objects.add("idp", audience=AUDIENCE, actor="tests")
    source = sources.add_oidc_issuer(issuer, "idp")
    assert source.jwks_uri == jwks_server.url() and source.issuer == issuer
    assert Integration.objects.get(name="idp").issuer == issuer
    assert verify(provider.token("k1", clock, iss=issuer)).user_id == USER
    assert code_of(provider.token("k1", clock, iss="https://elsewhere.example")) == "invalid_claim"


def test_a_discovery_document_naming_another_issuer_is_not_used(
    jwks_server, private_hosts, clock, db
):
    Provider(jwks_server).new_key("k1")
    discovery(jwks_server, "https://attacker.example/o")
    Integration.objects.add("idp", audience=AUDIENCE, actor="tests")
    with pytest.raises(SourceError, match="same"):
        sources.add_oidc_issuer(jwks_server.url("/o"), "idp")
    assert jwks_server.count() == 0 and not KeySource.objects.exists()


def test_the_default_integration_takes_the_discovered_issuer_unless_issuer_is_set(
    jwks_server, private_hosts, clock, db, settings
):
    provider = Provider(jwks_server)
    provider.new_key("k1")
    issuer = jwks_server.url("/o")
    discovery(jwks_server, issuer)
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "ISSUER": "https://other.example"}
    with pytest.raises(SourceError, match="ISSUER"):
        sources.add_oidc_issuer(issuer)
    settings.CHAT_SECURITY = {k: v for k, v in settings.CHAT_SECURITY.items() if k != "ISSUER"}
    sources.add_oidc_issuer(issuer)
    good = provider.token("k1", clock, iss=issuer, aud="anything")
    assert tokens.verify(good, count_use=False).user_id == USER
    with pytest.raises(TokenError):
        tokens.verify(provider.token("k1", clock, iss="https://x.example"), count_use=False)


def test_removing_the_source_stops_its_keys(idp, clock):
    token = idp.token("k1", clock)
    assert verify(token).kid == "k1"
    sources.remove("idp", actor="tests")
    assert code_of(token) in {"unknown_key", "security_not_configured"}


def test_a_revoked_user_is_refused_whatever_key_signed_for_them(idp, clock):
    from chat_security.models import RevokedUser

    token = idp.token("k1", clock)
    assert verify(token).user_id == USER
    clock.advance(1)
    RevokedUser.objects.revoke(USER, "tests", integration="idp")
    assert code_of(token) == "token_revoked"
    assert verify(idp.token("k1", clock)).user_id == USER  # issued after the revocation


def test_an_integration_taking_keys_from_a_provider_is_not_removed_with_them(idp):
    with pytest.raises(KeyStateError, match="remove-key-source"):
        Integration.objects.remove("idp", actor="tests")
    sources.remove("idp", actor="tests")
    Integration.objects.remove("idp", actor="tests")
    assert not Integration.objects.filter(name="idp").exists()


def test_a_fetched_keys_use_never_counts_for_a_stored_key_with_the_same_kid(idp, clock):
    from chat_security import usage
    from chat_security.models import Key

    stored, _secret = Key.objects.generate_secret(actor="tests")
    Key.objects.filter(pk=stored.pk).update(kid="k1")  # the same kid, in another integration
    keyring.reset()
    tokens.verify(idp.token("k1", clock), integration="idp")  # counted, as the middleware does
    Client().get("/idp/x", HTTP_AUTHORIZATION=f"Bearer {idp.token('k1', clock, sub='b')}")
    usage.flush_usage()
    assert Key.objects.get(pk=stored.pk).use_count == 0


def _refuse_every_query(*args, **kwargs):
    from django.db import OperationalError

    raise OperationalError("the database is down")


@pytest.mark.django_db(transaction=True)  # the refused query must not break the test's own
def test_an_unknown_kid_while_the_database_is_down_is_503_not_unknown_key(idp, clock):
    from django.db import connection

    from chat_security.exceptions import KeyStoreUnavailable

    verify(idp.token("k1", clock))  # the snapshot is read
    clock.advance(31)
    idp.new_key("k2")  # published; another process may already have fetched it
    with connection.execute_wrapper(_refuse_every_query), pytest.raises(KeyStoreUnavailable):
        verify(idp.token("k2", clock))
    assert verify(idp.token("k2", clock)).kid == "k2"  # the database is back
