"""Client public keys of every type verify their own algorithm only (SPEC §14, §3, §4).

RSA (RS256), EC P-256 (ES256) and Ed25519 (EdDSA) keys are pasted as PEM, as
the JWK PyJWT exports and as an OpenSSH line; tokens are signed by PyJWT, or
by hand where a test needs a signature PyJWT would never write (DER ECDSA,
an Ed25519 signature one byte short or long). Node-signed tokens are in
``test_interop.py``.
"""

from __future__ import annotations

import json
import re

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from django.db import transaction
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from chat_security import tokens
from chat_security.diagnosis import diagnose
from chat_security.exceptions import KeyUnreadable, TokenError
from chat_security.models import Key, SecurityConfig, store_changed

from .test_admin_permissions import BASE, client_for
from .test_cli import cli
from .tokencraft import b64, chat_settings, rsa_key, segment

pytestmark = pytest.mark.django_db

_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
_PEM = serialization.Encoding.PEM


def _private(alg: str, slot: int = 0):
    """A private key of the type ``alg`` pins (RSA keys cached: they are slow to make)."""
    if alg == "RS256":
        return rsa_key(slot)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


def pasted(private, fmt: str) -> str:
    """The public half of ``private`` as an admin would paste it."""
    public = private.public_key()
    if fmt == "pem":
        return public.public_bytes(_PEM, _SPKI).decode()
    if fmt == "openssh":
        ssh = serialization.Encoding.OpenSSH
        return public.public_bytes(ssh, serialization.PublicFormat.OpenSSH).decode() + " me@host"
    # The JWK PyJWT exports for the key's type.
    if isinstance(public, ec.EllipticCurvePublicKey):
        return json.dumps(ECAlgorithm.to_jwk(public, as_dict=True))
    if isinstance(public, ed25519.Ed25519PublicKey):
        return json.dumps(OKPAlgorithm.to_jwk(public, as_dict=True))
    return json.dumps(RSAAlgorithm.to_jwk(public, as_dict=True))


def claims(clock, **extra) -> dict:
    return {"sub": "user-1", "iat": int(clock.t), "exp": int(clock.t) + 600, **extra}


def signed(private, alg: str, clock, **header) -> str:
    return jwt.encode(claims(clock), private, algorithm=alg, headers=header or None)


def code_of(token: str) -> str:
    with pytest.raises(TokenError) as info:
        tokens.verify(token)
    return info.value.code


def resigned(token: str, signature: bytes) -> str:
    """``token`` with its signature replaced."""
    return token.rsplit(".", 1)[0] + "." + b64(signature)


# -- every type, every format, tokens signed by PyJWT ------------------------------------


@pytest.mark.parametrize("fmt", ["pem", "jwk", "openssh"])
@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_a_pasted_key_verifies_pyjwt_tokens_of_its_algorithm(clock, alg, fmt):
    private = _private(alg)
    key = Key.objects.add_public_key(pasted(private, fmt))
    assert (key.kind, key.alg) == ("public_key", alg)
    for header in ({}, {"kid": key.kid}):  # the vendor way (no kid) and with the kid
        result = tokens.verify(signed(private, alg, clock, **header))
        assert (result.kid, result.key_kind, result.user_id) == (key.kid, "public_key", "user-1")
        assert result.header["alg"] == alg
    other = _private(alg, slot=5)
    assert code_of(signed(other, alg, clock)) == "invalid_signature"


def test_several_keys_of_one_type_are_all_tried_without_a_kid(clock):
    first, second = _private("EdDSA"), _private("EdDSA")
    older = Key.objects.add_public_key(pasted(first, "pem"))
    newer = Key.objects.add_public_key(pasted(second, "openssh"))
    assert tokens.verify(signed(second, "EdDSA", clock)).kid == newer.kid
    assert tokens.verify(signed(first, "EdDSA", clock)).kid == older.kid


