"""The engine (chat_security.tokens): every SPEC §4 code and the §3 strictness rules."""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import math
import socket

import jwt
import pytest
from joserfc import jwe
from joserfc.jwk import RSAKey

from chat_security import tokens, usage
from chat_security.exceptions import (
    ChatSecurityError,
    KeyStateError,
    KeyStoreUnavailable,
    TokenError,
)
from chat_security.models import Key, RevokedUser
from chat_security.verified import MEMORY

from .tokencraft import b64, chat_settings, hs256, hs256_sig, public_pem, rs256, rsa_key, segment

pytestmark = pytest.mark.django_db


def code_of(token, **kwargs) -> str:
    with pytest.raises(TokenError) as info:
        tokens.verify(token, **kwargs)
    return info.value.code


@pytest.fixture
def secret(clock):
    """The active signing secret: (Key, clear secret)."""
    return Key.objects.generate_secret()


@pytest.fixture
def public_key(clock):
    """A registered RS256 public key and its private half."""
    private = rsa_key(1)
    return Key.objects.add_public_key(public_pem(private)), private


def good(clock, **overrides) -> dict:
    claims = {"sub": "user-1", "iat": int(clock.t), "exp": int(clock.t) + 3600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not _DROP}


_DROP = object()


# -- the happy paths -------------------------------------------------------------


def test_issued_token_verifies(secret):
    key, _ = secret
    result = tokens.verify(tokens.issue("user-1"))
    assert result.user_id == "user-1"
    assert result.kid == key.kid
    assert result.header["kid"] == key.kid
    assert result.key_kind == "secret"
    assert result.key_state == "active"
    assert result.private is None


def test_vendor_style_token_without_kid(clock, secret):
    _key, clear = secret
    token = jwt.encode({"userId": "u-1", "exp": clock.t + 3600}, clear, algorithm="HS256")
    assert tokens.verify(token).user_id == "u-1"
    clock.advance(3600 + 31)
    assert code_of(token) == "expired"


def test_rs256_token_with_and_without_kid(clock, public_key):
    key, private = public_key
    for token in (rs256(private, good(clock)), rs256(private, good(clock), kid=key.kid)):
        result = tokens.verify(token)
        assert (result.kid, result.key_kind, result.user_id) == (key.kid, "public_key", "user-1")


def test_bytes_token_is_accepted(clock, secret):
    token = hs256(secret[1], good(clock))
    assert tokens.verify(token.encode("ascii")).user_id == "user-1"


def test_sub_and_equal_user_id_alias(clock, secret):
    assert tokens.verify(hs256(secret[1], good(clock, userId="user-1"))).user_id == "user-1"


# -- missing_token / token_too_large ----------------------------------------------


@pytest.mark.parametrize("token", [None, "", b""])
def test_missing_token(token):
    assert code_of(token) == "missing_token"


def test_token_too_large_is_refused_before_parsing():
    # Garbage would be "malformed" if it were parsed at all.
    assert code_of("!" * 8193) == "token_too_large"
    assert code_of(b"\xff" * 8193) == "token_too_large"


def test_token_too_large_counts_utf8_bytes():
    assert code_of("é" * 3000) == "malformed"  # 6000 bytes: parsed, refused as malformed
    assert code_of("é" * 4097) == "token_too_large"  # 4097 characters but 8194 bytes


def test_token_size_limit_boundary(clock, secret):
    token = hs256(secret[1], good(clock, pad="x" * 300))
    with chat_settings({"MAX_TOKEN_BYTES": len(token)}):
        assert tokens.verify(token).user_id == "user-1"
    with chat_settings({"MAX_TOKEN_BYTES": len(token) - 1}):
        assert code_of(token) == "token_too_large"


# -- malformed ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", ["one", "two.parts", "a.b.c.d", "four.parts.here.x", "..", "a..c", ".b.c"]
)
def test_malformed_segment_count(shape):
    assert code_of(shape) == "malformed"


def test_malformed_four_segments_of_a_valid_token(clock, secret):
    token = hs256(secret[1], good(clock))
    assert tokens.verify(token)
    assert code_of(token + ".AAAA") == "malformed"
    assert code_of(token.rsplit(".", 1)[0]) == "malformed"


def _padded(secret_value: str, claims: dict) -> str:
    """A token whose payload segment carries '=' padding, correctly signed over it."""
    header, payload = segment({"alg": "HS256", "typ": "JWT"}), segment(claims)
    assert len(payload) % 4, "test needs a payload whose length is not a multiple of 4"
    payload += "=" * (-len(payload) % 4)
    signing_input = f"{header}.{payload}"
    return f"{signing_input}.{hs256_sig(secret_value, signing_input)}"


def _unpaddable_claims(clock) -> dict:
    for n in range(1, 5):
        claims = good(clock, x="y" * n)
        if len(segment(claims)) % 4:
            return claims
    raise AssertionError("unreachable")


