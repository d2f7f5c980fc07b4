"""Public keys given to the site: what is accepted, and reading it.

A public key arrives pasted or uploaded in the panel or the CLI (PEM, an
X.509 certificate, an OpenSSH line, a JWK or a JWKS of one key) or as an
entry of an identity provider's fetched JWKS. Its type pins the one
algorithm it verifies: RSA of at least 2048 bits (RS256), EC P-256 (ES256),
Ed25519 (EdDSA); anything else is refused with a message saying why, and a
private key is refused without being kept. Parsing is done by
``cryptography``/``joserfc``; this module only decides what is acceptable.
The key material the site makes and keeps itself is in ``keys``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from joserfc.jwk import ECKey, OKPKey, RSAKey

from .exceptions import KeyImportError

MIN_RSA_BITS = 2048
MAX_KEY_TEXT = 64 * 1024
#: RFC 7518 §6.3.2: any of these makes a JWK (part of) a private key.
_PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")

#: What a pasted or fetched public key may be; each type verifies one algorithm.
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
#: The JWK key type (RFC 7518 §6.1, RFC 8037 §2) -> the one algorithm its keys verify.
ALGORITHM_OF_KTY = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}
#: The ``bits`` of EC P-256 and Ed25519 keys: the one size each of them has.
CURVE_KEY_BITS = 256
_ACCEPTED = "RSA of at least 2048 bits (RS256), EC P-256 (ES256) or Ed25519 (EdDSA)"
_TYPE_NAMES = {"RSA": "an RSA", "EC": "an EC P-256", "OKP": "an Ed25519"}
#: The members a public JWK of each type is made of (anything else is not read).
_JWK_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}
_JWK_CLASSES: dict[str, type[RSAKey] | type[ECKey] | type[OKPKey]] = {
    "RSA": RSAKey,
    "EC": ECKey,
    "OKP": OKPKey,
}
#: A P-256 coordinate (RFC 7518 §6.2.1.2: its full 32 bytes) in unpadded base64url.
_P256_COORDINATE_CHARS = 43
#: Curve names as JOSE writes them, for a refusal that names the curve.
_CURVE_NAMES = {"secp384r1": "P-384", "secp521r1": "P-521"}
#: Key types ``cryptography`` reads that never verify a token here.
_OTHER_TYPES: tuple[tuple[type, str], ...] = (
    (x25519.X25519PublicKey, "X25519 keys are for key agreement and cannot sign"),
    (x448.X448PublicKey, "X448 keys are for key agreement and cannot sign"),
    (ed448.Ed448PublicKey, "Ed448 keys are not accepted"),
    (dsa.DSAPublicKey, "DSA keys are not accepted"),
)


@dataclass(frozen=True)
class PublicKeyInfo:
    """A checked public key, ready to store. Its type pins the algorithm it verifies.

    ``bits`` is the RSA modulus size, and :data:`CURVE_KEY_BITS` (256) for EC
    P-256 and Ed25519 keys.
    """

    key: PublicKey
    pem: str
    bits: int
    thumbprint: str
    #: "RS256", "ES256" or "EdDSA" (a service key pair's: "RSA-OAEP-256")
    alg: str
    #: the JWK key type: "RSA", "EC" or "OKP"
    kty: str
    jwk_kid: str | None = None


def _checked(key: object) -> tuple[str, str, int]:
    """(kty, alg, bits) of an acceptable public key, or a refusal saying why not."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyImportError(
                f"this RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are required"
            )
        return "RSA", "RS256", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            curve = _CURVE_NAMES.get(key.curve.name, key.curve.name)
            raise KeyImportError(
                f"EC keys must be on the P-256 curve (ES256); this one is on {curve}"
            )
        return "EC", "ES256", CURVE_KEY_BITS
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "OKP", "EdDSA", CURVE_KEY_BITS
    why = next((why for cls, why in _OTHER_TYPES if isinstance(key, cls)), "unknown key type")
    raise KeyImportError(f"{why}; a public key must be {_ACCEPTED}")