def test_status_lists_each_pasted_key_with_its_algorithm(clock):
    for alg in ("RS256", "ES256", "EdDSA"):
        Key.objects.add_public_key(pasted(_private(alg), "pem"))
    keys = cli("status").json["keys"]
    assert sorted((k["kind"], k["alg"]) for k in keys) == [
        ("public_key", "ES256"), ("public_key", "EdDSA"), ("public_key", "RS256"),
    ]  # fmt: skip


@pytest.mark.parametrize(("alg", "fmt"), [("ES256", "openssh"), ("EdDSA", "jwk")])
def test_the_panel_adds_a_key_and_lists_its_algorithm(clock, alg, fmt):
    SecurityConfig.load()
    response = client_for("admin").post(
        BASE + "public-key/add/", {"public_key": pasted(_private(alg), fmt)}, follow=True
    )
    key = Key.objects.get()
    content = response.content.decode()
    assert f"Public key {key.kid} added (256 bits)." in content
    row = re.search(rf"<td><code>{re.escape(key.kid)}</code></td>(.*?)</tr>", content, re.S)
    assert row and f"<td>{alg}</td>" in row.group(1)


def test_add_public_key_on_the_cli_takes_an_openssh_ed25519_line(clock):
    private = _private("EdDSA")
    result = cli("add-public-key", "-", stdin=pasted(private, "openssh"))
    assert result.code == 0, result.err
    key = Key.objects.get(kid=result.json["kid"])
    assert (key.alg, key.bits, key.fingerprint) == ("EdDSA", 256, result.json["fingerprint"])
    assert tokens.verify(signed(private, "EdDSA", clock)).kid == key.kid


# -- a key's type pins its algorithm (SPEC §14; §3 step 4) --------------------------------


@pytest.fixture
def one_of_each(clock):
    """alg -> (registered public key, its private half), one key per type."""
    made = {}
    for alg in ("RS256", "ES256", "EdDSA"):
        private = _private(alg)
        made[alg] = Key.objects.add_public_key(pasted(private, "pem")), private
    return made


@pytest.mark.parametrize(
    ("token_alg", "kid_of"),
    [
        ("ES256", "EdDSA"),  # an ES256 token whose kid names an Ed25519 key
        ("RS256", "ES256"),  # an RS256 token with an EC key's kid
        ("EdDSA", "RS256"),
        ("EdDSA", "ES256"),
        ("ES256", "RS256"),
        ("RS256", "EdDSA"),
    ],
)
def test_a_kid_naming_a_key_of_another_type_is_algorithm_not_allowed(
    clock, one_of_each, token_alg, kid_of
):
    key, _ = one_of_each[kid_of]
    token = signed(one_of_each[token_alg][1], token_alg, clock, kid=key.kid)
    with pytest.raises(TokenError) as info:
        tokens.verify(token)
    assert info.value.code == "algorithm_not_allowed"
    assert f"kid {key.kid} names a public key ({kid_of}), not usable with {token_alg}" in str(
        info.value.detail
    )


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_a_token_of_an_algorithm_no_key_verifies_is_security_not_configured(clock, alg):
    Key.objects.add_public_key(pasted(_private("RS256"), "pem"))  # RS256 only
    private = _private(alg)
    assert code_of(signed(private, alg, clock)) == "security_not_configured"
    # An unknown kid too: the fix is a key of that type, as for every other kind.
    assert code_of(signed(private, alg, clock, kid="idp-2027")) == "security_not_configured"
    diag = diagnose(signed(private, alg, clock))
    assert diag.code == "security_not_configured"
    assert "No usable public key exists yet." in " ".join(diag.hints)


def test_an_algorithm_left_out_of_allowed_algorithms_is_refused_first(clock, one_of_each):
    key, private = one_of_each["EdDSA"]
    with chat_settings({"ALLOWED_ALGORITHMS": ["HS256", "RS256", "ES256"]}):
        assert code_of(signed(private, "EdDSA", clock, kid=key.kid)) == "algorithm_not_allowed"
    assert tokens.verify(signed(private, "EdDSA", clock, kid=key.kid)).kid == key.kid