def test_malformed_padding_even_though_pyjwt_accepts_it(clock, secret):
    token = _padded(secret[1], _unpaddable_claims(clock))
    decoded = jwt.decode(token, secret[1], algorithms=["HS256"], options={"verify_iat": False})
    assert decoded["sub"] == "user-1"
    assert code_of(token) == "malformed"


def test_malformed_padding_on_signature(clock, secret):
    token = hs256(secret[1], good(clock))
    assert len(token.rsplit(".", 1)[1]) % 4 == 3  # 32-byte HMAC -> 43 characters
    assert code_of(token + "=") == "malformed"


def _token_with_signature_char(secret_value: str, clock, char: str) -> str:
    for n in range(500):
        token = hs256(secret_value, good(clock, n=n))
        if char in token.rsplit(".", 1)[1]:
            return token
    raise AssertionError(f"no signature with {char!r} found")


@pytest.mark.parametrize(("url_char", "std_char"), [("-", "+"), ("_", "/")])
def test_malformed_standard_base64_alphabet(clock, secret, url_char, std_char):
    token = _token_with_signature_char(secret[1], clock, url_char)
    assert tokens.verify(token)
    head, sig = token.rsplit(".", 1)
    assert code_of(f"{head}.{sig.replace(url_char, std_char)}") == "malformed"


@pytest.mark.parametrize("where", ["leading", "trailing", "newline", "inner space", "tab"])
def test_malformed_whitespace(clock, secret, where):
    token = hs256(secret[1], good(clock))
    h, p, s = token.split(".")
    bad = {
        "leading": " " + token,
        "trailing": token + " ",
        "newline": token + "\n",
        "inner space": f"{h}. {p}.{s}",
        "tab": f"{h}.{p[:5]}\t{p[5:]}.{s}",
    }[where]
    assert code_of(bad) == "malformed"


def test_malformed_non_canonical_trailing_bits(clock, secret):
    token = hs256(secret[1], good(clock))
    head, sig = token.rsplit(".", 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # 43 characters carry 258 bits for 256: the last character's two low bits are unused.
    twin = alphabet[alphabet.index(sig[-1]) ^ 1]
    forged = f"{head}.{sig[:-1]}{twin}"
    assert forged != token
    # A lenient decoder sees the very same signature bytes in both spellings.
    assert base64.urlsafe_b64decode(sig + "=") == base64.urlsafe_b64decode(forged[-43:] + "=")
    assert code_of(forged) == "malformed"


@pytest.mark.parametrize("part", ["header", "payload"])
def test_malformed_non_utf8(clock, secret, part):
    header = b'{"alg":"HS256","x":"\xff"}' if part == "header" else None
    payload = b'{"sub":"\xc3\x28","exp":1}' if part == "payload" else good(clock)
    assert code_of(hs256(secret[1], payload, header)) == "malformed"


@pytest.mark.parametrize("payload", ["[1,2]", '"user-1"', "42", "null", "true", ""])
def test_malformed_payload_not_a_json_object(secret, payload):
    assert code_of(hs256(secret[1], payload)) == "malformed"


@pytest.mark.parametrize("header", ['["HS256"]', '"HS256"', "{", '{"alg":"HS256"} x'])
def test_malformed_header_not_a_json_object(clock, secret, header):
    assert code_of(hs256(secret[1], good(clock), header)) == "malformed"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_malformed_nan_and_infinity(clock, secret, constant):
    payload = f'{{"sub":"user-1","exp":{constant}}}'
    assert code_of(hs256(secret[1], payload)) == "malformed"
    payload = f'{{"sub":"user-1","exp":{int(clock.t) + 60},"userData":{{"x":{constant}}}}}'
    assert code_of(hs256(secret[1], payload)) == "malformed"


def test_malformed_duplicate_header_member(clock, secret):
    header = '{"alg":"HS256","alg":"HS256","typ":"JWT"}'
    assert code_of(hs256(secret[1], good(clock), header)) == "malformed"


def test_malformed_duplicate_payload_member_even_though_pyjwt_accepts_it(clock, secret):
    exp = int(clock.t) + 3600
    payload = f'{{"sub":"admin","sub":"user-1","exp":{exp}}}'
    token = hs256(secret[1], payload)
    decoded = jwt.decode(token, secret[1], algorithms=["HS256"], options={"verify_exp": False})
    assert decoded["sub"] == "user-1"  # PyJWT silently keeps the last one
    assert code_of(token) == "malformed"
    nested = f'{{"sub":"user-1","exp":{exp},"userData":{{"plan":"a","plan":"b"}}}}'
    assert code_of(hs256(secret[1], nested)) == "malformed"


def test_malformed_nesting_depth_33_but_32_is_fine(clock, secret):
    head = f'{{"sub":"user-1","exp":{int(clock.t) + 3600},"d":'
    deep_32 = head + "[" * 31 + "]" * 31 + "}"
    deep_33 = head + "[" * 32 + "]" * 32 + "}"
    assert tokens.verify(hs256(secret[1], deep_32)).user_id == "user-1"
    assert code_of(hs256(secret[1], deep_33)) == "malformed"
    objects_33 = head + '{"a":' * 32 + "1" + "}" * 32 + "}"
    assert code_of(hs256(secret[1], objects_33)) == "malformed"


def test_malformed_very_deep_nesting_does_not_crash(secret):
    assert code_of(hs256(secret[1], '{"a":' + "[" * 2000 + "]" * 2000 + "}")) == "malformed"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": 256},
        {"alg": None},
        {"alg": ["HS256"]},
        {"alg": "HS256", "kid": 7},
        {"alg": "HS256", "kid": None},
        {"alg": "HS256", "kid": ["a"]},
        {"alg": "HS256", "typ": 1},
        {"alg": "HS256", "typ": {"JWT": True}},
        {"typ": "JWT"},
    ],
    ids=str,
)
def test_malformed_header_member_types(clock, secret, header):
    assert code_of(hs256(secret[1], good(clock), header)) == "malformed"


