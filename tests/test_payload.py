from __future__ import annotations

import base64
import json
import logging
import subprocess
import time
from pathlib import Path

import jwt
import pytest
from django.core.management import call_command
from django.urls import reverse
from joserfc import jwe
from joserfc.jwk import RSAKey

from chat_security import keyring, payload, tokens
from chat_security import log as cs_log
from chat_security.exceptions import TokenError
from chat_security.identity_types import ChatIdentity
from chat_security.models import Contact, Key

INTEROP = Path(__file__).resolve().parent / "interop"
PROFILE = ["RSA-OAEP-256", "A256GCM"]
PRIVATE = {
    "cardNumber": "4111-1111-1111-1111",
    "dateOfBirth": "1970-01-01",
    "note": "PRIVATE-MARKER-c0ffee",
}
PRIVATE_VALUES = ["4111-1111-1111-1111", "1970-01-01", "PRIVATE-MARKER-c0ffee", "c0ffee"]


def node_encrypt(jwk: dict, plaintext: str) -> str:
    """A JWE made by Node's jose (CompactEncrypt), as a website would make it."""
    done = subprocess.run(
        ["node", "encrypt_payload.mjs", plaintext],
        input=json.dumps(jwk),
        cwd=INTEROP,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def py_encrypt(key, plaintext: bytes | str, header: dict | None = None, algorithms=None) -> str:
    header = header or {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
    return jwe.encrypt_compact(header, plaintext, key, algorithms=algorithms or PROFILE)


def public_jwk_of(key: Key) -> dict:
    return RSAKey.import_key(key.public_pem).as_dict(private=False)


@pytest.fixture
def secret(db):
    return Key.objects.generate_secret()[1]


@pytest.fixture
def service_key(db):
    return Key.objects.generate_service_keypair()


def decrypt(value):
    from chat_security import clock

    return payload.decrypt_with_key(value, keyring.get_snapshot(), clock.now())[0]


def failure(value) -> TokenError:
    with pytest.raises(TokenError) as info:
        decrypt(value)
    assert info.value.code == "payload_decryption_failed"
    return info.value


def assert_no_private(text: str) -> None:
    for value in PRIVATE_VALUES:
        assert value not in text


# -- the interop path: Node jose -> JWKS key -> engine -> middleware ------------------


@pytest.mark.django_db
def test_node_jose_payload_decrypts_and_never_leaks(client, secret, service_key, caplog, capsys):
    caplog.set_level(logging.DEBUG, logger="chat_security")
    jwks = client.get(reverse("chat-jwks")).json()
    [jwk] = jwks["keys"]
    assert jwk["kid"] == service_key.kid and "d" not in jwk

    user_payload = node_encrypt(jwk, json.dumps(PRIVATE))
    assert user_payload.count(".") == 4
    token = tokens.issue(
        "u-private",
        {"name": "Pat Private", "userData": {"plan": "gold"}, "user_payload": user_payload},
    )

    # The engine decrypts it into VerifiedToken.private / request.chat_identity.private.
    result = tokens.verify(token)
    assert result.private == PRIVATE
    chat_identity = ChatIdentity.verified(result)
    assert chat_identity.private == PRIVATE

    # The chat API: the contact is written, the responses carry nothing private.
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    posted = client.post(
        "/chat/api/messages", {"text": "hello"}, content_type="application/json", **auth
    )
    assert posted.status_code == 201
    listed = client.get("/chat/api/messages", **auth)
    assert listed.status_code == 200
    for response in (posted, listed):
        assert_no_private(response.content.decode())
        assert user_payload not in response.content.decode()

    contact = Contact.objects.get(user_id="u-private")
    assert contact.first_name == "Pat" and contact.user_data == {"plan": "gold"}
    row = json.dumps(list(Contact.objects.values()), default=str)
    assert_no_private(row)
    assert "cardNumber" not in row and user_payload not in row

    # The CLI's identity preview: key names only.
    call_command("chat_security", "verify", token)
    out = capsys.readouterr().out
    assert json.loads(out)["identity"]["private_keys"] == ["cardNumber", "dateOfBirth", "note"]
    assert_no_private(out)

    # Careless logging in the package (a logger made the package's way) is scrubbed too.
    log = cs_log.get_logger("chat_security.careless")
    log.debug("claims: %s", result.claims)
    log.debug("identity: %r / %s", chat_identity, result)
    log.info("payload", extra={"private": result.private, "user_payload": user_payload})
    log.warning("dump %s", {"private": result.private, "token": token})

    assert caplog.records, "the package logged nothing at DEBUG"
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__) + (record.exc_text or "")
        assert_no_private(text)
        assert token not in text and user_payload not in text


@pytest.mark.django_db
def test_grace_service_key_still_decrypts_retired_does_not(client, secret, service_key):
    old_jwk = public_jwk_of(service_key)
    Key.objects.generate_service_keypair(grace=3600)  # old key now in grace
    kids = [k["kid"] for k in client.get(reverse("chat-jwks")).json()["keys"]]
    assert service_key.kid in kids and len(kids) == 2
    value = node_encrypt({**old_jwk, "kid": service_key.kid}, '{"a": 1}')
    assert decrypt(value) == {"a": 1}
    # Without a kid every usable service key is tried.
    assert decrypt(py_encrypt(RSAKey.import_key(service_key.public_pem), b'{"b": 2}')) == {"b": 2}

    Key.objects.revoke(service_key.kid)
    failure(value)


@pytest.mark.django_db
def test_wrong_key_is_payload_decryption_failed_over_http(client, secret, service_key):
    stranger = RSAKey.generate_key(2048)
    value = py_encrypt(stranger, json.dumps(PRIVATE))
    error = failure(value)
    assert_no_private(str(error))
    with pytest.raises(TokenError) as refused:  # issue() hands out nothing verify refuses
        tokens.issue("u-wrong", {"user_payload": value})
    assert refused.value.code == "payload_decryption_failed"
    now = int(time.time())
    claims = {"sub": "u-wrong", "iat": now, "exp": now + 600, "user_payload": value}
    token = jwt.encode(claims, secret, algorithm="HS256")  # as the site's backend signs it
    response = client.get("/chat/api/messages", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert response.json()["error"] == "payload_decryption_failed"
    assert_no_private(response.content.decode())
    assert not Contact.objects.exists()


@pytest.mark.django_db
def test_no_service_key_at_all(secret):
    failure(py_encrypt(RSAKey.generate_key(2048), b"{}"))


def _with_header(value: str, header: dict) -> str:
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return ".".join([encoded, *value.split(".")[1:]])


@pytest.mark.django_db
def test_header_profile_is_enforced(service_key):
    key = RSAKey.import_key(service_key.public_pem)
    base = {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
    cases = {
        "zip": py_encrypt(key, b"{}", {**base, "zip": "DEF"}, PROFILE + ["DEF"]),
        "RSA-OAEP": py_encrypt(key, b"{}", {**base, "alg": "RSA-OAEP"}, ["RSA-OAEP", "A256GCM"]),
        "A128GCM": py_encrypt(key, b"{}", {**base, "enc": "A128GCM"}, ["RSA-OAEP-256", "A128GCM"]),
    }
    good = py_encrypt(key, b"{}")
    cases["crit"] = _with_header(good, {**base, "crit": ["exp"], "exp": 1})
    cases["jku"] = _with_header(good, {**base, "jku": "https://attacker.example/jwks"})
    cases["kid type"] = _with_header(good, {**base, "kid": 7})
    cases["unknown kid"] = py_encrypt(key, b"{}", {**base, "kid": "svc-nope"})
    cases["header not json"] = "bm90anNvbg." + good.split(".", 1)[1]
    cases["header a list"] = _with_header(good, [1])  # type: ignore[arg-type]
    for name, value in cases.items():
        assert failure(value).code == "payload_decryption_failed", name
    assert decrypt(good) == {}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value",
    [None, 42, {"enc": "x"}, ["a"], "", "a.b.c", "a.b.c.d.e.f", "é.b.c.d.e", "x" * 70000],
)
def test_not_a_jwe_string(service_key, value):
    failure(value)


@pytest.mark.django_db
def test_tampered_parts_fail_cleanly(service_key):
    good = py_encrypt(RSAKey.import_key(service_key.public_pem), json.dumps(PRIVATE))
    parts = good.split(".")
    for index in range(1, 5):
        for replacement in ("A", parts[index][:-2], parts[index][::-1], "____"):
            broken = parts.copy()
            broken[index] = replacement
            error = failure(".".join(broken))
            assert_no_private(str(error))


@pytest.mark.django_db
def test_plaintext_that_is_not_json_comes_back_as_text(service_key):
    key = RSAKey.import_key(service_key.public_pem)
    assert decrypt(py_encrypt(key, b"plain words")) == "plain words"
    assert decrypt(py_encrypt(key, b"[" * 20000)) == "[" * 20000