# -- signatures in the one form JOSE gives them (SPEC §3 strictness) ---------------------------


def test_a_der_encoded_es256_signature_is_invalid_signature(clock, one_of_each):
    key, private = one_of_each["ES256"]
    token = signed(private, "ES256", clock, kid=key.kid)
    signing_input = token.rsplit(".", 1)[0].encode()
    der = private.sign(signing_input, ec.ECDSA(hashes.SHA256()))
    assert der[0] == 0x30 and len(der) != 64  # an ASN.1 SEQUENCE of r and s
    assert code_of(resigned(token, der)) == "invalid_signature"
    # The same signature as JOSE writes it, r and s of 32 bytes each, verifies.
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert tokens.verify(resigned(token, raw)).kid == key.kid


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
@pytest.mark.parametrize("change", ["63 bytes", "65 bytes", "a zero byte first", "a bit flipped"])
def test_a_signature_of_the_wrong_length_or_one_bit_off_is_invalid_signature(
    clock, one_of_each, alg, change
):
    key, private = one_of_each[alg]
    for header in ({}, {"kid": key.kid}):
        token = signed(private, alg, clock, **header)
        signature = jwt.utils.base64url_decode(token.rsplit(".", 1)[1])
        assert len(signature) == 64
        changed = {
            "63 bytes": signature[:63],
            "65 bytes": signature + b"\x00",
            "a zero byte first": b"\x00" + signature,
            "a bit flipped": signature[:10] + bytes([signature[10] ^ 1]) + signature[11:],
        }[change]
        assert code_of(resigned(token, changed)) == "invalid_signature"
        assert tokens.verify(token).kid == key.kid


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_an_empty_signature_is_invalid_signature(clock, one_of_each, alg):
    token = signed(one_of_each[alg][1], alg, clock)
    assert code_of(token.rsplit(".", 1)[0] + ".") == "invalid_signature"


def test_an_ed25519_signature_over_other_bytes_is_invalid_signature(clock, one_of_each):
    _key, private = one_of_each["EdDSA"]
    header = segment({"alg": "EdDSA", "typ": "JWT"})
    payload = segment(claims(clock))
    signature = private.sign(f"{header}.{payload}x".encode())
    assert code_of(f"{header}.{payload}.{b64(signature)}") == "invalid_signature"


# -- the tester names the key; a stored key that fits no algorithm fails closed ----------------


def test_the_tester_names_a_revoked_ec_key_that_signed(clock, one_of_each):
    key, private = one_of_each["ES256"]
    token = signed(private, "ES256", clock, kid=key.kid)
    assert diagnose(token).signer.label == f"public key {key.kid}"
    Key.objects.revoke(key.kid)
    diag = diagnose(token)
    assert diag.code == "key_retired"
    assert (diag.signer.kid, diag.signer.kind, diag.signer.state) == (
        key.kid, "public_key", "revoked",
    )  # fmt: skip


def test_a_stored_key_whose_alg_does_not_fit_its_type_fails_closed_for_itself_only(
    clock, one_of_each
):
    tampered, _ = one_of_each["ES256"]
    with transaction.atomic():  # written behind the manager's back, as a bad restore would
        Key.objects.filter(pk=tampered.pk).update(alg="RS256")
        store_changed()
    rsa_key_, rsa_private = one_of_each["RS256"]
    with pytest.raises(KeyUnreadable):  # it might have signed: never invalid_signature
        tokens.verify(signed(_private("RS256", slot=6), "RS256", clock))
    assert tokens.verify(signed(rsa_private, "RS256", clock, kid=rsa_key_.kid)).kid == rsa_key_.kid
    ed_key, ed_private = one_of_each["EdDSA"]
    assert tokens.verify(signed(ed_private, "EdDSA", clock)).kid == ed_key.kid