def test_malformed_crit_header(clock, secret):
    header = {"alg": "HS256", "crit": ["exp"], "exp": 1}
    assert code_of(hs256(secret[1], good(clock), header)) == "malformed"
    assert code_of(hs256(secret[1], good(clock), {"alg": "HS256", "crit": []})) == "malformed"


def test_malformed_non_string_input():
    assert code_of(12345) == "malformed"


# -- algorithm_not_allowed --------------------------------------------------------


def test_algorithm_none_is_refused(clock, secret):
    token = f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(good(clock))}."
    assert code_of(token) == "algorithm_not_allowed"
    for spelling in ("None", "NONE", "nOnE", ""):
        variant = f"{segment({'alg': spelling})}.{segment(good(clock))}."
        assert code_of(variant) == "algorithm_not_allowed"


def test_algorithm_none_with_empty_signature_is_refused_before_the_signature(clock, secret):
    token = f"{segment({'alg': 'none'})}.{segment(good(clock))}."
    with pytest.raises(TokenError) as info:
        tokens.verify(token)
    assert info.value.code == "algorithm_not_allowed"


@pytest.mark.parametrize(
    "alg", ["HS512", "HS384", "hs256", "RS512", "PS256", "ES384", "Ed25519", "eddsa", "Ed448"]
)
def test_other_algorithms_are_refused(clock, secret, alg):
    signing_input = f"{segment({'alg': alg, 'typ': 'JWT'})}.{segment(good(clock))}"
    assert code_of(f"{signing_input}.{hs256_sig(secret[1], signing_input)}") == (
        "algorithm_not_allowed"
    )


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_hs512_signed_with_the_real_secret_is_refused(clock, secret):
    token = jwt.encode(good(clock), secret[1], algorithm="HS512")
    assert code_of(token) == "algorithm_not_allowed"


def test_rs256_naming_a_secrets_kid(clock, secret):
    token = rs256(rsa_key(2), good(clock), kid=secret[0].kid)
    assert code_of(token) == "algorithm_not_allowed"


def test_hs256_naming_a_public_keys_kid_key_confusion(clock, secret, public_key):
    key, _private = public_key
    # The classic confusion attack: HMAC keyed with the public key's PEM text.
    token = hs256(key.public_pem, good(clock), kid=key.kid)
    assert code_of(token) == "algorithm_not_allowed"


def test_hs256_without_kid_is_never_tried_against_public_keys(clock, public_key):
    key, _private = public_key
    token = hs256(key.public_pem, good(clock))
    # No secret exists: the HS256 candidates are empty, public keys are not considered.
    assert code_of(token) == "security_not_configured"
    Key.objects.generate_secret()
    assert code_of(token) == "invalid_signature"


def test_rs256_without_kid_is_never_tried_against_secrets(clock, secret):
    assert code_of(rs256(rsa_key(2), good(clock))) == "security_not_configured"


def test_allowed_algorithms_setting(clock, secret, public_key):
    key, private = public_key
    with chat_settings({"ALLOWED_ALGORITHMS": ["RS256"]}):
        assert code_of(hs256(secret[1], good(clock))) == "algorithm_not_allowed"
        assert tokens.verify(rs256(private, good(clock))).kid == key.kid
    with chat_settings({"ALLOWED_ALGORITHMS": ["HS256"]}):
        assert code_of(rs256(private, good(clock))) == "algorithm_not_allowed"


# -- unknown_key / key_retired / security_not_configured ----------------------------


def test_unknown_kid(clock, secret):
    assert code_of(hs256(secret[1], good(clock), kid="hs-nope")) == "unknown_key"


def test_service_key_kid_is_unknown_for_signatures(clock, secret):
    service = Key.objects.generate_service_keypair()
    assert code_of(hs256(secret[1], good(clock), kid=service.kid)) == "unknown_key"
    assert code_of(rs256(rsa_key(2), good(clock), kid=service.kid)) == "unknown_key"