def _info(key: object, jwk_kid: str | None = None) -> PublicKeyInfo:
    kty, alg, bits = _checked(key)
    public = cast("PublicKey", key)  # _checked accepted its type
    return PublicKeyInfo(
        key=public, pem=pem_of(public), bits=bits, thumbprint=thumbprint(public), alg=alg,
        kty=kty, jwk_kid=jwk_kid,
    )  # fmt: skip


# -- canonical forms and stored keys ---------------------------------------------


def jwk_of_key(public_key: PublicKey) -> RSAKey | ECKey | OKPKey:
    """The public JWK of an RSA, EC or OKP key (for its thumbprint and JWKS documents)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ECKey.import_key(public_key)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return OKPKey.import_key(public_key)
    return RSAKey.import_key(public_key)


def thumbprint(public_key: PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an RSA, EC or OKP key."""
    return jwk_of_key(public_key).thumbprint()


def load_public_pem(pem: str) -> PublicKey:
    """A stored public key (RSA, EC or Ed25519; only ever stored after checking)."""
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise KeyImportError("stored key is not RSA, EC or Ed25519")
    return key


def pem_of(key: PublicKey) -> str:
    """The canonical form a public key is stored in: PEM SubjectPublicKeyInfo."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_verify_pem(pem: str, alg: str) -> PublicKey:
    """The stored public key that verifies ``alg`` signatures (RS256, ES256 or EdDSA).

    KeyImportError unless the key's type is the one that verifies ``alg``: a
    key is never used with another type's algorithm.
    """
    key = load_public_pem(pem)
    try:
        fits: str | None = _checked(key)[1]
    except KeyImportError:
        fits = None
    if fits != alg:
        raise KeyImportError(f"stored key does not fit {alg}")
    return key


# -- JWK: pasted, or an entry of a fetched JWKS ------------------------------------


def _shown(value: object) -> str:
    """A JWK member's value for a message: short, and never a whole fetched document."""
    return "none" if value is None else repr(value)[:40]


def public_key_from_jwk(data: dict[str, Any]) -> PublicKeyInfo:
    """One public JWK (pasted, or an entry of a fetched JWKS) as a checked key.

    Raises KeyImportError saying why it is refused: it holds a private key
    (never kept), its ``kty`` or ``crv`` is not accepted (named), its ``alg``
    is not the one its type verifies, its ``use`` is not "sig", a member is
    damaged, or its ``kid`` is not 1–255 printable ASCII characters.
    """
    if not isinstance(data, dict):
        raise KeyImportError("a JWK must be a JSON object")
    kty = data.get("kty")
    if kty == "oct":
        raise KeyImportError(
            "this JWK is a shared secret (kty 'oct'), not a public key; HS256 tokens are "
            "verified with a signing secret generated here"
        )
    private = [member for member in _PRIVATE_JWK_MEMBERS if member in data]
    if private:
        raise KeyImportError(
            f"this JWK contains a private key (member {private[0]!r}); give only the public "
            "key. Nothing was stored."
        )
    if not isinstance(kty, str) or kty not in ALGORITHM_OF_KTY:
        what = "has no kty" if kty is None else f"has an unknown key type, kty {_shown(kty)}"
        raise KeyImportError(f"this JWK {what}; accepted: RSA, EC (P-256), OKP (Ed25519)")
    alg = ALGORITHM_OF_KTY[kty]
    _check_jwk_purpose(data, kty, alg)
    members: dict[str, Any] = {name: data[name] for name in _JWK_MEMBERS[kty] if name in data}
    try:
        key = _JWK_CLASSES[kty].import_key({"kty": kty, **members}).public_key
    except Exception as exc:  # joserfc and cryptography raise several types for bad members
        names = " and ".join(name for name in _JWK_MEMBERS[kty] if name != "crv")
        raise KeyImportError(f"this {kty} JWK is invalid (check its {names})") from exc
    if kty == "EC" and any(len(data[c]) != _P256_COORDINATE_CHARS for c in ("x", "y")):
        raise KeyImportError("this EC JWK is invalid: x and y must be 32 bytes each")
    return _info(key, _jwk_kid(data))


