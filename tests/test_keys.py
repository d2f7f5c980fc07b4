"""Key material (``keys``) and public keys given to the site (``public_keys``).

Import formats, refusals, fingerprints, encryption at rest.

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
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from chat_security import keys, public_keys, tokens
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
    _ec_and_ed25519_formats(d)
    _other_types(d)
    return d


def _ec_and_ed25519_formats(d: Path) -> None:
    """An EC P-256 and an Ed25519 key in every format: PEM, certificate, OpenSSH line
    (and the OpenSSH line of the RSA key above).

    ``ssh-keygen -y`` reads openssl's RSA and EC keys but not its Ed25519 one,
    so the Ed25519 key is ssh-keygen's (``id_ed25519``), handed to openssl as PKCS#8.
    """
    ssh_ed = serialization.load_ssh_private_key((d / "id_ed25519").read_bytes(), None)
    (d / "ed_ssh.pem").write_bytes(
        ssh_ed.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (d / "ed_ssh.pem").chmod(0o600)
    for name in ("ec", "ed_ssh"):
        run("openssl", "pkey", "-in", f"{name}.pem", "-pubout", "-out", f"{name}_spki.pem", cwd=d)
        run(
            "openssl", "req", "-x509", "-new", "-key", f"{name}.pem", "-days", "30",
            "-subj", "/CN=chat.example.com", "-out", f"{name}_cert.pem", cwd=d,
        )  # fmt: skip
    for name in ("key", "ec"):
        (d / f"{name}.pem").chmod(0o600)  # ssh-keygen reads no private key others may read
    (d / "rsa_ssh.pub").write_text(run("ssh-keygen", "-y", "-f", "key.pem", cwd=d))
    (d / "ec_ssh.pub").write_text(run("ssh-keygen", "-y", "-f", "ec.pem", cwd=d))
    (d / "ed_ssh.pub").write_text(text(d, "id_ed25519.pub"))
    run("openssl", "pkcs8", "-topk8", "-nocrypt", "-in", "ec.pem", "-out", "ec_pkcs8.pem", cwd=d)
    run("ssh-keygen", "-q", "-t", "ecdsa", "-b", "256", "-N", "", "-f", "id_ecdsa", cwd=d)


def _other_types(d: Path) -> None:
    """Keys of the curves and types that are refused."""
    for curve, name in (("secp384r1", "p384"), ("secp521r1", "p521"), ("secp256k1", "k1")):
        run("openssl", "ecparam", "-genkey", "-name", curve, "-noout", "-out", f"{name}.pem", cwd=d)
        run("openssl", "ec", "-in", f"{name}.pem", "-pubout", "-out", f"{name}_pub.pem", cwd=d)
    for kind in ("x25519", "ed448", "x448"):
        run("openssl", "genpkey", "-algorithm", kind, "-out", f"{kind}.pem", cwd=d)
        run("openssl", "pkey", "-in", f"{kind}.pem", "-pubout", "-out", f"{kind}_pub.pem", cwd=d)
    run("ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", "id_ecdsa384", cwd=d)


def text(d: Path, name: str) -> str:
    return (d / name).read_text()


def private_key(d: Path, name: str = "key.pem"):
    return serialization.load_pem_private_key((d / name).read_bytes(), password=None)


def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rsa_jwk(d: Path, **extra) -> dict:
    numbers = private_key(d).public_key().public_numbers()

    def b64n(n: int) -> str:
        return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "n": b64n(numbers.n), "e": b64n(numbers.e), **extra}


def ec_jwk(d: Path, name: str = "ec.pem", crv: str = "P-256", **extra) -> dict:
    """An EC public JWK written by hand (RFC 7518 §6.2.1: coordinates at full length)."""
    public = private_key(d, name).public_key()
    size = (public.curve.key_size + 7) // 8
    numbers = public.public_numbers()
    x, y = (b64u(n.to_bytes(size, "big")) for n in (numbers.x, numbers.y))
    return {"kty": "EC", "crv": crv, "x": x, "y": y, **extra}


def okp_jwk(d: Path, name: str = "ed_ssh.pem", crv: str = "Ed25519", **extra) -> dict:
    """An OKP public JWK written by hand (RFC 8037 §2: x is the raw public key)."""
    raw = (
        private_key(d, name)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return {"kty": "OKP", "crv": crv, "x": b64u(raw), **extra}


#: RFC 7638 §3.2: the required members of each key type, the ones a thumbprint hashes.
THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}


def rfc7638(jwk: dict) -> str:
    """The RFC 7638 thumbprint computed by hand: SHA-256 of the canonical required members."""
    members = THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in members}, separators=(",", ":"))
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
    info = public_keys.parse_public_key(pasted)
    assert info.bits == 2048
    assert info.pem == text(keydir, "spki.pem")
    assert info.thumbprint == rfc7638(rsa_jwk(keydir))


#: Each key type: its private key, its files (PEM, certificate, OpenSSH line), its
#: hand-written JWK, the algorithm it pins and its bits.
KEY_TYPES = {
    "RSA": ("key.pem", "spki.pem", "cert.pem", "rsa_ssh.pub", rsa_jwk, "RS256", 2048),
    "EC": ("ec.pem", "ec_spki.pem", "ec_cert.pem", "ec_ssh.pub", ec_jwk, "ES256", 256),
    "OKP": ("ed_ssh.pem", "ed_ssh_spki.pem", "ed_ssh_cert.pem", "ed_ssh.pub", okp_jwk, "EdDSA",
            256),
}  # fmt: skip
KEY_CLASSES = {
    "RSA": rsa.RSAPublicKey,
    "EC": ec.EllipticCurvePublicKey,
    "OKP": ed25519.Ed25519PublicKey,
}


def key_text(d: Path, kty: str, fmt: str) -> str:
    """The key of type ``kty`` in format ``fmt``, as a user would paste it."""
    _private, spki, cert, ssh, jwk, alg, _bits = KEY_TYPES[kty]
    if fmt == "jwk":
        return json.dumps(jwk(d))
    if fmt == "jwks":
        return json.dumps({"keys": [jwk(d, use="sig", alg=alg, kid=f"{kty}-2027")]})
    if fmt == "one-line PEM":
        return _one_line(text(d, spki))
    return text(d, {"pem": spki, "certificate": cert, "openssh": ssh}[fmt])


FORMATS = ["pem", "certificate", "openssh", "jwk", "jwks", "one-line PEM"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kty", sorted(KEY_TYPES))
def test_every_format_of_every_key_type_gives_the_same_key(keydir, kty, fmt):
    private, spki, _cert, _ssh, jwk, alg, bits = KEY_TYPES[kty]
    info = public_keys.parse_public_key(key_text(keydir, kty, fmt))
    assert (info.kty, info.alg, info.bits) == (kty, alg, bits)
    assert isinstance(info.key, KEY_CLASSES[kty])
    assert info.pem == text(keydir, spki)  # canonical: the SubjectPublicKeyInfo openssl writes
    assert info.thumbprint == rfc7638(jwk(keydir))
    assert info.jwk_kid == (f"{kty}-2027" if fmt == "jwks" else None)
    assert public_keys.load_public_pem(info.pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == private_key(keydir, private).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_ssh_keygen_ecdsa_p256_line(keydir):
    line = text(keydir, "id_ecdsa.pub")
    assert line.startswith("ecdsa-sha2-nistp256 ")
    info = public_keys.parse_public_key(line)
    ssh_private = serialization.load_ssh_private_key((keydir / "id_ecdsa").read_bytes(), None)
    assert (info.alg, info.kty) == ("ES256", "EC")
    assert info.key.public_numbers() == ssh_private.public_key().public_numbers()


@pytest.mark.parametrize("kty", sorted(KEY_TYPES))
def test_public_key_from_jwk_checks_one_jwk_as_a_jwks_url_serves_it(keydir, kty):
    alg, jwk = KEY_TYPES[kty][5], KEY_TYPES[kty][4]
    served = jwk(keydir, kid="k-1", use="sig", alg=alg, x5t="ignored", key_ops=["verify"])
    info = public_keys.public_key_from_jwk(served)
    assert (info.alg, info.kty, info.jwk_kid) == (alg, kty, "k-1")
    assert info.thumbprint == rfc7638(served)
    assert info == public_keys.parse_public_key(json.dumps(served))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (lambda d: ["kty", "EC"], "a JWK must be a JSON object"),
        (lambda d: {"kty": "x" * 10_000}, "unknown key type, kty 'xxxxxxx"),
        (lambda d: rsa_jwk(d, p="AQAB"), "private key (member 'p')"),
        (lambda d: ec_jwk(d, kid="a\nb"), "kid must be 1–255 printable ASCII characters"),
    ],
    ids=["a list", "a huge kty", "RSA p", "bad kid"],
)
def test_public_key_from_jwk_refusals_are_short_and_say_why(keydir, data, words):
    with pytest.raises(KeyImportError) as info:
        public_keys.public_key_from_jwk(data(keydir))
    message = str(info.value)
    assert words in message
    assert len(message) < 200 and "\n" not in message


@pytest.mark.parametrize("kty", sorted(KEY_TYPES))
def test_a_stored_key_loads_only_for_the_algorithm_its_type_pins(keydir, kty):
    pem = public_keys.parse_public_key(text(keydir, KEY_TYPES[kty][1])).pem
    for alg in ("RS256", "ES256", "EdDSA", "HS256"):
        if alg == KEY_TYPES[kty][5]:
            assert isinstance(public_keys.load_verify_pem(pem, alg), KEY_CLASSES[kty])
        else:
            with pytest.raises(KeyImportError, match=f"does not fit {alg}"):
                public_keys.load_verify_pem(pem, alg)
    p384 = text(keydir, "p384_pub.pem")  # never stored, but never loaded for ES256 either
    with pytest.raises(KeyImportError):
        public_keys.load_verify_pem(p384, "ES256")


@pytest.mark.django_db
@pytest.mark.parametrize("kty", sorted(KEY_TYPES))
def test_a_registered_key_stores_the_algorithm_its_type_pins(keydir, kty):
    _private, spki, cert, ssh, jwk, alg, bits = KEY_TYPES[kty]
    key = Key.objects.add_public_key(text(keydir, ssh))
    assert (key.kind, key.alg, key.bits) == ("public_key", alg, bits)
    assert key.kid == key.fingerprint == rfc7638(jwk(keydir))
    assert key.public_pem == text(keydir, spki)
    for other in (cert, spki):
        with pytest.raises(ChatSecurityError, match=f"already registered as kid {key.kid}"):
            Key.objects.add_public_key(text(keydir, other))
    assert Key.objects.count() == 1


def test_ssh_keygen_public_key_line(keydir):
    line = text(keydir, "id_rsa.pub")
    assert line.startswith("ssh-rsa ")
    info = public_keys.parse_public_key(line)
    ssh_private = serialization.load_ssh_private_key((keydir / "id_rsa").read_bytes(), None)
    assert info.key.public_numbers() == ssh_private.public_key().public_numbers()


def test_bytes_and_surrounding_whitespace(keydir):
    info = public_keys.parse_public_key(b"\n\n  " + (keydir / "spki.pem").read_bytes() + b"\n\n")
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
    info = public_keys.parse_public_key(json.dumps(jwk))
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
    info = public_keys.parse_public_key(pasted)
    assert info.pem == text(keydir, "spki.pem")


@pytest.mark.parametrize(
    "wrap",
    [json.dumps, lambda jwk: "'" + jwk + "'"],
    ids=["json string", "single quotes"],
)
def test_a_quoted_jwk_or_ssh_line_is_accepted(keydir, wrap):
    jwk = public_keys.parse_public_key(wrap(json.dumps(rsa_jwk(keydir))))
    assert jwk.pem == text(keydir, "spki.pem")
    ssh = public_keys.parse_public_key(wrap(text(keydir, "id_rsa.pub").strip()))
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


ACCEPTED = (
    "a public key must be RSA of at least 2048 bits (RS256), EC P-256 (ES256) or Ed25519 (EdDSA)"
)


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
@pytest.mark.parametrize(
    "name",
    [
        "key.pem", "pkcs8.pem", "pkcs1_priv.pem", "id_rsa", "ed.pem", "ec.pem", "ec_pkcs8.pem",
        "id_ecdsa", "id_ed25519", "ed_ssh.pem",
    ],
)  # fmt: skip
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
    ("name", "words"),
    [
        ("p384_pub.pem", ("must be on the P-256 curve (ES256)", "this one is on P-384")),
        ("p521_pub.pem", ("P-256 curve", "on P-521")),
        ("k1_pub.pem", ("P-256 curve", "on secp256k1")),
        ("id_ecdsa384.pub", ("P-256 curve", "on P-384")),
        ("x25519_pub.pem", ("X25519 keys are for key agreement and cannot sign", ACCEPTED)),
        ("x448_pub.pem", ("X448", "cannot sign", ACCEPTED)),
        ("ed448_pub.pem", ("Ed448 keys are not accepted", ACCEPTED)),
    ],
)
def test_other_curves_and_types_are_refused_naming_them(keydir, name, words):
    assert_refused(text(keydir, name), *words)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("jwk", "words"),
    [
        (lambda d: ec_jwk(d, "p384.pem", "P-384"), ("P-256 curve (ES256)", "crv 'P-384'")),
        (lambda d: ec_jwk(d, "k1.pem", "secp256k1"), ("P-256 curve", "crv 'secp256k1'")),
        (lambda d: {**ec_jwk(d), "crv": None}, ("P-256 curve", "crv none")),
        (lambda d: okp_jwk(d, "x25519.pem", "X25519"), ("must be Ed25519 (EdDSA)", "crv 'X25519'")),
        (lambda d: okp_jwk(d, "ed448.pem", "Ed448"), ("must be Ed25519", "crv 'Ed448'")),
        (lambda d: {"kty": "oct", "k": "c2VjcmV0"}, ("shared secret", "not a public key")),
        (lambda d: {**ec_jwk(d), "kty": "ECDSA"}, ("unknown key type", "'ECDSA'", "RSA, EC")),
        (lambda d: {**rsa_jwk(d), "kty": 5}, ("unknown key type", "5")),
        (lambda d: {"n": rsa_jwk(d)["n"], "e": "AQAB"}, ("has no kty",)),
    ],
    ids=["P-384", "secp256k1", "no crv", "X25519", "Ed448", "oct", "kty ECDSA", "kty 5", "no kty"],
)
def test_jwk_of_another_type_or_curve_is_refused_naming_it(keydir, jwk, words):
    assert_refused(json.dumps(jwk(keydir)), *words)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("jwk", "words"),
    [
        (
            lambda d: ec_jwk(d, alg="RS256"),
            ("says alg 'RS256'", "EC P-256 key verifies ES256 only"),
        ),
        (lambda d: rsa_jwk(d, alg="RS384"), ("says alg 'RS384'", "RSA key verifies RS256 only")),
        (lambda d: rsa_jwk(d, alg="RSA-OAEP-256"), ("'RSA-OAEP-256'", "RS256 only")),
        (
            lambda d: okp_jwk(d, alg="ES256"),
            ("says alg 'ES256'", "Ed25519 key verifies EdDSA only"),
        ),
        (lambda d: okp_jwk(d, alg="Ed25519"), ("says alg 'Ed25519'", "EdDSA only")),
        (lambda d: ec_jwk(d, alg=["ES256"]), ("says alg ['ES256']",)),
    ],
    ids=["EC+RS256", "RSA+RS384", "RSA+RSA-OAEP-256", "OKP+ES256", "OKP+Ed25519", "alg list"],
)
def test_jwk_whose_alg_contradicts_its_type_is_refused_saying_so(keydir, jwk, words):
    assert_refused(json.dumps(jwk(keydir)), *words, "(a key's type sets its algorithm)")


@pytest.mark.django_db
def test_jwk_for_encryption_is_refused(keydir):
    assert_refused(json.dumps(ec_jwk(keydir, use="enc")), "use 'enc'", "only signature keys")


def _p256_jwk_with_a_short_x() -> dict:
    """A P-256 key whose x has a leading zero byte, written without it (31 bytes)."""
    for n in range(1, 5000):
        numbers = ec.derive_private_key(n, ec.SECP256R1()).public_key().public_numbers()
        if numbers.x < 1 << 248:
            return {
                "kty": "EC", "crv": "P-256", "x": b64u(numbers.x.to_bytes(31, "big")),
                "y": b64u(numbers.y.to_bytes(32, "big")),
            }  # fmt: skip
    raise AssertionError("no such key among the first 5000")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("jwk", "words"),
    [
        (lambda d: {**ec_jwk(d), "y": ec_jwk(d)["x"]}, ("EC JWK is invalid", "x and y")),
        (lambda d: {**ec_jwk(d), "x": 5}, ("EC JWK is invalid",)),
        (lambda d: {**ec_jwk(d), "y": ec_jwk(d)["y"] + "="}, ("EC JWK is invalid",)),
        (lambda d: _p256_jwk_with_a_short_x(), ("x and y must be 32 bytes each",)),
        (lambda d: {**okp_jwk(d), "x": okp_jwk(d)["x"][:-2]}, ("OKP JWK is invalid", "x")),
        (lambda d: {"kty": "OKP", "crv": "Ed25519"}, ("OKP JWK is invalid",)),
    ],
    ids=["not on the curve", "x not a string", "padded y", "short x", "short Ed25519 x", "no x"],
)
def test_damaged_ec_and_okp_jwks_are_refused(keydir, jwk, words):
    assert_refused(json.dumps(jwk(keydir)), *words)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "jwk",
    [
        lambda d: {**ec_jwk(d), "d": b64u(b"\x01" * 32)},
        lambda d: {**okp_jwk(d), "d": b64u(b"\x01" * 32)},
    ],
    ids=["EC", "OKP"],
)
def test_private_ec_and_okp_jwks_are_refused_and_not_stored(keydir, jwk):
    assert_refused(json.dumps(jwk(keydir)), "private key (member 'd')", "nothing was stored")


@pytest.mark.django_db
def test_security_key_ssh_lines_are_refused(keydir):
    blob = base64.b64decode(text(keydir, "ed_ssh.pub").split()[1])
    line = "sk-ssh-ed25519@openssh.com " + base64.b64encode(blob).decode() + " me@laptop"
    assert_refused(line, "security-key (sk-) SSH keys cannot sign tokens", "ssh-ed25519")


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