def test_key_retired_after_rotation_with_no_grace(clock, secret):
    old, clear = secret
    Key.objects.rotate_secret(grace=0)
    with pytest.raises(TokenError) as info:
        tokens.verify(hs256(clear, good(clock), kid=old.kid))
    assert info.value.code == "key_retired"
    assert info.value.facts["state"] == "retired"


def test_key_retired_when_revoked(clock, secret):
    old, clear = secret
    Key.objects.revoke(old.kid)
    with pytest.raises(TokenError) as info:
        tokens.verify(hs256(clear, good(clock), kid=old.kid))
    assert info.value.code == "key_retired"
    assert info.value.facts["state"] == "revoked"


def test_key_retired_for_a_revoked_public_key(clock, public_key):
    key, private = public_key
    Key.objects.revoke(key.kid)
    assert code_of(rs256(private, good(clock), kid=key.kid)) == "key_retired"


def test_security_not_configured_on_a_fresh_install(clock):
    secret_value = "a-secret-nobody-configured-here-0123456789"
    assert code_of(hs256(secret_value, good(clock))) == "security_not_configured"
    assert code_of(hs256(secret_value, good(clock), kid="hs-abc")) == "security_not_configured"
    assert code_of(rs256(rsa_key(2), good(clock))) == "security_not_configured"


def test_security_not_configured_after_the_last_secret_is_revoked(clock, secret):
    Key.objects.revoke(secret[0].kid)
    assert code_of(hs256(secret[1], good(clock))) == "security_not_configured"


def test_security_not_configured_with_only_a_service_key(clock):
    Key.objects.generate_service_keypair()
    assert code_of(hs256("whatever-secret-value", good(clock))) == "security_not_configured"


# -- invalid_signature ------------------------------------------------------------


def test_invalid_signature_wrong_secret(clock, secret):
    assert code_of(hs256("not-the-secret", good(clock))) == "invalid_signature"
    assert code_of(hs256("not-the-secret", good(clock), kid=secret[0].kid)) == ("invalid_signature")


def test_invalid_signature_empty_signature(clock, secret):
    token = hs256(secret[1], good(clock), kid=secret[0].kid)
    assert code_of(token.rsplit(".", 1)[0] + ".") == "invalid_signature"


def test_invalid_signature_tampered_payload(clock, secret):
    h, _p, s = hs256(secret[1], good(clock)).split(".")
    assert code_of(f"{h}.{segment(good(clock, sub='admin'))}.{s}") == "invalid_signature"


def test_invalid_signature_rs256_other_private_key(clock, public_key):
    key, _private = public_key
    assert code_of(rs256(rsa_key(3), good(clock))) == "invalid_signature"
    assert code_of(rs256(rsa_key(3), good(clock), kid=key.kid)) == "invalid_signature"


def test_invalid_signature_truncated_rs256_signature(clock, public_key):
    _key, private = public_key
    token = rs256(private, good(clock))
    assert code_of(token[:-10]) == "invalid_signature"  # 342 -> 332 characters: canonical


# -- missing_claim ------------------------------------------------------------------


def test_missing_claim_exp(clock, secret):
    with pytest.raises(TokenError) as info:
        tokens.verify(hs256(secret[1], good(clock, exp=_DROP)))
    assert (info.value.code, info.value.facts["claim"]) == ("missing_claim", "exp")


def test_exp_optional_when_require_exp_is_off(clock, secret):
    with chat_settings({"REQUIRE_EXP": False}):
        assert tokens.verify(hs256(secret[1], good(clock, exp=_DROP))).user_id == "user-1"


def test_missing_claim_user_id(clock, secret):
    with pytest.raises(TokenError) as info:
        tokens.verify(hs256(secret[1], good(clock, sub=_DROP)))
    assert info.value.code == "missing_claim"


@pytest.mark.parametrize("name", ["AUDIENCE", "ISSUER"])
def test_missing_claim_aud_iss_when_configured(clock, secret, name):
    with chat_settings({name: "https://chat.example.com"}):
        assert code_of(hs256(secret[1], good(clock))) == "missing_claim"


# -- times -------------------------------------------------------------------------


def test_expired(clock, secret):
    with pytest.raises(TokenError) as info:
        tokens.verify(hs256(secret[1], good(clock, iat=int(clock.t) - 7200, exp=clock.t - 60)))
    assert info.value.code == "expired"
    assert info.value.facts["exp"] == clock.t - 60


def test_expiry_leeway_boundaries(clock, secret):
    token = hs256(secret[1], good(clock, exp=int(clock.t) + 100))
    clock.advance(100 + 30)  # exactly the default leeway past exp: still accepted
    assert tokens.verify(token)
    clock.advance(1)
    assert code_of(token) == "expired"


