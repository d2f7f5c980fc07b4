"""Hostile inputs: the engine only ever raises TokenError with a §4 code.

A bounded, seeded set (reproducible, a few seconds): random bytes, huge and
odd strings, deep JSON, mutations of a valid token, and random claims signed
with the real secret so they reach every later step.
"""

from __future__ import annotations

import json
import random
import string

import pytest

from chat_security import public_keys, tokens
from chat_security.exceptions import ERROR_CODES, KeyImportError, TokenError
from chat_security.models import Key

from ..tokencraft import b64, chat_settings, hs256, public_pem, rs256, rsa_key, segment

pytestmark = pytest.mark.django_db

ODD = [
    "\x00", "\t", "\n", "\r", " ", "\x7f", "\x85", "\u00a0", "\u2028", "\u202e", "\ufeff",
    "\ud800", "\udfff", "é", "用", "🙂", "=", "+", "/", ".", "-", "_", "%", "\\", '"', "{", "[",
]  # fmt: skip
ALPHABET = string.ascii_letters + string.digits + "-_"


def outcome(token) -> str:
    """'ok' or the §4 code; anything else fails the test."""
    try:
        tokens.verify(token)
    except TokenError as exc:
        assert exc.code in ERROR_CODES
        assert exc.detail and "\n" not in exc.detail
        return exc.code
    return "ok"


@pytest.fixture
def store(clock):
    key, secret = Key.objects.generate_secret()
    Key.objects.add_public_key(public_pem(rsa_key(1)))
    Key.objects.generate_service_keypair()
    return key, secret


def test_random_bytes_and_strings(store):
    rng = random.Random(1)
    for _ in range(400):
        n = rng.choice([0, 1, 2, 3, 10, 100, 1000, 9000])
        outcome(rng.randbytes(n))
        outcome("".join(rng.choice(ODD + list(ALPHABET)) for _ in range(n)))
        outcome(".".join("".join(rng.choices(ALPHABET, k=rng.randint(0, 40))) for _ in range(3)))


@pytest.mark.parametrize(
    "token",
    [
        "." * 10_000,
        "a." * 5_000,
        "A" * 8192,
        "A" * 8193,
        "A" * 1_000_000,
        "é" * 1_000_000,
        "\ud800" * 100,
        "\x00" * 100,
        "Bearer x.y.z",
        "eyJ.eyJ.",
        "e30.e30.",
        "e30.e30.e30",
        "bnVsbA.bnVsbA.",
    ],
    ids=lambda t: repr(t)[:30],
)
def test_huge_and_odd_strings(store, token):
    assert outcome(token) != "ok"


def test_random_base64_segments(store):
    rng = random.Random(2)
    for _ in range(400):
        parts = [b64(rng.randbytes(rng.randint(0, 60))) for _ in range(3)]
        assert outcome(".".join(parts)) != "ok"


def mutate(token: str, rng: random.Random) -> str:
    """One to four random substitutions, deletions or insertions."""
    chars = list(token)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(chars))
        action = rng.random()
        if action < 0.4:
            chars[i] = rng.choice(ODD + list(ALPHABET))
        elif action < 0.7:
            del chars[i]
        else:
            chars.insert(i, rng.choice(ODD + list(ALPHABET)))
    return "".join(chars)


# Canonical base64url maps each byte string to exactly one text, and the three
# parts are fixed by the dots: a token whose text differs from a valid token's
# differs in the signed bytes or in the signature, so no mutation may pass. The
# only exception is a mutation that gives back the very same text (a character
# deleted and the same one put back); those are skipped and counted.


def test_mutations_of_a_valid_token_are_refused(store):
    rng = random.Random(3)
    token = tokens.issue("user-1", {"email": "a@example.com"})
    assert outcome(token) == "ok"
    refused, unchanged = 0, 0
    for _ in range(600):
        mutated = mutate(token, rng)
        if mutated == token:
            unchanged += 1
            continue
        assert outcome(mutated) != "ok", f"mutated token accepted: {mutated!r}"
        refused += 1
    assert refused + unchanged == 600 and unchanged < 30


def test_every_single_character_substitution_is_refused(store):
    """Includes the last character of each part, whose spare bits a lenient decoder ignores."""
    token = tokens.issue("user-1", {"email": "a@example.com"})
    assert outcome(token) == "ok"
    refused = 0
    for i, original in enumerate(token):
        for replacement in ALPHABET + ".=+/ ":
            if replacement != original:
                mutated = token[:i] + replacement + token[i + 1 :]
                assert outcome(mutated) != "ok", f"position {i}: {original!r} -> {replacement!r}"
                refused += 1
    assert refused == len(token) * (len(ALPHABET) + 5) - len(token)


