"""Key material: generation, import, fingerprints and encryption at rest.

Nothing here touches the database; ``models`` stores what these functions
return. Parsing is done by ``cryptography``/``joserfc``; this module only
decides what is acceptable and says why when it is not.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings as django_settings
from joserfc.jwk import ECKey, RSAKey

from .conf import app_settings, register_cache
from .exceptions import ChatSecurityError, KeyImportError

MIN_RSA_BITS = 2048
SERVICE_KEY_BITS = 2048
MAX_KEY_TEXT = 64 * 1024
_HKDF_INFO = b"chat_security key store encryption v1"
MIN_ENCRYPTION_KEY = 32
#: RFC 7518 §6.3.2: any of these makes a JWK (part of) a private key.
_PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")


# -- encryption at rest ------------------------------------------------------


def _derive_fernet_key(material: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"chat_security", info=_HKDF_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(material.encode("utf-8")))


def encryption_materials() -> list[str]:
    """The configured ENCRYPTION_KEYS, or SECRET_KEY when none are set.

    A malformed value fails closed (ChatSecurityError) instead of being used:
    a bare string would otherwise be iterated into one-character keys.
    """
    configured = app_settings.ENCRYPTION_KEYS
    if configured is None:
        return [django_settings.SECRET_KEY]
    if not (
        isinstance(configured, list | tuple)
        and configured
        and all(isinstance(k, str) and len(k) >= MIN_ENCRYPTION_KEY for k in configured)
    ):
        raise ChatSecurityError(
            "CHAT_SECURITY['ENCRYPTION_KEYS'] must be a non-empty list of strings of at "
            f"least {MIN_ENCRYPTION_KEY} characters (see manage.py check, chat_security.E013)"
        )
    return list(configured)


#: Said where a key has just been encrypted with SECRET_KEY (the CLI and the panel):
#: chat_security.W001 at the moment it starts to matter.
WITHOUT_ENCRYPTION_KEYS = (
    "warning (chat_security.W001): CHAT_SECURITY['ENCRYPTION_KEYS'] is not set, so this key "
    "is encrypted with SECRET_KEY. Set ENCRYPTION_KEYS first (manage.py chat_security "
    "generate-encryption-key); if you set it now, list SECRET_KEY second and run "
    "'manage.py chat_security reencrypt', or every chat request answers 503."
)


def encrypted_with_secret_key_warning() -> str | None:
    """:data:`WITHOUT_ENCRYPTION_KEYS` while ENCRYPTION_KEYS is unset, else None."""
    return WITHOUT_ENCRYPTION_KEYS if app_settings.raw("ENCRYPTION_KEYS") is None else None


@lru_cache(maxsize=4)
def _fernet(materials: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(_derive_fernet_key(m)) for m in materials])


def encrypt(plaintext: str) -> str:
    """Encrypt with the first encryption key (Fernet: AES-128-CBC + HMAC)."""
    return _fernet(tuple(encryption_materials())).encrypt(plaintext.encode("utf-8")).decode()


def decrypt(ciphertext: str) -> str:
    """Decrypt with any configured encryption key."""
    try:
        return _fernet(tuple(encryption_materials())).decrypt(ciphertext.encode()).decode("utf-8")
    except InvalidToken as exc:
        raise ChatSecurityError(
            "stored key material cannot be decrypted: was CHAT_SECURITY['ENCRYPTION_KEYS'] "
            "(or SECRET_KEY) changed without keeping the old value in the list?"
        ) from exc


def _decrypts(material: str, ciphertext: str) -> bool:
    try:
        Fernet(_derive_fernet_key(material)).decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True


def decrypting_key(ciphertext: str) -> int | None:
    """Position in the configured keys of the one that decrypts ``ciphertext``, or None."""
    for position, material in enumerate(encryption_materials()):
        if _decrypts(material, ciphertext):
            return position
    return None


def encrypted_with_secret_key(ciphertext: str) -> bool:
    """Whether ``ciphertext`` was encrypted while ENCRYPTION_KEYS was unset (with SECRET_KEY)."""
    return _decrypts(django_settings.SECRET_KEY, ciphertext)


def encryption_key_ids() -> list[str]:
    """A short, non-secret id per configured key (to tell them apart in reports)."""
    return [hashlib.sha256(_derive_fernet_key(m)).hexdigest()[:12] for m in encryption_materials()]


def generate_encryption_key() -> str:
    """A new random value fit for ENCRYPTION_KEYS (256 bits, base64url)."""
    return secrets.token_urlsafe(32)


def reencrypt(ciphertext: str) -> str:
    """Re-encrypt under the first key (after ENCRYPTION_KEYS rotation)."""
    return _fernet(tuple(encryption_materials())).rotate(ciphertext.encode()).decode()


# -- signing secrets -----------------------------------------------------------


def generate_secret() -> str:
    """A new HS256 signing secret: 256 random bits, base64url."""
    return secrets.token_urlsafe(32)


def secret_fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret_kid() -> str:
    return "hs-" + secrets.token_hex(6)


# -- RSA keys ----------------------------------------------------------------


@dataclass(frozen=True)
class PublicKeyInfo:
    """A checked RSA public key, ready to store."""

    key: rsa.RSAPublicKey
    pem: str
    bits: int
    thumbprint: str
    jwk_kid: str | None = None


def thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url)."""
    return RSAKey.import_key(public_key).thumbprint()