def test_expiry_with_zero_leeway(clock, secret):
    token = hs256(secret[1], good(clock, exp=int(clock.t) + 100))
    with chat_settings({"LEEWAY": 0}):
        clock.advance(100)
        assert tokens.verify(token)
        clock.advance(1)
        assert code_of(token) == "expired"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_not_yet_valid_and_its_leeway(clock, secret, claim):
    t = int(clock.t)
    assert tokens.verify(hs256(secret[1], good(clock, **{claim: t + 30})))
    with pytest.raises(TokenError) as info:
        tokens.verify(hs256(secret[1], good(clock, **{claim: t + 31})))
    assert (info.value.code, info.value.facts["claim"]) == ("not_yet_valid", claim)


def test_lifetime_too_long_exp_minus_iat(clock, secret):
    t = int(clock.t)
    assert tokens.verify(hs256(secret[1], good(clock, iat=t, exp=t + 86400)))
    assert code_of(hs256(secret[1], good(clock, iat=t, exp=t + 86401))) == "lifetime_too_long"
    # Back-dated iat does not hide a long lifetime either.
    long_ago = good(clock, iat=t - 86400, exp=t + 60)
    assert code_of(hs256(secret[1], long_ago)) == "lifetime_too_long"


def test_lifetime_too_long_exp_minus_now_without_iat(clock, secret):
    t = int(clock.t)
    assert tokens.verify(hs256(secret[1], good(clock, iat=_DROP, exp=t + 86400 + 30)))
    token = hs256(secret[1], good(clock, iat=_DROP, exp=t + 86400 + 31))
    assert code_of(token) == "lifetime_too_long"


def test_lifetime_setting(clock, secret):
    t = int(clock.t)
    token = hs256(secret[1], good(clock, exp=t + 3600))
    with chat_settings({"MAX_TOKEN_LIFETIME": 600, "DEFAULT_TOKEN_TTL": 60}):
        assert code_of(token) == "lifetime_too_long"


# -- invalid_claim -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", "123"),
        ("exp", "1800003600"),
        ("exp", True),
        ("exp", None),
        ("exp", [1800003600]),
        ("nbf", "0"),
        ("nbf", False),
        ("iat", "1800000000"),
        ("iat", True),
    ],
    ids=repr,
)
def test_invalid_claim_time_types(clock, secret, claim, value):
    assert code_of(hs256(secret[1], good(clock, **{claim: value}))) == "invalid_claim"


def test_numeric_string_exp_accepted_by_pyjwt_is_refused(clock, secret):
    token = hs256(secret[1], good(clock, exp=str(int(clock.t) + 3600)))
    assert jwt.decode(token, secret[1], algorithms=["HS256"], options={"verify_iat": False})
    assert code_of(token) == "invalid_claim"


def test_exp_overflowing_to_infinity_is_refused(clock, secret):
    # A number that only decodes to Infinity is refused by the strict JSON reader
    # (like the literal Infinity), whichever claim holds it.
    payload = '{"sub":"user-1","exp":1e999}'
    assert code_of(hs256(secret[1], payload)) == "malformed"


def test_fractional_times_are_numbers(clock, secret):
    assert tokens.verify(hs256(secret[1], good(clock, exp=clock.t + 60.5, iat=clock.t - 0.25)))


def test_invalid_claim_sub_and_user_id_differ(clock, secret):
    assert code_of(hs256(secret[1], good(clock, userId="user-2"))) == "invalid_claim"


@pytest.mark.parametrize(
    "user_id",
    [
        123,
        1.5,
        True,
        None,
        ["user-1"],
        {"id": "user-1"},
        "",
        "x" * 256,
        "a\tb",
        "a\x7fb",
        "a\x85b",
        "a\u2028b",
        "jöhn",
        "用户",
        " user-1",
        "user-1 ",
        "a\r\nSet-Cookie: x=1",
        "a\nb",
        "a\x00b",
    ],
    ids=repr,
)
def test_invalid_claim_user_id_values(clock, secret, user_id):
    assert code_of(hs256(secret[1], good(clock, sub=user_id))) == "invalid_claim"
    assert code_of(hs256(secret[1], good(clock, sub=_DROP, userId=user_id))) == "invalid_claim"


@pytest.mark.parametrize("user_id", ["x" * 255, "a", "a b", "~!@#$%^&*()_+{}|:<>?", "42"])
def test_valid_user_id_edges(clock, secret, user_id):
    assert tokens.verify(hs256(secret[1], good(clock, sub=user_id))).user_id == user_id


def test_aud_and_iss_checks(clock, secret):
    s = secret[1]
    conf = {"AUDIENCE": ["chat", "chat-eu"], "ISSUER": "https://shop.example.com"}
    iss = "https://shop.example.com"
    with chat_settings(conf):
        assert tokens.verify(hs256(s, good(clock, aud="chat-eu", iss=iss)))
        assert tokens.verify(hs256(s, good(clock, aud=["other", "chat"], iss=iss)))
        assert code_of(hs256(s, good(clock, aud="other", iss=iss))) == "invalid_claim"
        assert code_of(hs256(s, good(clock, aud=["other"], iss=iss))) == "invalid_claim"
        assert code_of(hs256(s, good(clock, aud=5, iss=iss))) == "invalid_claim"
        assert code_of(hs256(s, good(clock, aud="chat", iss="https://evil"))) == "invalid_claim"
        assert code_of(hs256(s, good(clock, aud="chat", iss=[iss]))) == "invalid_claim"
    # Not configured: aud / iss are not checked.
    assert tokens.verify(hs256(s, good(clock, aud="anything", iss="anyone")))