@pytest.mark.urls("tests.chat_urls")
def test_mutated_tokens_get_401_from_the_middleware(store, client):
    rng = random.Random(9)
    token = tokens.issue("user-1", {"email": "a@example.com"})
    assert client.get("/chat/api/whoami", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    refused, equivalent = 0, 0
    for _ in range(300):
        mutated = mutate(token, rng)
        # Spaces and tabs around the credentials are the header's optional whitespace.
        if mutated.strip(" \t") == token:
            equivalent += 1
            continue
        response = client.get("/chat/api/whoami", HTTP_AUTHORIZATION=f"Bearer {mutated}")
        assert response.status_code == 401, f"{response.status_code} for {mutated!r}"
        assert response.json()["error"] in ERROR_CODES
        refused += 1
    assert refused + equivalent == 300 and equivalent < 15


def _random_json(rng: random.Random, depth: int = 0):
    pick = rng.random()
    if depth > 4 or pick < 0.4:
        return rng.choice(
            [None, True, False, 0, -1, 1e308, 2**70, 1.5, "", "x", "\u2028", "\ud800",
             "a" * 300, "user-1", -0.0]
        )  # fmt: skip
    if pick < 0.7:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {
        rng.choice(["sub", "userId", "exp", "iat", "nbf", "aud", "iss", "x", "user_payload"]):
        _random_json(rng, depth + 1)
        for _ in range(rng.randint(0, 4))
    }  # fmt: skip


def test_random_claims_signed_with_the_real_secret(store, clock):
    """Signed payloads reach claim checks, revocation and payload decryption."""
    _key, secret = store
    rng = random.Random(4)
    t = int(clock.t)
    for _ in range(500):
        claims = {"sub": "user-1", "exp": t + 60}
        extra = _random_json(rng)
        if isinstance(extra, dict):
            claims.update(extra)
        for payload in (claims, extra):
            try:
                text = json.dumps(payload, allow_nan=True)
            except ValueError:
                continue
            outcome(hs256(secret, text))


def test_random_headers(store, clock):
    _key, secret = store
    rng = random.Random(5)
    claims = {"sub": "user-1", "exp": int(clock.t) + 60}
    for _ in range(300):
        header = {"alg": rng.choice(["HS256", "RS256", "none", "", None, 1, ["HS256"]])}
        for name in ("kid", "typ", "cty", "jku", "jwk", "x5c", "crit", "b64", "zip"):
            if rng.random() < 0.3:
                header[name] = _random_json(rng)
        outcome(hs256(secret, claims, header))
        outcome(rs256(rsa_key(1), claims, header))


def test_deep_nesting_everywhere(store, clock):
    _key, secret = store
    with chat_settings({"MAX_TOKEN_BYTES": 1 << 20}):
        for depth in (33, 1000, 100_000):
            deep = "[" * depth + "]" * depth
            assert outcome(hs256(secret, '{"sub":"u","exp":1,"d":' + deep + "}")) == "malformed"
            header = '{"alg":"HS256","d":' + deep + "}"
            assert outcome(f"{segment(header)}.{segment({'sub': 'u'})}.") == "malformed"


def test_hostile_user_payloads(store, clock):
    _key, secret = store
    rng = random.Random(6)
    t = int(clock.t)
    samples = ["", ".", "....", "a.b.c.d.e", "e30.e30.e30.e30.e30", "W10.a.b.c.d", "é" * 50]
    samples += [
        ".".join(b64(rng.randbytes(rng.randint(0, 300))) for _ in range(5)) for _ in range(100)
    ]
    for value in samples:
        token = hs256(secret, {"sub": "u", "exp": t + 60, "user_payload": value})
        assert outcome(token) == "payload_decryption_failed"


def test_key_import_only_raises_key_import_error():
    rng = random.Random(7)
    prefixes = ["", "ssh-rsa ", "ssh-ed25519 ", "ecdsa-sha2-nistp256 ", "{", '{"keys":',
                "-----BEGIN PUBLIC KEY-----\n", "-----BEGIN CERTIFICATE-----\n",
                "-----BEGIN RSA PUBLIC KEY-----\n"]  # fmt: skip
    for _ in range(400):
        body = "".join(
            rng.choice(ODD + list(ALPHABET) + ["\n"]) for _ in range(rng.randint(0, 400))
        )
        for text in (rng.choice(prefixes) + body, rng.randbytes(rng.randint(0, 200))):
            with pytest.raises(KeyImportError):
                public_keys.parse_public_key(text)
    for junk in ({"kty": "RSA", "n": [], "e": {}}, {"kty": "RSA", "n": "", "e": ""}, {"keys": {}}):
        with pytest.raises(KeyImportError):
            public_keys.parse_public_key(json.dumps(junk))


def test_random_rs256_signatures(store, clock):
    rng = random.Random(8)
    claims = {"sub": "user-1", "exp": int(clock.t) + 60}
    signing_input = f"{segment({'alg': 'RS256'})}.{segment(claims)}"
    for n in (0, 1, 2, 255, 256, 257, 512, 4000):
        for _ in range(5):
            assert outcome(f"{signing_input}.{b64(rng.randbytes(n))}") == "invalid_signature"
