"""Hypothesis strategies for the fuzz suite: hostile input, and real tokens taken apart.

``mutated(kit)`` starts from a valid token and applies one to three mutations:
character edits, bit flips in the decoded bytes, segment swaps, re-encodings
(padding, the standard alphabet, spare bits, reformatted JSON, escapes),
header tweaks (``alg``, ``kid``, ``jku``/``jwk``/``crit``…) and claim tweaks,
either keeping the original signature or re-signed with a key that must not
verify (a random or retired secret, the public key's PEM / PKCS#1 / DER /
OpenSSH forms as an HMAC secret, the revoked RSA key, also offered in a
``jwk`` header), claims signed with a leaked old key (``old_key``),
truncation, whitespace and look-alike Unicode. None of them can produce a
valid *different* token without a usable key, which they never sign with: the
suite asserts that whatever differs from the original is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import strategies as st

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: characters that lenient decoders, HTTP stacks or copy-paste treat specially
ODD = (
    "\x00", "\t", "\n", "\r", " ", "\x0b", "\x7f", "\x85", "\u00a0", "\u1680", "\u2028",
    "\u2029", "\u200b", "\u202e", "\ufeff", "\ud800", "\udfff", "é", "用", "🙂", "=", "+", "/",
    ".", "%", "\\", '"', "'", ",", ";", "{", "[", "ｅ", "．", "。", "\u2024",
)  # fmt: skip
#: look-alikes of the dot that separates the segments
DOTS = ("．", "。", "\u2024", "\uff0e", "%2E", "..", " . ")
WRAPPERS = (" ", "\t", "\n", "\r\n", "\u00a0", "\u200b", "\ufeff", "\u2028", "\x00", '"', "'")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(segment: str) -> bytes | None:
    """Lenient decoding, so that a mutation can work on what an attacker would see."""
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None


def json_part(segment: str) -> dict[str, Any] | None:
    raw = unb64(segment)
    try:
        value = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def compact(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))


@dataclass(frozen=True)
class Kit:
    """What the mutations start from and may sign with."""

    originals: dict[str, str]  # name -> a token the store accepts
    wrong_hmac_keys: tuple[bytes, ...]  # must never verify an HS256 token here
    retired_secret: tuple[str, bytes]  # (kid, value) of a secret retired by rotation
    revoked_rsa: tuple[str, rsa.RSAPrivateKey]  # (kid, key) whose public half was revoked
    kids: tuple[str, ...]  # every kid in the store: all kinds, all states

    @property
    def wrong_rsa(self) -> rsa.RSAPrivateKey:
        return self.revoked_rsa[1]

    @property
    def attacker_jwk(self) -> dict[str, str]:
        numbers = self.wrong_rsa.public_key().public_numbers()

        def b64int(n: int) -> str:
            return b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))

        return {"kty": "RSA", "n": b64int(numbers.n), "e": b64int(numbers.e)}


def hmac_keys_for(public_pem: str) -> tuple[bytes, ...]:
    """The public key in every form an HS256/RS256 confusion attack would use as a secret."""
    key = serialization.load_pem_public_key(public_pem.encode())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pkcs1 = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    ssh = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return (public_pem.encode(), public_pem.strip().encode(), der, pkcs1, ssh)


# -- signing with the wrong key ---------------------------------------------------------


Draw = Callable[[st.SearchStrategy[Any]], Any]


def hs256_signature(key: bytes, signing_input: str) -> str:
    return b64(
        hmac.new(key, signing_input.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    )


def rs256_signature(key: rsa.RSAPrivateKey, signing_input: str) -> str:
    return b64(
        key.sign(
            signing_input.encode("utf-8", "surrogatepass"), padding.PKCS1v15(), hashes.SHA256()
        )
    )


def _signature(draw: Draw, signing_input: str, original_sig: str, kit: Kit) -> str:
    how = draw(st.sampled_from(["keep", "keep", "empty", "wrong_hmac", "wrong_rsa", "random"]))
    if how == "keep":
        return original_sig
    if how == "empty":
        return ""
    if how == "random":
        return b64(draw(st.binary(min_size=1, max_size=300)))
    if how == "wrong_hmac":
        return hs256_signature(draw(st.sampled_from(kit.wrong_hmac_keys)), signing_input)
    return rs256_signature(kit.wrong_rsa, signing_input)


def _resign(draw: Draw, header: str, payload: str, original_sig: str, kit: Kit) -> str:
    return f"{header}.{payload}.{_signature(draw, f'{header}.{payload}', original_sig, kit)}"


# -- the mutations (each: draw, token, kit -> token) --------------------------------------

CHARS = st.one_of(
    st.sampled_from(B64URL + ".=+/"), st.sampled_from(ODD), st.characters(exclude_categories=())
)


def char_edits(draw: Draw, token: str, kit: Kit) -> str:
    chars = list(token)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(chars)))
        action = draw(st.sampled_from(["substitute", "insert", "delete"]))
        if action == "insert" or not chars or at == len(chars):
            chars.insert(at, draw(CHARS))
        elif action == "substitute":
            chars[at] = draw(CHARS)
        else:
            del chars[at]
    return "".join(chars)


def flip_bits(draw: Draw, token: str, kit: Kit) -> str:
    parts = token.split(".")
    index = draw(st.integers(0, len(parts) - 1))
    raw = unb64(parts[index])
    if not raw:
        return token
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        bit = draw(st.integers(0, len(data) * 8 - 1))
        data[bit // 8] ^= 1 << (bit % 8)
    parts[index] = b64(bytes(data))
    return ".".join(parts)


def rearrange(draw: Draw, token: str, kit: Kit) -> str:
    parts = token.split(".")
    how = draw(st.sampled_from(["permute", "drop", "duplicate", "append", "other_token"]))
    if how == "permute":
        parts = draw(st.permutations(parts))
    elif how == "drop" and len(parts) > 1:
        del parts[draw(st.integers(0, len(parts) - 1))]
    elif how == "duplicate":
        parts.insert(draw(st.integers(0, len(parts))), draw(st.sampled_from(parts)))
    elif how == "append":
        parts.append(b64(draw(st.binary(max_size=40))))
    else:  # splice in a segment of another valid token: header, payload or signature
        other = kit.originals[draw(st.sampled_from(sorted(kit.originals)))].split(".")
        index = draw(st.integers(0, min(len(parts), len(other)) - 1))
        parts[index] = other[index]
    return ".".join(parts)


def _reformat_json(draw: Draw, segment: str) -> str:
    value = json_part(segment)
    if value is None:
        return segment
    how = draw(st.sampled_from(["spaces", "sorted", "reversed", "escape", "bom", "raw_unicode"]))
    if how == "spaces":
        text = json.dumps(value, indent=draw(st.sampled_from([None, 0, 1, "\t"])))
    elif how == "sorted":
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    elif how == "reversed":
        text = json.dumps(dict(reversed(value.items())), separators=(",", ":"))
    elif how == "escape":  # same value, other bytes: one character as a \u escape
        text = json.dumps(value, separators=(",", ":"))
        letters = [i for i, c in enumerate(text) if c.isalpha()]
        if letters:
            at = draw(st.sampled_from(letters))
            text = f"{text[:at]}\\u{ord(text[at]):04x}{text[at + 1 :]}"
    elif how == "bom":
        text = "\ufeff" + json.dumps(value, separators=(",", ":"))
    else:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return b64(text.encode("utf-8"))


def _spare_bits(draw: Draw, parts: list[str]) -> list[str]:
    """The classic malleability: a last character whose unused bits are not zero
    decodes, leniently, to the very same bytes."""
    eligible = [i for i, p in enumerate(parts) if len(p) % 4 in (2, 3) and p[-1:] in B64URL]
    if not eligible:
        return parts
    index = draw(st.sampled_from(eligible))
    segment = parts[index]
    unused = 0b1111 if len(segment) % 4 == 2 else 0b11
    value = B64URL.index(segment[-1])
    options = [B64URL[value ^ bits] for bits in range(1, unused + 1)]
    return [*parts[:index], segment[:-1] + draw(st.sampled_from(options)), *parts[index + 1 :]]


def reencode(draw: Draw, token: str, kit: Kit) -> str:
    parts = token.split(".")
    index = draw(st.integers(0, len(parts) - 1))
    segment = parts[index]
    how = draw(
        st.sampled_from(
            ["spare_bits", "spare_bits", "pad", "standard", "json", "percent", "case", "whole"]
        )
    )
    if how == "whole":  # the token base64-encoded once more
        return b64(token.encode("utf-8", "surrogatepass"))
    if how == "spare_bits":
        parts = _spare_bits(draw, parts)
    elif how == "pad":
        parts[index] = segment + "=" * draw(st.integers(1, 3))
    elif how == "standard":
        parts[index] = segment.replace("-", "+").replace("_", "/")
    elif how == "json" and index < 2:
        parts[index] = _reformat_json(draw, segment)
    elif how == "percent" and segment:
        at = draw(st.integers(0, len(segment) - 1))
        parts[index] = f"{segment[:at]}%{ord(segment[at]) & 0xFF:02X}{segment[at + 1 :]}"
    elif how == "case" and segment:
        start = draw(st.integers(0, len(segment) - 1))
        end = draw(st.integers(start + 1, len(segment)))
        parts[index] = segment[:start] + segment[start:end].swapcase() + segment[end:]
    return ".".join(parts)


ALGS = (
    "none", "None", "NONE", "nOnE", "", "HS256", "RS256", "HS384", "HS512", "RS384", "RS512",
    "PS256", "ES256", "EdDSA", "hs256", "HS256 ", " RS256", "HS256\x00", "dir", "RSA-OAEP-256",
)  # fmt: skip
HEADER_EXTRAS = {
    "jku": "https://attacker.example/jwks.json",
    "x5u": "https://attacker.example/cert.pem",
    "x5c": ["MIIB"],
    "crit": ["exp"],
    "b64": False,
    "zip": "DEF",
    "typ": "JWE",
    "cty": "JWT",
    "enc": "A256GCM",
}


def tweak_header(draw: Draw, token: str, kit: Kit) -> str:
    parts = token.split(".")
    header = json_part(parts[0]) if len(parts) == 3 else None
    if header is None:
        return token
    header = dict(header)
    alg_change = draw(st.sampled_from(["keep", "keep", "swap", "odd"]))
    if alg_change == "swap":  # the other key kind's algorithm: HS256 <-> RS256 confusion
        header["alg"] = "RS256" if header.get("alg") == "HS256" else "HS256"
    elif alg_change == "odd":
        header["alg"] = draw(
            st.one_of(st.sampled_from(ALGS), st.sampled_from([None, 0, ["HS256"]]))
        )
    kid_change = draw(st.sampled_from(["keep", "other", "other", "odd", "remove"]))
    if kid_change == "other":
        header["kid"] = draw(st.sampled_from(kit.kids))
    elif kid_change == "odd":
        kid = str(header.get("kid") or draw(st.sampled_from(kit.kids)))
        header["kid"] = draw(
            st.sampled_from(["", "unknown", f" {kid}", f"{kid} ", kid.upper(), kid + "\x00",
                             "../" + kid, 7, None, [kid]])
        )  # fmt: skip
    elif kid_change == "remove":
        header.pop("kid", None)
    for name in draw(st.sets(st.sampled_from([*HEADER_EXTRAS, "jwk"]), max_size=3)):
        header[name] = kit.attacker_jwk if name == "jwk" else HEADER_EXTRAS[name]
    return _resign(draw, compact(header), parts[1], parts[2], kit)


CLAIM_VALUES = st.one_of(
    st.sampled_from(["admin", "user-2", "", " user-1", "user-1 ", "user-1\n", "USER-1"]),
    st.sampled_from([None, True, 0, -1, 1e308, 2**64, "1800000000", ["user-1"], {}]),
    st.integers(1_700_000_000, 1_900_000_000),
)
CLAIM_NAMES = ("sub", "userId", "exp", "iat", "nbf", "aud", "iss", "user_payload", "role")


def tweak_claims(draw: Draw, token: str, kit: Kit) -> str:
    parts = token.split(".")
    claims = json_part(parts[1]) if len(parts) == 3 else None
    if claims is None:
        return token
    claims = dict(claims)
    for name in draw(st.sets(st.sampled_from(CLAIM_NAMES), min_size=1, max_size=3)):
        if draw(st.integers(0, 4)) == 0:
            claims.pop(name, None)
        elif name == "exp" and isinstance(claims.get("exp"), int):
            claims["exp"] += draw(st.sampled_from([1, 3600, 86400 * 365, -7200]))
        else:
            claims[name] = draw(CLAIM_VALUES)
    return _resign(draw, parts[0], compact(claims), parts[2], kit)


def old_key(draw: Draw, token: str, kit: Kit) -> str:
    """A leaked retired secret or revoked private key signs (possibly changed) claims,
    naming that key, the active one, or none."""
    parts = token.split(".")
    header = json_part(parts[0]) if len(parts) == 3 else None
    if header is None:
        return token
    rsa_side = draw(st.booleans())
    own_kid = kit.revoked_rsa[0] if rsa_side else kit.retired_secret[0]
    header = {**header, "alg": "RS256" if rsa_side else "HS256"}
    kid = draw(st.sampled_from([own_kid, own_kid, None, *kit.kids]))
    if kid is None:
        header.pop("kid", None)
    else:
        header["kid"] = kid
    payload = parts[1]
    if draw(st.booleans()):
        payload = tweak_claims(draw, f"{parts[0]}.{payload}.", kit).split(".")[1]
    signing_input = f"{compact(header)}.{payload}"
    if rsa_side:
        return f"{signing_input}.{rs256_signature(kit.revoked_rsa[1], signing_input)}"
    return f"{signing_input}.{hs256_signature(kit.retired_secret[1], signing_input)}"


def truncate(draw: Draw, token: str, kit: Kit) -> str:
    how = draw(st.sampled_from(["prefix", "suffix", "signature"]))
    if how == "signature":
        return token.rsplit(".", 1)[0] + "." if "." in token else token[:-1]
    cut = draw(st.integers(0, max(len(token) - 1, 0)))
    return token[:cut] if how == "prefix" else token[cut + 1 :]


def wrap(draw: Draw, token: str, kit: Kit) -> str:
    how = draw(st.sampled_from(["around", "inside", "dots"]))
    if how == "around":
        before = draw(st.sampled_from(("", *WRAPPERS)))
        after = draw(st.sampled_from(WRAPPERS if not before else ("", *WRAPPERS)))
        return before + token + after
    if how == "inside" and token:
        at = draw(st.integers(0, len(token)))
        return token[:at] + draw(st.sampled_from(WRAPPERS + ("\r\n ", "\u3000"))) + token[at:]
    dot = draw(st.sampled_from(DOTS))
    return token.replace(".", dot, draw(st.integers(1, 2)))


MUTATIONS = {
    "char_edits": char_edits,
    "flip_bits": flip_bits,
    "rearrange": rearrange,
    "reencode": reencode,
    "tweak_header": tweak_header,
    "tweak_claims": tweak_claims,
    "old_key": old_key,
    "truncate": truncate,
    "wrap": wrap,
}


#: Mutations that keep the token well-formed weigh more: they reach the key and
#: signature checks, where a lenient verifier would accept what it should not.
STEP = st.sampled_from(
    [*sorted(MUTATIONS), *["tweak_header", "tweak_claims", "old_key", "flip_bits"] * 2]
)


@dataclass(frozen=True)
class Mutant:
    original: str
    token: str
    steps: tuple[str, ...]
    #: every token of the kit: two splices of one other token's parts give back
    #: that token, which is genuine, not a forgery
    genuine: frozenset[str]

    @property
    def unchanged(self) -> bool:
        return self.token in self.genuine

    def is_genuine(self, value: str | bytes) -> bool:
        """The very same token as one of the kit's, as text or as its ASCII bytes."""
        if isinstance(value, bytes):
            return any(value == g.encode("ascii") for g in self.genuine)
        return value in self.genuine