def public_jwk(public_pem: str, kid: str) -> dict[str, str | list[str]]:
    """The public JWK of an RSA key, with kid/alg/use for a JWKS document."""
    jwk = RSAKey.import_key(public_pem).as_dict(private=False)
    return {**jwk, "kid": kid, "alg": "RSA-OAEP-256", "use": "enc"}


def load_public_pem(pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):  # only ever stored after checking
        raise KeyImportError("stored key is not RSA")
    return key


def _pem_of(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _load_jwk(text: str) -> tuple[object, str | None]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise KeyImportError("the text looks like JSON but does not parse as JSON") from exc
    if isinstance(data, dict) and isinstance(data.get("keys"), list):
        if len(data["keys"]) != 1:
            raise KeyImportError("a JWKS must hold exactly one key to be imported; paste one JWK")
        data = data["keys"][0]
    if not isinstance(data, dict):
        raise KeyImportError("a JWK must be a JSON object")
    if any(member in data for member in _PRIVATE_JWK_MEMBERS):
        raise KeyImportError(
            "this JWK contains a private key; paste only the public key (n, e). Nothing was stored."
        )
    if data.get("kty") != "RSA":
        raise KeyImportError(f"only RSA keys are accepted; this JWK has kty={data.get('kty')!r}")
    try:
        key = RSAKey.import_key(data).public_key
    except Exception as exc:  # joserfc raises several types for bad members
        raise KeyImportError("this RSA JWK is invalid (check its n and e members)") from exc
    kid = data.get("kid")
    if kid is not None and not (
        isinstance(kid, str) and 0 < len(kid) <= 255 and kid.isascii() and kid.isprintable()
    ):
        raise KeyImportError("the JWK's kid must be 1–255 printable ASCII characters")
    return key, kid


#: One PEM block; its body is re-wrapped, so a key pasted on one line still reads.
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)
_BASE64_BODY = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def _unwrap(text: str) -> str:
    """The key inside what was pasted: a JSON string (``"-----BEGIN…\\n…"``, as in a
    JSON config), quotes around it (an environment file), or ``\\n`` escapes."""
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        try:
            inner = json.loads(text, strict=False) if text[0] == '"' else text[1:-1]
        except ValueError:
            inner = text[1:-1]
        text = inner.strip() if isinstance(inner, str) else text
    if "\\" in text and "-----BEGIN" in text:
        try:
            text = json.loads(f'"{text}"', strict=False)
        except ValueError:
            text = text.replace("\\r", "").replace("\\n", "\n")
    return text.strip()


def _canonical_pem(text: str) -> str:
    """The PEM block of ``text`` with its body as base64 lines of 64, or a precise refusal."""
    match = _PEM_BLOCK.search(text)
    if match is None:
        begin = re.search(r"-----BEGIN ([A-Z0-9 ]+)-----", text)
        end = f"-----END {begin.group(1)}-----" if begin else "-----END …-----"
        raise KeyImportError(
            f"the PEM key has no '{end}' line: copy the whole key, from -----BEGIN to -----END"
        )
    label, body = match.group(1), "".join(match.group(2).split())
    if not _BASE64_BODY.fullmatch(body) or len(body) % 4:
        bad = next((c for c in body if not (c.isascii() and (c.isalnum() or c in "+/="))), "")
        what = f"contains {bad!r}, which is not base64" if bad else "is cut short or changed"
        raise KeyImportError(
            f"the PEM key cannot be read: its body {what}; copy the key exactly as its file "
            "holds it"
        )
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n"


