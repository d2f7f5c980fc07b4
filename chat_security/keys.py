"""Key material the site makes and keeps: generation, fingerprints, kids, encryption at rest.

Nothing here touches the database; ``models`` stores what these functions
return. Signing secrets, service key pairs (JWE) and site signing key pairs
are generated here, and every private key or secret is encrypted at rest
under keys that live in settings. Public keys given to the site (pasted,
uploaded or fetched) are read and checked in ``public_keys``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings as django_settings
from joserfc.jwk import ECKey, OKPKey, RSAKey

from .conf import app_settings, register_cache
from .exceptions import ChatSecurityError
from .public_keys import PublicKeyInfo, jwk_of_key, load_public_pem, pem_of, thumbprint

SERVICE_KEY_BITS = 2048
_HKDF_INFO = b"chat_security key store encryption v1"
MIN_ENCRYPTION_KEY = 32


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


# -- service key pairs (JWE, RSA-OAEP-256) ------------------------------------------


def public_jwk(public_pem: str, kid: str) -> dict[str, str | list[str]]:
    """The public JWK of an RSA key, with kid/alg/use for a JWKS document."""
    jwk = RSAKey.import_key(public_pem).as_dict(private=False)
    return {**jwk, "kid": kid, "alg": "RSA-OAEP-256", "use": "enc"}


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
        key=public, pem=pem_of(public), bits=public.key_size, thumbprint=thumbprint(public),
        alg="RSA-OAEP-256", kty="RSA",
    )  # fmt: skip
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


def _jwk_of(public_pem: str) -> RSAKey | ECKey | OKPKey:
    return jwk_of_key(load_public_pem(public_pem))


def signing_jwk(public_pem: str, kid: str, alg: str) -> dict[str, str | list[str]]:
    """The public JWK of a signing key, with kid/alg/use for a JWKS document."""
    jwk = _jwk_of(public_pem).as_dict(private=False)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def clear_caches() -> None:
    _fernet.cache_clear()


register_cache(clear_caches)  # the Fernet keys derive from ENCRYPTION_KEYS / SECRET_KEY