@st.composite
def mutated(draw: Draw, kit: Kit, only: tuple[str, ...] = ()) -> Mutant:
    """One of the kit's valid tokens after one to three mutations (of the ``only`` kinds)."""
    original = kit.originals[draw(st.sampled_from(sorted(kit.originals)))]
    step = st.sampled_from(only) if only else STEP
    steps = draw(st.one_of(st.tuples(step), st.lists(step, min_size=2, max_size=3)))
    token = original
    for step in steps:
        token = MUTATIONS[step](draw, token, kit)
    return Mutant(original, token, tuple(steps), frozenset(kit.originals.values()))


# -- hostile input that never was a token ----------------------------------------------


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(st.text(max_size=10), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def _segment(draw: Draw) -> str:
    how = draw(st.sampled_from(["b64_binary", "b64_json", "b64_text", "alphabet"]))
    if how == "b64_binary":
        return b64(draw(st.binary(max_size=80)))
    if how == "b64_json":
        return b64(json.dumps(draw(json_values())).encode())
    if how == "b64_text":
        return b64(draw(st.text(max_size=60)).encode("utf-8", "surrogatepass"))
    return draw(st.text(alphabet=B64URL, max_size=60))


@st.composite
def tokenish(draw: Draw) -> str:
    """Text shaped like a compact JWS (two to four segments), contents anything."""
    count = draw(st.integers(2, 4))
    return ".".join(_segment(draw) for _ in range(count))


#: Arbitrary input for any entry point that takes a token as text.
any_text = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=200),
    st.text(alphabet=B64URL + ".=+/ ", max_size=200),
    tokenish(),
)
#: The same without lone surrogates: what an HTTP form or header can carry.
form_text = st.one_of(
    st.text(max_size=200), st.text(alphabet=B64URL + ".=+/ ", max_size=200), tokenish()
)