def _check_jwk_purpose(data: dict[str, Any], kty: str, alg: str) -> None:
    """The curve, ``alg`` and ``use`` of a JWK: one that verifies tokens of ``alg``."""
    crv = data.get("crv")
    if kty == "EC" and crv != "P-256":
        raise KeyImportError(
            f"EC keys must be on the P-256 curve (ES256); this JWK has crv {_shown(crv)}"
        )
    if kty == "OKP" and crv != "Ed25519":
        raise KeyImportError(f"OKP keys must be Ed25519 (EdDSA); this JWK has crv {_shown(crv)}")
    given = data.get("alg")
    if given is not None and given != alg:
        raise KeyImportError(
            f"this JWK says alg {_shown(given)}, but {_TYPE_NAMES[kty]} key verifies {alg} "
            "only (a key's type sets its algorithm)"
        )
    use = data.get("use")
    if use is not None and use != "sig":
        raise KeyImportError(
            f"this JWK is for use {_shown(use)}; only signature keys (use 'sig') verify tokens"
        )


def _jwk_kid(data: dict[str, Any]) -> str | None:
    kid = data.get("kid")
    if kid is not None and not (
        isinstance(kid, str) and 0 < len(kid) <= 255 and kid.isascii() and kid.isprintable()
    ):
        raise KeyImportError("the JWK's kid must be 1–255 printable ASCII characters")
    return kid


def _load_jwk(text: str) -> PublicKeyInfo:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise KeyImportError("the text looks like JSON but does not parse as JSON") from exc
    if isinstance(data, dict) and isinstance(data.get("keys"), list):
        if len(data["keys"]) != 1:
            raise KeyImportError("a JWKS must hold exactly one key to be imported; paste one JWK")
        data = data["keys"][0]
    return public_key_from_jwk(data)


# -- pasted or uploaded text: PEM, certificate, OpenSSH line, JWK(S) ---------------

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


def _load_any(text: str) -> PublicKeyInfo:
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
    if text.startswith("sk-"):
        # A FIDO key signs authenticator data, never the bare message: no JWS verifies.
        raise KeyImportError(
            "security-key (sk-) SSH keys cannot sign tokens; use an ssh-ed25519, "
            "ecdsa-sha2-nistp256 or ssh-rsa key"
        )
    if text.startswith(("ssh-", "ecdsa-")):
        return _parsed(lambda: serialization.load_ssh_public_key(text.encode()), "ssh key line")
    raise KeyImportError(
        "unrecognised key format; paste a PEM public key, an X.509 certificate, an OpenSSH "
        "line (ssh-rsa, ecdsa-sha2-nistp256, ssh-ed25519) or a JWK"
    )


def _parsed(load: Callable[[], object], what: str) -> PublicKeyInfo:
    """``load()`` checked, with the library's refusal said in our words (never its own text)."""
    try:
        key = load()
    except UnsupportedAlgorithm as exc:
        raise KeyImportError(f"this {what} holds a key type that is not supported") from exc
    except (ValueError, TypeError, IndexError) as exc:
        raise KeyImportError(
            f"the {what} could not be read: its data is damaged or incomplete; copy it "
            "again, whole and unchanged"
        ) from exc
    return _info(key)


def parse_public_key(text: str | bytes) -> PublicKeyInfo:
    """Check a pasted public key and return it in canonical form (PEM SubjectPublicKeyInfo).

    Accepts RSA keys of at least 2048 bits (RS256), EC P-256 keys (ES256) and
    Ed25519 keys (EdDSA), as PEM, an X.509 certificate, an OpenSSH line or a
    JWK (or a JWKS of one key). Refuses private keys (without keeping them),
    other types and curves, smaller RSA keys and a JWK whose ``alg`` its type
    does not verify, each with a message saying why.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise KeyImportError("the key must be text (PEM, OpenSSH line or JWK)") from exc
    text = text.strip()
    if not text:
        raise KeyImportError("no key was given")
    if len(text) > MAX_KEY_TEXT:
        raise KeyImportError("the key text is too large to be a public key")
    return _load_any(_unwrap(text))