# -- subject_changed / token_revoked ------------------------------------------------------


def test_subject_changed(clock, secret):
    token = hs256(secret[1], good(clock))
    assert tokens.verify(token, session_subject="user-1").user_id == "user-1"
    with pytest.raises(TokenError) as info:
        tokens.verify(token, session_subject="user-2")
    assert info.value.code == "subject_changed"


def test_token_revoked_for_older_tokens_only(clock, secret):
    older = tokens.issue("user-1")
    other_user = tokens.issue("user-2")
    clock.advance(10)
    RevokedUser.objects.revoke("user-1")
    assert code_of(older) == "token_revoked"
    assert tokens.verify(other_user).user_id == "user-2"
    clock.advance(1)
    assert tokens.verify(tokens.issue("user-1")).user_id == "user-1"


def test_token_revoked_without_iat(clock, secret):
    RevokedUser.objects.revoke("user-1")
    clock.advance(5)
    assert code_of(hs256(secret[1], good(clock, iat=_DROP))) == "token_revoked"


def test_revocation_within_the_same_second(clock, secret):
    clock.t = 1_800_000_000.2
    before = tokens.issue("user-1")
    clock.advance(0.3)
    RevokedUser.objects.revoke("user-1")
    clock.advance(0.3)
    after = tokens.issue("user-1")
    assert code_of(before) == "token_revoked"
    assert tokens.verify(after).user_id == "user-1"


# -- payload_decryption_failed --------------------------------------------------------


def _jwe_to(public: str, data: object, alg="RSA-OAEP-256", enc="A256GCM", **extra) -> str:
    header = {"alg": alg, "enc": enc, **extra}
    key = RSAKey.import_key(public)
    return jwe.encrypt_compact(header, json.dumps(data).encode(), key, algorithms=[alg, enc])


@pytest.fixture
def service(clock):
    return Key.objects.generate_service_keypair()


def test_user_payload_decrypts(clock, secret, service):
    payload = _jwe_to(service.public_pem, {"account": "A-1", "tier": 3})
    result = tokens.verify(hs256(secret[1], good(clock, user_payload=payload)))
    assert result.private == {"account": "A-1", "tier": 3}
    assert result.claims["user_payload"] == payload
    with_kid = _jwe_to(service.public_pem, {"k": 1}, kid=service.kid)
    assert tokens.verify(hs256(secret[1], good(clock, user_payload=with_kid))).private == {"k": 1}


def _try_to_change(change) -> None:
    # Either the engine refuses the change (read-only value) or it stays in this result.
    with contextlib.suppress(TypeError, AttributeError):
        change()


def test_nested_claims_of_a_result_are_not_shared_with_the_next(clock, secret):
    claims = good(clock, userData={"plan": "gold"}, agentData=[{"label": "Plan", "value": "G"}])
    token = hs256(secret[1], claims)
    first = tokens.verify(token)
    _try_to_change(lambda: first.claims["userData"].__setitem__("plan", "x"))
    _try_to_change(lambda: first.claims["agentData"][0].__setitem__("value", "x"))
    _try_to_change(lambda: first.claims["agentData"].append({"label": "Extra"}))
    again = tokens.verify(token)
    assert again.claims["userData"] == {"plan": "gold"}
    assert again.claims["agentData"] == [{"label": "Plan", "value": "G"}]
    assert json.loads(json.dumps(again.claims)) == claims  # still plain JSON for callers
    _try_to_change(lambda: again.claims["userData"].clear())  # a remembered hit this time
    assert tokens.verify(token).claims["userData"] == {"plan": "gold"}


def test_private_of_a_result_is_not_shared_with_the_next(clock, secret, service):
    private = {"account": {"id": "A-1", "tags": ["vip"]}, "tier": 3}
    token = hs256(secret[1], good(clock, user_payload=_jwe_to(service.public_pem, private)))
    first = tokens.verify(token)
    _try_to_change(lambda: first.private.__setitem__("tier", 0))
    _try_to_change(lambda: first.private["account"].__setitem__("id", "B-2"))
    _try_to_change(lambda: first.private["account"]["tags"].append("none"))
    again = tokens.verify(token)
    assert again.private == private
    assert json.loads(json.dumps(again.private)) == private


def test_a_nested_header_is_not_shared_with_the_next(clock, secret):
    token = hs256(secret[1], good(clock), {"alg": "HS256", "x-ctx": {"device": "phone"}})
    _try_to_change(lambda: tokens.verify(token).header["x-ctx"].__setitem__("device", "x"))
    assert tokens.verify(token).header["x-ctx"] == {"device": "phone"}