def _load_any(text: str) -> tuple[object, str | None]:
    if "PRIVATE KEY" in text or text.startswith("PuTTY-User-Key-File"):
        raise KeyImportError(
            "this is a private key; paste only the public key. The private key stays "
            "on your server and was not stored here."
        )
    if text.startswith("{"):
        return _load_jwk(text)
    if "-----BEGIN" in text:
        pem = _canonical_pem(text).encode()
        if b"BEGIN CERTIFICATE" in pem:
            return _parsed(lambda: x509.load_pem_x509_certificate(pem).public_key(), "certificate")
        return _parsed(lambda: serialization.load_pem_public_key(pem), "PEM public key")
    if text.startswith(("ssh-", "ecdsa-")):
        return _parsed(lambda: serialization.load_ssh_public_key(text.encode()), "ssh key line")
    raise KeyImportError(
        "unrecognised key format; paste a PEM public key, an X.509 certificate, "
        "an 'ssh-rsa' line or an RSA JWK"
    )


def _parsed(load: Callable[[], object], what: str) -> tuple[object, None]:
    """``load()``, with the library's refusal said in our words (never its own text)."""
    try:
        return load(), None
    except UnsupportedAlgorithm as exc:
        raise KeyImportError(f"this {what} holds a key type that is not supported") from exc
    except (ValueError, TypeError, IndexError) as exc:
        raise KeyImportError(
            f"the {what} could not be read: its data is damaged or incomplete; copy it "
            "again, whole and unchanged"
        ) from exc


def parse_public_key(text: str | bytes) -> PublicKeyInfo:
    """Check a pasted public key and return it in canonical form.

    Refuses private keys (without keeping them), non-RSA keys and keys shorter
    than 2048 bits, each with a message saying why.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise KeyImportError("the key must be text (PEM, ssh-rsa line or JWK)") from exc
    text = text.strip()
    if not text:
        raise KeyImportError("no key was given")
    if len(text) > MAX_KEY_TEXT:
        raise KeyImportError("the key text is too large to be a public key")
    key, jwk_kid = _load_any(_unwrap(text))
    if not isinstance(key, rsa.RSAPublicKey):
        kind = type(key).__name__.lstrip("_").replace("PublicKey", "") or "unknown"
        raise KeyImportError(f"only RSA keys are accepted (RS256); this is a {kind} key")
    if key.key_size < MIN_RSA_BITS:
        raise KeyImportError(
            f"this RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are required"
        )
    return PublicKeyInfo(
        key=key, pem=_pem_of(key), bits=key.key_size, thumbprint=thumbprint(key), jwk_kid=jwk_kid
    )


def generate_service_keypair() -> tuple[str, PublicKeyInfo]:
    """A new RSA key pair for JWE: (private PKCS#8 PEM, public key info)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=SERVICE_KEY_BITS)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = private.public_key()
    info = PublicKeyInfo(
        key=public, pem=_pem_of(public), bits=public.key_size, thumbprint=thumbprint(public)
    )
    return private_pem, info


# -- site signing key pairs (SPEC §13) ------------------------------------------

#: The algorithms the site signs with, and the size of its RSA signing keys.
SIGNING_ALGORITHMS = ("RS256", "ES256")
SIGNING_KEY_BITS = 2048


@dataclass(frozen=True)
class SigningKeyInfo:
    """The public half of a new signing key pair, ready to store."""

    pem: str
    bits: int | None
    thumbprint: str


def generate_signing_keypair(alg: str) -> tuple[str, SigningKeyInfo]:
    """A new key pair for ``alg`` (RS256: RSA 2048; ES256: P-256): (private PKCS#8 PEM, info)."""
    if alg not in SIGNING_ALGORITHMS:
        raise ChatSecurityError(f"alg must be one of {', '.join(SIGNING_ALGORITHMS)}")
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=SIGNING_KEY_BITS)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    bits = SIGNING_KEY_BITS if alg == "RS256" else None
    return private_pem, SigningKeyInfo(
        pem=public_pem, bits=bits, thumbprint=_jwk_of(public_pem).thumbprint()
    )


def _jwk_of(public_pem: str) -> RSAKey | ECKey:
    key = serialization.load_pem_public_key(public_pem.encode())
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ECKey.import_key(key)
    return RSAKey.import_key(public_pem)


def signing_jwk(public_pem: str, kid: str, alg: str) -> dict[str, str | list[str]]:
    """The public JWK of a signing key, with kid/alg/use for a JWKS document."""
    jwk = _jwk_of(public_pem).as_dict(private=False)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def load_verify_pem(pem: str, alg: str) -> Any:
    """The public key that verifies ``alg`` signatures (an RS256 or ES256 key)."""
    key = serialization.load_pem_public_key(pem.encode())
    if alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
        return key
    if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
        return key
    raise KeyImportError(f"stored key does not fit {alg}")


def clear_caches() -> None:
    _fernet.cache_clear()


register_cache(clear_caches)  # the Fernet keys derive from ENCRYPTION_KEYS / SECRET_KEY
