"""Key material (chat_security.keys): import formats, refusals, fingerprints, encryption at rest.

Keys are made the way users make them: ``openssl`` and ``ssh-keygen`` in a
temporary directory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from chat_security import keys, tokens
from chat_security.exceptions import ChatSecurityError, KeyImportError
from chat_security.models import AuditEntry, Key
from tests.chat_helpers import stored_secret

from .tokencraft import chat_settings, hs256, rs256


def run(*args: str, cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def keydir(tmp_path_factory) -> Path:
    """One RSA key pair in every format a user might paste, made by the real tools."""
    d = tmp_path_factory.mktemp("keys")
    run("openssl", "genrsa", "-out", "key.pem", "2048", cwd=d)
    run("openssl", "rsa", "-in", "key.pem", "-pubout", "-out", "spki.pem", cwd=d)
    run("openssl", "rsa", "-in", "key.pem", "-RSAPublicKey_out", "-out", "pkcs1_pub.pem", cwd=d)
    run("openssl", "rsa", "-in", "key.pem", "-traditional", "-out", "pkcs1_priv.pem", cwd=d)
    run("openssl", "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-out", "pkcs8.pem", cwd=d)
    run(
        "openssl", "req", "-x509", "-new", "-key", "key.pem", "-days", "30",
        "-subj", "/CN=chat.example.com", "-out", "cert.pem", cwd=d,
    )  # fmt: skip
    run("ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", "id_rsa", cwd=d)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "id_ed25519", cwd=d)
    run("openssl", "genrsa", "-out", "small.pem", "1024", cwd=d)
    run("openssl", "rsa", "-in", "small.pem", "-pubout", "-out", "small_pub.pem", cwd=d)
    run("openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", "ec.pem", cwd=d)
    run("openssl", "ec", "-in", "ec.pem", "-pubout", "-out", "ec_pub.pem", cwd=d)
    run("openssl", "genpkey", "-algorithm", "ed25519", "-out", "ed.pem", cwd=d)
    run("openssl", "pkey", "-in", "ed.pem", "-pubout", "-out", "ed_pub.pem", cwd=d)
    return d


def text(d: Path, name: str) -> str:
    return (d / name).read_text()


def private_key(d: Path, name: str = "key.pem"):
    return serialization.load_pem_private_key((d / name).read_bytes(), password=None)


def rsa_jwk(d: Path, **extra) -> dict:
    numbers = private_key(d).public_key().public_numbers()

    def b64u(n: int) -> str:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return {"kty": "RSA", "n": b64u(numbers.n), "e": b64u(numbers.e), **extra}


def rfc7638(jwk: dict) -> str:
    """The RFC 7638 thumbprint computed by hand: SHA-256 of the canonical required members."""
    canonical = json.dumps({k: jwk[k] for k in ("e", "kty", "n")}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# -- accepted formats ----------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["spki.pem", "pkcs1_pub.pem", "cert.pem", "jwk", "jwks"],
)
def test_every_public_key_format_gives_the_same_key(keydir, source):
    if source == "jwk":
        pasted = json.dumps(rsa_jwk(keydir))
    elif source == "jwks":
        pasted = json.dumps({"keys": [rsa_jwk(keydir, use="sig", alg="RS256")]})
    else:
        pasted = text(keydir, source)
    info = keys.parse_public_key(pasted)
    assert info.bits == 2048
    assert info.pem == text(keydir, "spki.pem")
    assert info.thumbprint == rfc7638(rsa_jwk(keydir))


def test_ssh_keygen_public_key_line(keydir):
    line = text(keydir, "id_rsa.pub")
    assert line.startswith("ssh-rsa ")
    info = keys.parse_public_key(line)
    ssh_private = serialization.load_ssh_private_key((keydir / "id_rsa").read_bytes(), None)
    assert info.key.public_numbers() == ssh_private.public_key().public_numbers()


def test_bytes_and_surrounding_whitespace(keydir):
    info = keys.parse_public_key(b"\n\n  " + (keydir / "spki.pem").read_bytes() + b"\n\n")
    assert info.pem == text(keydir, "spki.pem")


def test_rfc7638_example_thumbprint():
    # The example key and thumbprint of RFC 7638 section 3.1.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
        "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-6"
        "5YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyr"
        "dkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKn"
        "qDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    info = keys.parse_public_key(json.dumps(jwk))
    assert info.thumbprint == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert info.jwk_kid == "2011-04-29"


@pytest.mark.django_db
def test_stored_public_key_verifies_rs256_tokens(keydir, clock):
    key = Key.objects.add_public_key(text(keydir, "id_rsa.pub"), actor="alice")
    assert key.kind == "public_key"
    jwk = keys.public_jwk(key.public_pem, key.kid)
    assert key.kid == key.fingerprint == rfc7638(jwk)
    assert key.bits == 2048
    assert key.created_by == "alice"
    ssh_private = serialization.load_ssh_private_key((keydir / "id_rsa").read_bytes(), None)
    claims = {"sub": "u", "exp": int(clock.t) + 60}
    assert tokens.verify(rs256(ssh_private, claims)).kid == key.kid


@pytest.mark.django_db
def test_jwk_kid_becomes_the_key_kid(keydir):
    key = Key.objects.add_public_key(json.dumps(rsa_jwk(keydir, kid="site-2024")))
    assert key.kid == "site-2024"
    assert key.fingerprint == rfc7638(rsa_jwk(keydir))


@pytest.mark.django_db
def test_the_same_key_twice_is_refused(keydir):
    Key.objects.add_public_key(text(keydir, "spki.pem"))
    with pytest.raises(ChatSecurityError, match="already registered"):
        Key.objects.add_public_key(text(keydir, "cert.pem"))
    assert Key.objects.count() == 1


# -- keys as copied from a JSON config or an environment variable (issue 17, item 8) --------


def _one_line(pem: str) -> str:
    return pem.strip().replace("\n", " ")


PASTED_FORMS = {
    "json string": lambda pem: json.dumps(pem),
    "json string, indented": lambda pem: "  " + json.dumps(pem) + "\n",
    "escaped newlines": lambda pem: pem.replace("\n", "\\n"),
    "escaped CRLF": lambda pem: pem.replace("\n", "\\r\\n"),
    "single quotes + escapes": lambda pem: "'" + pem.strip().replace("\n", "\\n") + "'",
    "double quotes, real newlines": lambda pem: '"' + pem + '"',
    "one line with spaces": _one_line,
    "json with escaped slashes": lambda pem: json.dumps(pem).replace("/", "\\/"),
}


@pytest.mark.parametrize("form", sorted(PASTED_FORMS))
@pytest.mark.parametrize("source", ["spki.pem", "pkcs1_pub.pem", "cert.pem"])
def test_a_pem_pasted_from_json_or_an_environment_variable_is_accepted(keydir, source, form):
    pasted = PASTED_FORMS[form](text(keydir, source))
    info = keys.parse_public_key(pasted)
    assert info.pem == text(keydir, "spki.pem")


@pytest.mark.parametrize(
    "wrap",
    [json.dumps, lambda jwk: "'" + jwk + "'"],
    ids=["json string", "single quotes"],
)
def test_a_quoted_jwk_or_ssh_line_is_accepted(keydir, wrap):
    jwk = keys.parse_public_key(wrap(json.dumps(rsa_jwk(keydir))))
    assert jwk.pem == text(keydir, "spki.pem")
    ssh = keys.parse_public_key(wrap(text(keydir, "id_rsa.pub").strip()))
    assert ssh.bits == 2048


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda pem: pem.split("-----END")[0], ("no '-----END PUBLIC KEY-----' line",)),
        (lambda pem: pem.replace("\n", '"\n', 3), ("contains '\"'", "not base64")),
        (lambda pem: pem.replace("\n", "\\x\n", 2), ("contains '\\\\'", "not base64")),
        (lambda pem: pem[:60] + pem[-30:], ("cut short",)),
        (lambda pem: pem.replace(pem.splitlines()[1], "A" * 64), ("damaged or incomplete",)),
    ],
    ids=["no END line", "stray quotes", "a backslash", "cut short", "damaged"],
)
def test_a_damaged_pem_says_what_is_wrong_in_our_words(keydir, damage, words):
    pasted = damage(text(keydir, "spki.pem"))
    with pytest.raises(KeyImportError) as info:
        Key.objects.add_public_key(pasted)
    message = str(info.value)
    for word in words:
        assert word in message
    for library_words in ("deserialize", "ASN.1", "InvalidData", "Details:", "error:"):
        assert library_words not in message


@pytest.mark.django_db
def test_add_public_key_on_the_cli_takes_a_json_escaped_pem(keydir, clock):
    from .test_cli import cli

    result = cli("add-public-key", "-", stdin=json.dumps(text(keydir, "spki.pem")))
    assert result.code == 0, result.err
    assert result.json["fingerprint"] == rfc7638(rsa_jwk(keydir))


# -- refusals ----------------------------------------------------------------------


def assert_refused(pasted, *words: str) -> None:
    with pytest.raises(KeyImportError) as info:
        Key.objects.add_public_key(pasted)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word.lower() in message.lower()
    assert Key.objects.count() == 0
    assert AuditEntry.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["key.pem", "pkcs8.pem", "pkcs1_priv.pem", "id_rsa", "ed.pem"])
def test_private_keys_are_refused_and_not_stored(keydir, name):
    pasted = text(keydir, name)
    assert "PRIVATE KEY" in pasted
    assert_refused(pasted, "private key", "not stored")


@pytest.mark.django_db
def test_private_key_pasted_with_its_public_key_is_refused(keydir):
    assert_refused(text(keydir, "spki.pem") + text(keydir, "pkcs8.pem"), "private key")


@pytest.mark.django_db
def test_private_jwk_is_refused_and_not_stored(keydir):
    from joserfc.jwk import RSAKey

    private_jwk = RSAKey.import_key(text(keydir, "key.pem")).as_dict(private=True)
    assert "d" in private_jwk
    assert_refused(json.dumps(private_jwk), "private key", "nothing was stored")
    assert_refused(json.dumps({"keys": [private_jwk]}), "private key")


@pytest.mark.django_db
def test_putty_private_key_is_refused(keydir):
    assert_refused("PuTTY-User-Key-File-3: ssh-rsa\nEncryption: none\n", "private key")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "kind"), [("ec_pub.pem", "EC"), ("ed_pub.pem", "Ed25519"), ("id_ed25519.pub", "")]
)
def test_non_rsa_keys_are_refused(keydir, name, kind):
    assert_refused(text(keydir, name), "only RSA", kind)


@pytest.mark.django_db
def test_non_rsa_jwk_is_refused():
    jwk = {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}
    assert_refused(json.dumps(jwk), "only RSA", "EC")
    assert_refused(json.dumps({"kty": "oct", "k": "c2VjcmV0"}), "only RSA")


@pytest.mark.django_db
def test_small_rsa_key_is_refused(keydir):
    assert_refused(text(keydir, "small_pub.pem"), "1024 bits", "2048")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("pasted", "words"),
    [
        ("", ("no key",)),
        ("   \n\t ", ("no key",)),
        ("hello world", ("unrecognised",)),
        (b"\xff\xfe\x00binary", ("text",)),
        ("-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----", ("read",)),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", ("read",)),
        ("ssh-rsa AAAAB3NzaC1yc2E= x", ("read",)),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP== x", ()),
        ("{not json", ("JSON",)),
        ("[1, 2]", ("unrecognised",)),
        ('{"keys": []}', ("exactly one",)),
        ('{"keys": [{"kty": "RSA"}, {"kty": "RSA"}]}', ("exactly one",)),
        ('{"kty": "RSA", "n": "AAAA", "e": "AQAB"}', ()),
        ('{"kty": "RSA", "n": 5, "e": "AQAB"}', ("invalid",)),
        ('{"kty": "RSA"}', ("invalid",)),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_garbage_is_refused_with_a_message(pasted, words):
    assert_refused(pasted, *words)


@pytest.mark.django_db
def test_huge_input_is_refused(keydir):
    assert_refused(text(keydir, "spki.pem") + " " * 70_000 + "x", "too large")
    assert_refused("A" * 10_000_000, "too large")


@pytest.mark.django_db
@pytest.mark.parametrize("kid", ["", "x" * 256, "a\nb", "é", 5])
def test_jwk_with_an_unusable_kid_is_refused(keydir, kid):
    assert_refused(json.dumps(rsa_jwk(keydir, kid=kid)))


# -- secrets ------------------------------------------------------------------------


def test_generated_secrets_are_long_and_distinct():
    values = {keys.generate_secret() for _ in range(50)}
    assert len(values) == 50
    assert all(len(v) >= 43 for v in values)  # 256 bits, base64url
    assert keys.secret_fingerprint("abc") == hashlib.sha256(b"abc").hexdigest()


# -- encryption at rest -----------------------------------------------------------------

OLD = "old-encryption-key-0123456789-abcdefghijklmnop"
NEW = "new-encryption-key-0123456789-abcdefghijklmnop"


def test_encryption_round_trip_and_no_clear_text():
    with chat_settings({"ENCRYPTION_KEYS": [OLD]}):
        token = keys.encrypt("the secret value")
        assert "the secret value" not in token
        assert keys.decrypt(token) == "the secret value"
        assert keys.encrypt("the secret value") != token  # random IV


def test_encryption_keys_rotation():
    with chat_settings({"ENCRYPTION_KEYS": [OLD]}):
        stored = keys.encrypt("s3cret")
    with chat_settings({"ENCRYPTION_KEYS": [NEW]}), pytest.raises(ChatSecurityError):
        keys.decrypt(stored)
    with chat_settings({"ENCRYPTION_KEYS": [NEW, OLD]}):
        assert keys.decrypt(stored) == "s3cret"  # the old key still decrypts second in the list
        rotated = keys.reencrypt(stored)
    with chat_settings({"ENCRYPTION_KEYS": [NEW]}):
        assert keys.decrypt(rotated) == "s3cret"


def test_default_encryption_key_comes_from_secret_key(settings):
    settings.CHAT_SECURITY = {}
    stored = keys.encrypt("s3cret")
    assert keys.decrypt(stored) == "s3cret"
    settings.SECRET_KEY = "another-secret-key-0123456789-abcdefghijklmnop"
    with pytest.raises(ChatSecurityError, match="ENCRYPTION_KEYS"):
        keys.decrypt(stored)


@pytest.mark.django_db
def test_key_store_survives_encryption_key_rotation(clock):
    with chat_settings({"ENCRYPTION_KEYS": [OLD]}):
        key, secret = Key.objects.generate_secret()
        service = Key.objects.generate_service_keypair()
    token = hs256(secret, {"sub": "u", "exp": int(clock.t) + 60})
    with chat_settings({"ENCRYPTION_KEYS": [NEW, OLD]}):
        assert tokens.verify(token).kid == key.kid
        key.refresh_from_db()
        assert stored_secret(key) == secret
        assert "PRIVATE KEY" in keys.decrypt(Key.objects.get(pk=service.pk).encrypted_material)