def test_payload_decryption_failed_jwe_to_another_key(clock, secret, service):
    payload = _jwe_to(public_pem(rsa_key(4)), {"account": "A-1"})
    assert code_of(hs256(secret[1], good(clock, user_payload=payload))) == (
        "payload_decryption_failed"
    )


@pytest.mark.parametrize(
    "value",
    ["garbage", "a.b.c.d.e", "....", "", "x" * 5000, "é.é.é.é.é"],
    ids=lambda v: repr(v)[:20],
)
def test_payload_decryption_failed_garbage(clock, secret, service, value):
    assert code_of(hs256(secret[1], good(clock, user_payload=value))) == (
        "payload_decryption_failed"
    )


@pytest.mark.parametrize("value", [123, None, True, ["a"], {"a": 1}], ids=repr)
def test_payload_decryption_failed_non_string(clock, secret, service, value):
    assert code_of(hs256(secret[1], good(clock, user_payload=value))) == (
        "payload_decryption_failed"
    )


def test_payload_decryption_failed_wrong_algorithms(clock, secret, service):
    for alg, enc in (("RSA-OAEP", "A256GCM"), ("RSA-OAEP-256", "A128GCM")):
        payload = _jwe_to(service.public_pem, {"a": 1}, alg=alg, enc=enc)
        token = hs256(secret[1], good(clock, user_payload=payload))
        assert code_of(token) == "payload_decryption_failed"


def test_payload_decryption_failed_tampered_ciphertext(clock, secret, service):
    parts = _jwe_to(service.public_pem, {"a": 1}).split(".")
    parts[3] = b64(b"\x00" * 16)
    token = hs256(secret[1], good(clock, user_payload=".".join(parts)))
    assert code_of(token) == "payload_decryption_failed"


def test_payload_decryption_failed_without_a_service_key(clock, secret):
    payload = _jwe_to(public_pem(rsa_key(4)), {"a": 1})
    assert code_of(hs256(secret[1], good(clock, user_payload=payload))) == (
        "payload_decryption_failed"
    )


def test_payload_jwe_kid_naming_another_key_fails(clock, secret, service):
    payload = _jwe_to(service.public_pem, {"a": 1}, kid="svc-other")
    assert code_of(hs256(secret[1], good(clock, user_payload=payload))) == (
        "payload_decryption_failed"
    )


# -- headers that must never be trusted ----------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the engine tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return calls


def test_jku_x5u_x5c_jwk_headers_are_ignored(clock, public_key, no_network):
    key, private = public_key
    attacker = rsa_key(5)
    attacker_jwk = RSAKey.import_key(public_pem(attacker)).as_dict(private=False)
    hostile = {
        "jku": "http://127.0.0.1:9/jwks.json",
        "x5u": "http://127.0.0.1:9/cert.pem",
        "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
        "jwk": attacker_jwk,
    }
    # Signed by the attacker and carrying the attacker's key: refused.
    assert code_of(rs256(attacker, good(clock), **hostile)) == "invalid_signature"
    assert code_of(rs256(attacker, good(clock), kid=key.kid, **hostile)) == "invalid_signature"
    # Signed by the registered key: the extra headers neither help nor hurt.
    assert tokens.verify(rs256(private, good(clock), **hostile)).kid == key.kid
    assert no_network == []


# -- issuing ----------------------------------------------------------------------------


def test_issue_header_and_claims(clock, secret):
    key, clear = secret
    token = tokens.issue("user-1", {"email": "a@example.com", "userId": "x", "sub": "evil"})
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "kid": key.kid, "typ": "JWT"}
    claims = jwt.decode(token, clear, algorithms=["HS256"], options={"verify_iat": False})
    t = int(clock.t)
    assert claims == {"email": "a@example.com", "sub": "user-1", "iat": t, "exp": t + 3600}


def test_issue_ttl(clock, secret):
    token = tokens.issue("user-1", ttl=60)
    assert tokens.verify(token).claims["exp"] == int(clock.t) + 60
    with chat_settings({"DEFAULT_TOKEN_TTL": 120}):
        assert tokens.verify(tokens.issue("u")).claims["exp"] == int(clock.t) + 120


@pytest.mark.parametrize("ttl", [0, -1, 0.5, 86401, 10**12, True, math.nan, math.inf, "60"])
def test_issue_refuses_absurd_ttl(clock, secret, ttl):
    with pytest.raises(ChatSecurityError, match="ttl"):
        tokens.issue("user-1", ttl=ttl)


@pytest.mark.parametrize("sub", ["", " x", "a\nb", "x" * 256, "é"])
def test_issue_refuses_bad_sub(clock, secret, sub):
    with pytest.raises(TokenError) as info:
        tokens.issue(sub)
    assert info.value.code == "invalid_claim"


