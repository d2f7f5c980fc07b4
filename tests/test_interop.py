"""Tokens made the way real clients make them (SPEC §2, §3, §14; the seed documents' examples).

The Node clients live in tests/interop/ (jose and jsonwebtoken pinned in its
package.json). These tests fail, never skip, when node or node_modules is missing.
These tests use the real clock: the Node libraries stamp ``iat`` from it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import jwt
import pytest
from django.urls import reverse

from chat_security import tokens
from chat_security.exceptions import TokenError
from chat_security.models import Key

pytestmark = pytest.mark.django_db

INTEROP = Path(__file__).resolve().parent / "interop"


def node(script: str, stdin: object, *args: str) -> str:
    """Run a Node client script; returns its stdout (one line)."""
    exe = shutil.which("node")
    assert exe, "node is not installed; scripts/test.sh installs it"
    assert (INTEROP / "node_modules" / "jose").is_dir(), "run npm ci in tests/interop"
    assert (INTEROP / "node_modules" / "jsonwebtoken").is_dir(), "run npm ci in tests/interop"
    data = stdin if isinstance(stdin, str) else json.dumps(stdin)
    done = subprocess.run(
        [exe, script, *args], cwd=INTEROP, input=data, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout.strip()


@pytest.fixture(scope="module")
def keydir(tmp_path_factory) -> Path:
    """RSA key pairs made as the vendor documentation says: openssl genrsa, ssh-keygen."""
    d = tmp_path_factory.mktemp("interop-keys")

    def run(*args: str) -> None:
        subprocess.run(args, cwd=d, check=True, capture_output=True)

    run("openssl", "genrsa", "-out", "key.pem", "2048")
    run("openssl", "rsa", "-in", "key.pem", "-pubout", "-out", "public.pem")
    run("ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", "id_rsa")
    return d


SEED_CLAIMS = {"userId": "user-12345", "email": "jane@example.com", "name": "Jane Doe"}
SEED_OPTIONS = {"algorithm": "HS256", "expiresIn": "1h"}


# -- HS256: the seed document's two examples ---------------------------------------------


def test_node_jsonwebtoken_seed_example():
    _key, secret = Key.objects.generate_secret()
    token = node(
        "jsonwebtoken_sign.mjs",
        {
            "payload": SEED_CLAIMS,
            "key": secret,
            "options": {"algorithm": "HS256", "expiresIn": "1h"},
        },
    )
    result = tokens.verify(token)
    assert result.user_id == "user-12345"
    assert result.claims["email"] == "jane@example.com"
    assert result.claims["exp"] - result.claims["iat"] == 3600
    assert "kid" not in result.header  # the vendor way: tried against the usable secrets


def test_node_jsonwebtoken_with_user_and_agent_data():
    _key, secret = Key.objects.generate_secret()
    payload = {
        **SEED_CLAIMS,
        "userData": {"accountNumber": "ACC-1", "plan": "gold"},
        "agentData": [
            {"label": "Account", "value": "ACC-1"},
            {"label": "Plan", "value": "gold", "type": "status", "color": "info"},
        ],
    }
    token = node(
        "jsonwebtoken_sign.mjs",
        {"payload": payload, "key": secret, "options": {"algorithm": "HS256", "expiresIn": "1h"}},
    )
    assert tokens.verify(token).claims["userData"] == {"accountNumber": "ACC-1", "plan": "gold"}


def test_pyjwt_seed_example():
    _key, secret = Key.objects.generate_secret()
    token = jwt.encode({**SEED_CLAIMS, "exp": int(time.time()) + 3600}, secret, algorithm="HS256")
    assert tokens.verify(token).user_id == "user-12345"


def test_node_jsonwebtoken_wrong_secret_is_refused():
    Key.objects.generate_secret()
    token = node(
        "jsonwebtoken_sign.mjs",
        {"payload": SEED_CLAIMS, "key": "x" * 43, "options": {"algorithm": "HS256"}},
    )
    with pytest.raises(TokenError) as info:
        tokens.verify(token)
    assert info.value.code == "invalid_signature"


def test_node_jsonwebtoken_without_exp_is_refused():
    _key, secret = Key.objects.generate_secret()
    token = node(
        "jsonwebtoken_sign.mjs",
        {"payload": SEED_CLAIMS, "key": secret, "options": {"algorithm": "HS256"}},
    )
    with pytest.raises(TokenError) as info:
        tokens.verify(token)
    assert info.value.code == "missing_claim"


def test_jose_sign_hs256():
    key, secret = Key.objects.generate_secret()
    token = node(
        "jose_sign.mjs",
        {"alg": "HS256", "key": secret, "claims": {"sub": "user-7"}, "header": {"kid": key.kid}},
    )
    result = tokens.verify(token)
    assert (result.user_id, result.kid) == ("user-7", key.kid)


# -- RS256: openssl genrsa, ssh-keygen, JWK --------------------------------------------------


def test_jose_rs256_with_public_key_registered_as_pem(keydir):
    key = Key.objects.add_public_key((keydir / "public.pem").read_text())
    private = (keydir / "key.pem").read_text()
    token = node("jose_sign.mjs", {"alg": "RS256", "key": private, "claims": {"sub": "user-1"}})
    assert tokens.verify(token).kid == key.kid
    with_kid = node(
        "jose_sign.mjs",
        {"alg": "RS256", "key": private, "claims": {"sub": "user-1"}, "header": {"kid": key.kid}},
    )
    assert tokens.verify(with_kid).kid == key.kid


def test_jose_rs256_with_public_key_registered_as_jose_jwk(keydir):
    private = (keydir / "key.pem").read_text()
    exported = json.loads(node("jose_public_jwk.mjs", private))
    key = Key.objects.add_public_key(json.dumps(exported["jwk"]))
    # Our fingerprint is the RFC 7638 thumbprint, exactly as jose computes it.
    assert key.fingerprint == exported["thumbprint"]
    token = node("jose_sign.mjs", {"alg": "RS256", "key": private, "claims": {"sub": "user-1"}})
    assert tokens.verify(token).kid == key.kid


def test_jose_rs256_with_ssh_keygen_key(keydir):
    key = Key.objects.add_public_key((keydir / "id_rsa.pub").read_text())
    private = (keydir / "id_rsa").read_text()
    token = node("jose_sign.mjs", {"alg": "RS256", "key": private, "claims": {"sub": "user-1"}})
    assert tokens.verify(token).kid == key.kid
    assert key.fingerprint == json.loads(node("jose_public_jwk.mjs", private))["thumbprint"]


def test_node_jsonwebtoken_rs256_like_the_ibm_example(keydir):
    key = Key.objects.add_public_key((keydir / "public.pem").read_text())
    token = node(
        "jsonwebtoken_sign.mjs",
        {
            "payload": {"sub": "user-1"},
            "key": (keydir / "key.pem").read_text(),
            "options": {"algorithm": "RS256", "expiresIn": "1h"},
        },
    )
    assert tokens.verify(token).kid == key.kid


def test_rs256_signed_by_an_unregistered_key_is_refused(keydir):
    Key.objects.add_public_key((keydir / "public.pem").read_text())
    token = node(
        "jose_sign.mjs",
        {"alg": "RS256", "key": (keydir / "id_rsa").read_text(), "claims": {"sub": "user-1"}},
    )
    with pytest.raises(TokenError) as info:
        tokens.verify(token)
    assert info.value.code == "invalid_signature"


# -- ES256 and EdDSA: key pairs made by node jose, pasted here as JWK and as PEM ------------


@pytest.fixture(scope="module")
def node_keys() -> dict[str, dict]:
    """alg -> a key pair jose generated: private_pem, public_pem, jwk, thumbprint."""
    return {alg: json.loads(node("jose_keypair.mjs", "", alg)) for alg in ("ES256", "EdDSA")}


@pytest.mark.parametrize("fmt", ["jwk", "pem"])
@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_jose_tokens_verify_with_the_node_key_pasted(node_keys, alg, fmt):
    made = node_keys[alg]
    key = Key.objects.add_public_key(
        json.dumps(made["jwk"]) if fmt == "jwk" else made["public_pem"]
    )
    # The key's type pins its algorithm; our fingerprint is jose's RFC 7638 thumbprint.
    assert (key.alg, key.fingerprint) == (alg, made["thumbprint"])
    assert key.public_pem.strip() == made["public_pem"].strip()  # the same SPKI
    for header in ({}, {"kid": key.kid}):
        token = node(
            "jose_sign.mjs",
            {"alg": alg, "key": made["private_pem"], "claims": {"sub": "user-1"}, "header": header},
        )
        result = tokens.verify(token)
        assert (result.kid, result.user_id, result.header["alg"]) == (key.kid, "user-1", alg)


@pytest.mark.parametrize("fmt", ["jwk", "pem"])
def test_node_jsonwebtoken_es256_with_a_jose_key(node_keys, fmt):
    made = node_keys["ES256"]
    key = Key.objects.add_public_key(
        json.dumps(made["jwk"]) if fmt == "jwk" else made["public_pem"]
    )
    token = node(
        "jsonwebtoken_sign.mjs",
        {
            "payload": {"sub": "user-1"},
            "key": made["private_pem"],
            "options": {"algorithm": "ES256", "expiresIn": "1h", "keyid": key.kid},
        },
    )
    assert tokens.verify(token).kid == key.kid


def test_node_jsonwebtoken_cannot_sign_eddsa(node_keys):
    """jsonwebtoken (9.x) knows HS*, RS*, PS* and ES* only: an EdDSA site signs with jose."""
    done = subprocess.run(
        ["node", "jsonwebtoken_sign.mjs"],
        cwd=INTEROP,
        input=json.dumps(
            {
                "payload": {"sub": "user-1"},
                "key": node_keys["EdDSA"]["private_pem"],
                "options": {"algorithm": "EdDSA"},
            }
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert '"algorithm" must be a valid string enum value' in done.stderr


def test_jose_tokens_of_another_key_or_type_are_refused(node_keys):
    es256, eddsa = node_keys["ES256"], node_keys["EdDSA"]
    ec_key = Key.objects.add_public_key(es256["public_pem"])
    ed_key = Key.objects.add_public_key(json.dumps(eddsa["jwk"]))
    other = json.loads(node("jose_keypair.mjs", "", "ES256"))

    def code(alg: str, private_pem: str, header: dict) -> str:
        token = node(
            "jose_sign.mjs",
            {"alg": alg, "key": private_pem, "claims": {"sub": "user-1"}, "header": header},
        )
        with pytest.raises(TokenError) as info:
            tokens.verify(token)
        return info.value.code

    assert code("ES256", other["private_pem"], {}) == "invalid_signature"
    assert code("ES256", other["private_pem"], {"kid": ec_key.kid}) == "invalid_signature"
    assert code("ES256", es256["private_pem"], {"kid": ed_key.kid}) == "algorithm_not_allowed"
    assert code("EdDSA", eddsa["private_pem"], {"kid": ec_key.kid}) == "algorithm_not_allowed"


# -- our tokens in their libraries ------------------------------------------------------------


def test_issued_token_verifies_with_node_jsonwebtoken():
    key, secret = Key.objects.generate_secret()
    token = tokens.issue("user-1", {"email": "a@example.com"}, ttl=600)
    decoded = json.loads(
        node(
            "jsonwebtoken_verify.mjs",
            {"token": token, "key": secret, "options": {"algorithms": ["HS256"]}},
        )
    )
    assert decoded["sub"] == "user-1"
    assert decoded["email"] == "a@example.com"
    assert decoded["exp"] - decoded["iat"] == 600
    assert jwt.get_unverified_header(token)["kid"] == key.kid


def test_issued_token_fails_node_verification_with_another_secret():
    Key.objects.generate_secret()
    done = subprocess.run(
        ["node", "jsonwebtoken_verify.mjs"],
        cwd=INTEROP,
        input=json.dumps({"token": tokens.issue("user-1"), "key": "y" * 43}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "invalid signature" in done.stdout


# -- the encrypted user_payload --------------------------------------------------------------


def test_jose_encrypted_user_payload_decrypts(client):
    _key, secret = Key.objects.generate_secret()
    service = Key.objects.generate_service_keypair()
    response = client.get(reverse("chat-jwks"))
    assert response.status_code == 200
    jwks = response.json()["keys"]
    assert [k["kid"] for k in jwks] == [service.kid]
    assert "d" not in jwks[0]

    private = {"accountId": "A-77", "balance": 12.5, "vip": True}
    user_payload = node("encrypt_payload.mjs", jwks[0], json.dumps(private))
    assert user_payload.count(".") == 4
    token = jwt.encode(
        {"sub": "user-1", "exp": int(time.time()) + 600, "user_payload": user_payload},
        secret,
        algorithm="HS256",
    )
    assert tokens.verify(token).private == private


def test_jose_payload_to_a_rotated_out_service_key(client):
    _key, secret = Key.objects.generate_secret()
    Key.objects.generate_service_keypair()
    old_jwk = client.get(reverse("chat-jwks")).json()["keys"][0]
    Key.objects.generate_service_keypair(grace=0)
    jwks = client.get(reverse("chat-jwks")).json()["keys"]
    assert old_jwk["kid"] not in [k["kid"] for k in jwks]
    user_payload = node("encrypt_payload.mjs", old_jwk, '{"a": 1}')
    token = jwt.encode(
        {"sub": "user-1", "exp": int(time.time()) + 600, "user_payload": user_payload},
        secret,
        algorithm="HS256",
    )
    with pytest.raises(TokenError) as info:
        tokens.verify(token)
    assert info.value.code == "payload_decryption_failed"