def test_issue_refuses_claims_it_would_itself_refuse(clock, secret):
    with pytest.raises(ChatSecurityError):
        tokens.issue("user-1", {"x": math.nan})
    with pytest.raises(ChatSecurityError):
        tokens.issue("user-1", {"blob": "x" * 9000})


@pytest.mark.parametrize(
    ("claims", "name"),
    [
        ({"updated": datetime.datetime(2031, 5, 17, 9, 30, tzinfo=datetime.UTC)}, "updated"),
        ({"iss": 5}, "iss"),
        ({"tags": {"vip"}}, "tags"),
        ({"score": math.nan}, "score"),
        ({"userData": {"since": datetime.date(2031, 5, 17)}}, "userData"),
    ],
    ids=["datetime", "iss-not-a-string", "set", "nan", "nested-date"],
)
def test_issue_refuses_claims_that_cannot_be_signed_as_invalid_claim(clock, secret, claims, name):
    # PyJWT's TypeError used to escape (a 500 on every page with the tag).
    with pytest.raises(TokenError) as info:
        tokens.issue("user-1", claims)
    assert info.value.code == "invalid_claim"
    assert info.value.facts["claim"] == name
    assert repr(name) in info.value.detail
    assert "2031" not in str(info.value) and "vip" not in str(info.value)  # no claim value


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (lambda t: {"nbf": "x"}, "invalid_claim"),
        (lambda t: {"nbf": True}, "invalid_claim"),
        (lambda t: {"nbf": t + 10**6}, "not_yet_valid"),
        (lambda t: {"user_payload": "x"}, "payload_decryption_failed"),
        (lambda t: {"blob": "x" * 9000}, "token_too_large"),
    ],
    ids=["nbf-string", "nbf-bool", "nbf-future", "user_payload", "too-large"],
)
def test_issue_never_hands_out_a_token_its_verifier_refuses(clock, secret, extra, code):
    with pytest.raises(TokenError) as info:
        tokens.issue("user-1", extra(int(clock.t)))
    assert info.value.code == code


@pytest.mark.parametrize("name", ["aud", "iss"])
def test_issue_refuses_an_aud_or_iss_this_site_does_not_accept(clock, secret, name):
    setting = {"aud": "AUDIENCE", "iss": "ISSUER"}[name]
    with chat_settings({setting: "https://chat.example.com"}):
        assert tokens.verify(tokens.issue("user-1")).claims[name] == "https://chat.example.com"
        with pytest.raises(TokenError) as info:
            tokens.issue("user-1", {name: "https://elsewhere.example.com"})
    assert info.value.code == "invalid_claim"


def test_issue_checks_the_token_without_counting_or_remembering_it(clock, secret):
    # Issued is not presented: it must not evict the tokens clients do present.
    key, _ = secret
    token = tokens.issue("user-1")
    assert token not in MEMORY
    usage.flush_usage()
    key.refresh_from_db()
    assert key.use_count == 0


def test_issue_without_an_active_secret(clock):
    with pytest.raises(KeyStateError, match="generate-secret"):
        tokens.issue("user-1")


def test_issue_uses_the_newest_active_secret(clock, secret):
    clock.advance(1)
    new, _clear = Key.objects.rotate_secret()
    assert tokens.verify(tokens.issue("user-1")).kid == new.kid


# -- usage counting ----------------------------------------------------------------------


def test_usage_is_counted_in_memory_and_flushed(clock, secret):
    key, _ = secret
    token = tokens.issue("user-1")
    tokens.verify(token)
    tokens.verify(token)
    tokens.verify(token, count_use=False)
    key.refresh_from_db()
    assert key.use_count == 0  # no write per request
    usage.flush_usage()
    key.refresh_from_db()
    assert key.use_count == 2
    assert key.last_used.timestamp() == clock.t


def test_user_payload_that_is_not_json_comes_back_as_text(clock, secret, service):
    for plaintext in ("plain words", "[" * 5000):
        payload = jwe.encrypt_compact(
            {"alg": "RSA-OAEP-256", "enc": "A256GCM"},
            plaintext.encode(),
            RSAKey.import_key(service.public_pem),
            algorithms=["RSA-OAEP-256", "A256GCM"],
        )
        with chat_settings({"MAX_TOKEN_BYTES": 1 << 20}):
            result = tokens.verify(hs256(secret[1], good(clock, user_payload=payload)))
        assert result.private == plaintext


def test_undecryptable_service_key_is_a_store_failure_not_a_token_failure(clock, service):
    # The store was written under other ENCRYPTION_KEYS: that is the operator's problem,
    # reported as KeyStoreUnavailable (503), never blamed on the token.
    public = Key.objects.add_public_key(public_pem(rsa_key(1)))
    payload = _jwe_to(service.public_pem, {"a": 1})
    token = rs256(rsa_key(1), good(clock, user_payload=payload), kid=public.kid)
    other_keys = {"ENCRYPTION_KEYS": ["a-different-encryption-key-0123456789abcdef"]}
    with chat_settings(other_keys), pytest.raises(KeyStoreUnavailable):
        tokens.verify(token)
