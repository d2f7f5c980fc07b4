"""The token tester's explanations (chat_security.diagnosis), shared by the CLI's verify."""

from __future__ import annotations

import json

import pytest
from joserfc import jwe
from joserfc.jwk import RSAKey

from chat_security import diagnosis as diagnose_module
from chat_security.diagnosis import diagnose
from chat_security.exceptions import ERROR_CODES
from chat_security.models import Key, KeyKind, RevokedUser
from chat_security.timefmt import human_duration, relative, utc
from tests import tokencraft as tc

pytestmark = pytest.mark.django_db


@pytest.fixture
def secret(clock):
    _key, value = Key.objects.generate_secret("tester")
    return value


def claims(clock, **extra):
    return {"sub": "user-1", "iat": int(clock.t), "exp": int(clock.t) + 3600, **extra}


def text(diag) -> str:
    return " ".join(diag.hints)


# -- time words -------------------------------------------------------------------


def test_human_duration_units():
    assert human_duration(45) == "45 s"
    assert human_duration(42 * 60) == "42 min"
    assert human_duration(3 * 3600) == "3 h"
    assert human_duration(48 * 3600) == "48 h"
    assert human_duration(5 * 86400) == "5 days"
    assert human_duration(-180) == "3 min"


def test_relative_and_utc():
    assert relative(1000 + 42 * 60, 1000) == "in 42 min"
    assert relative(1000 - 180, 1000) == "3 min ago"
    assert relative(1000.4, 1000) == "just now"
    assert utc(1_800_000_000) == "2027-01-15 08:00 UTC"
    assert utc(1_800_000_000, now=1_800_000_100) == "08:00 UTC"
    assert utc(1e20) == "an impossible date"


# -- valid ------------------------------------------------------------------------------


def test_valid_token_shows_times_key_and_decoded_parts(clock, secret):
    key = Key.objects.get()
    token = tc.hs256(secret, claims(clock, exp=int(clock.t) + 42 * 60, iat=int(clock.t) - 180))
    diag = diagnose(token)
    assert diag.valid and diag.outcome == "valid"
    assert diag.user_id == "user-1"
    assert diag.signer.kid == key.kid and diag.signer.state == "active"
    labels = {t.claim: t.label for t in diag.times}
    assert labels == {"exp": "expires in 42 min", "iat": "issued 3 min ago"}
    assert json.loads(diag.header_json) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(diag.claims_json)["sub"] == "user-1"
    assert diag.hints == []


def test_valid_token_does_not_count_a_use(clock, secret):
    from chat_security import usage

    diagnose(tc.hs256(secret, claims(clock)))
    usage.flush_usage()
    assert Key.objects.get().use_count == 0


def test_valid_token_signed_with_secret_in_grace_says_until_when(clock, secret):
    old = Key.objects.get()
    Key.objects.rotate_secret(grace=3600)
    diag = diagnose(tc.hs256(secret, claims(clock)))
    assert diag.valid
    assert diag.signer.kid == old.kid and diag.signer.state == "grace"
    assert diag.signer.state_text == "in grace until 2027-01-15 09:00 UTC"
    assert "in grace until 2027-01-15 09:00 UTC" in text(diag)


def test_identity_preview_is_shown_when_available(clock, secret, monkeypatch):
    def fake_preview(claims, private):
        return {
            "user_id": claims["sub"],
            "email": "",
            "user_data": {"plan": "gold"},
            "private_keys": [],
            "ignored": [{"field": "phone", "reason": "not a phone number"}],
        }

    monkeypatch.setattr(diagnose_module.identity, "preview", fake_preview)
    diag = diagnose(tc.hs256(secret, claims(clock)))
    assert diag.identity_rows == [("user_id", "user-1"), ("user_data", '{\n  "plan": "gold"\n}')]
    assert diag.ignored == [{"field": "phone", "reason": "not a phone number"}]


def test_identity_preview_missing_is_tolerated(clock, secret, monkeypatch):
    def not_yet(claims, private):
        raise NotImplementedError

    monkeypatch.setattr(diagnose_module.identity, "preview", not_yet)
    diag = diagnose(tc.hs256(secret, claims(clock)))
    assert diag.valid and diag.identity is None and diag.identity_rows == []


def test_private_payload_shows_key_names_only(clock, secret, monkeypatch):
    monkeypatch.setattr(
        diagnose_module.identity, "preview", lambda c, p: (_ for _ in ()).throw(NotImplementedError)
    )
    service = Key.objects.generate_service_keypair()
    jwe_value = jwe.encrypt_compact(
        {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": service.kid},
        json.dumps({"ssn": "078-05-1120", "plan": "gold"}),
        RSAKey.import_key(service.public_pem),
        algorithms=["RSA-OAEP-256", "A256GCM"],
    )
    diag = diagnose(tc.hs256(secret, claims(clock, user_payload=jwe_value)))
    assert diag.valid
    assert diag.private_keys == ["plan", "ssn"]
    assert "078-05-1120" not in repr(diag.private_keys) + text(diag)


# -- each error code ------------------------------------------------------------------------


def test_missing_token():
    diag = diagnose("")
    assert diag.code == "missing_token" and diag.explanation == ERROR_CODES["missing_token"]


def test_token_too_large(secret):
    diag = diagnose("a" * 9000)
    assert diag.code == "token_too_large"
    assert "9000 bytes; the limit is 8192" in text(diag)


@pytest.mark.parametrize(
    ("raw", "hint"),
    [
        ("eyJhbGc\n.e30.abc", "spaces or line breaks"),
        ("this is not a token", "This is not a JWT"),
        ("not-a-token", "This is not a JWT"),
        ("Bearer abc.def.ghi", "Remove the 'Bearer ' prefix"),
        ('"abc.def.ghi"', "Remove the quotes"),
        ("a.b.c.d.e", "encrypted JWE"),
        ("\x00\x01garbage", "This is not a JWT"),
    ],
)
def test_undecodable_input_gets_a_clear_message(secret, raw, hint):
    diag = diagnose(raw)
    assert diag.code == "malformed"
    assert diag.header is None and diag.signer is None
    assert hint in text(diag)


def test_malformed_json_header(secret):
    diag = diagnose(tc.segment("{not json") + "." + tc.segment({"sub": "x"}) + ".sig")
    assert diag.code == "malformed" and "header" in diag.detail


def test_algorithm_none_refused(clock, secret):
    token = tc.segment({"alg": "none"}) + "." + tc.segment(claims(clock)) + "."
    diag = diagnose(token)
    assert diag.code == "algorithm_not_allowed"
    assert "Algorithm 'none' refused (accepted here: ES256, EdDSA, HS256, RS256)" in text(diag)
    assert diag.claims["sub"] == "user-1"


def test_unknown_kid_but_signature_matches_a_key(clock, secret):
    key = Key.objects.get()
    diag = diagnose(tc.hs256(secret, claims(clock), kid="nope"))
    assert diag.code == "unknown_key"
    assert f"kid 'nope' is unknown, but the signature matches signing secret {key.kid}" in text(
        diag
    )


def test_unknown_kid_and_no_match(clock, secret):
    diag = diagnose(tc.hs256("other-secret", claims(clock), kid="nope"))
    assert diag.code == "unknown_key" and "kid 'nope' names no key here" in text(diag)


def test_key_retired_names_the_key_and_since_when(clock, secret):
    old = Key.objects.get()
    clock.advance(60)
    Key.objects.revoke(old.kid)
    Key.objects.rotate_secret()
    diag = diagnose(tc.hs256(secret, claims(clock), kid=old.kid))
    assert diag.code == "key_retired"
    assert diag.signer.kid == old.kid and diag.signer.state == "revoked"
    assert (
        f"Signed with signing secret {old.kid}, revoked on 2027-01-15 08:01 UTC — it is no "
        "longer accepted." in text(diag)
    )


def test_invalid_signature_names_the_retired_secret_that_signed(clock, secret):
    """No kid: only usable keys are candidates, but the tester checks every key."""
    old = Key.objects.get()
    Key.objects.rotate_secret(grace=0)
    clock.advance(7200)
    diag = diagnose(tc.hs256(secret, claims(clock)))
    assert diag.code == "invalid_signature"
    assert diag.signer.kid == old.kid and diag.signer.state == "retired"
    assert f"Signed with signing secret {old.kid}, retired since 2027-01-15 08:00 UTC" in text(diag)
    assert "still uses an old key" in text(diag)


def test_invalid_signature_names_a_grace_expired_secret(clock, secret):
    old = Key.objects.get()
    Key.objects.rotate_secret(grace=3600)
    clock.advance(2 * 3600)
    diag = diagnose(tc.hs256(secret, claims(clock)))
    assert diag.code == "invalid_signature"
    assert diag.signer.kid == old.kid
    assert "retired since 2027-01-15 09:00 UTC" in diag.signer.state_text


def test_invalid_signature_matching_no_key(clock, secret):
    diag = diagnose(tc.hs256("a-completely-different-secret", claims(clock)))
    assert diag.code == "invalid_signature" and diag.signer is None
    assert "The signature matches no key known here" in text(diag)


def test_wrong_kid_for_the_signing_key(clock, secret):
    first = Key.objects.get()
    Key.objects.rotate_secret()
    second = Key.objects.exclude(pk=first.pk).get()
    diag = diagnose(tc.hs256(secret, claims(clock), kid=second.kid))
    assert diag.code == "invalid_signature"
    assert f"matches signing secret {first.kid}, but the kid header says '{second.kid}'" in text(
        diag
    )


def test_rs256_signer_is_named_among_public_keys(clock):
    private = tc.rsa_key(0)
    key = Key.objects.add_public_key(tc.public_pem(private))
    Key.objects.revoke(key.kid)
    diag = diagnose(tc.rs256(private, claims(clock)))
    assert diag.code == "security_not_configured"
    assert diag.signer.kid == key.kid and diag.signer.label == f"public key {key.kid}"
    assert "No usable public key exists yet" in text(diag)


def test_security_not_configured(clock):
    diag = diagnose(tc.hs256("whatever", claims(clock)))
    assert diag.code == "security_not_configured"
    assert "No usable signing secret exists yet" in text(diag)


def test_missing_claim(clock, secret):
    diag = diagnose(tc.hs256(secret, {"sub": "u", "iat": int(clock.t)}))
    assert diag.code == "missing_claim" and "exp" in diag.detail
    assert diag.signer is not None


def test_invalid_claim(clock, secret):
    diag = diagnose(tc.hs256(secret, claims(clock, sub=42)))
    assert diag.code == "invalid_claim" and "string" in diag.detail


def test_expired_hours_ago_says_when_and_what_to_do(clock, secret):
    token = tc.hs256(
        secret, claims(clock, exp=int(clock.t) - 3 * 3600, iat=int(clock.t) - 4 * 3600)
    )
    diag = diagnose(token)
    assert diag.code == "expired"
    assert diag.hints == [
        "Expired 3 h ago at 05:00 UTC — issue a new token; recommended lifetime 1 h."
    ]
    assert {t.claim: t.label for t in diag.times}["exp"] == "expired 3 h ago"


def test_expired_seconds_ago_flags_clock_skew(clock, secret):
    diag = diagnose(tc.hs256(secret, claims(clock, exp=int(clock.t) - 45)))
    assert diag.code == "expired"
    assert "expired only 45 s ago" in text(diag)
    assert "clocks of the signing server and this server may differ" in text(diag)


def test_issued_in_the_future_flags_clock_skew(clock, secret):
    diag = diagnose(tc.hs256(secret, claims(clock, iat=int(clock.t) + 120)))
    assert diag.code == "not_yet_valid"
    assert "iat lies 2 min in the future (08:02 UTC)" in text(diag)
    assert "clocks" in text(diag)


def test_times_in_milliseconds_are_called_out(clock, secret):
    diag = diagnose(tc.hs256(secret, claims(clock, iat=int(clock.t) * 1000)))
    assert diag.code == "not_yet_valid"
    assert "looks like milliseconds" in text(diag)


def test_lifetime_too_long(clock, secret):
    diag = diagnose(tc.hs256(secret, claims(clock, exp=int(clock.t) + 48 * 3600)))
    assert diag.code == "lifetime_too_long"
    assert "at most 24 h (this one: 48 h). Issue shorter-lived" in text(diag)


def test_token_revoked(clock, secret):
    RevokedUser.objects.revoke("user-1")
    diag = diagnose(tc.hs256(secret, claims(clock, iat=int(clock.t) - 10)))
    assert diag.code == "token_revoked"
    assert "revoked at 2027-01-15 08:00 UTC" in text(diag)


def test_payload_decryption_failed(clock, secret):
    diag = diagnose(tc.hs256(secret, claims(clock, user_payload="garbage")))
    assert diag.code == "payload_decryption_failed"
    assert "RSA-OAEP-256" in text(diag)


def test_key_store_unavailable(monkeypatch, clock):
    from chat_security import keyring
    from chat_security.exceptions import KeyStoreUnavailable

    def down():
        raise KeyStoreUnavailable("down")

    monkeypatch.setattr(keyring, "get_snapshot", down)
    diag = diagnose(tc.hs256("x", claims(clock)))
    assert diag.code == "unavailable" and not diag.valid and diag.outcome == "unavailable"


@pytest.mark.parametrize(
    "code", ["subject_changed", "missing_claim", "invalid_claim", "payload_decryption_failed"]
)
def test_codes_without_facts_fall_back_to_the_generic_hint(code):
    """subject_changed needs a chat session, so the tester never meets it; still covered."""
    from chat_security.exceptions import HINTS, TokenError

    diag = diagnose_module.Diagnosis(valid=False, code=code)
    assert diagnose_module._hints(TokenError(code), diag, 0.0, "x") == [HINTS[code]]


def test_outcome_of_service_key_kind_label():
    signer = diagnose_module.Signer("svc-1", KeyKind.SERVICE_KEY, "active", None)
    assert signer.label == "service key svc-1" and signer.state_text == "active"


@pytest.mark.parametrize("value", [10**400, -(10**400), 10**20, 1e300, -1e300])
def test_time_facts_skip_times_no_calendar_can_show(value):
    from chat_security.diagnosis import time_facts

    assert time_facts({"exp": value, "iat": value, "nbf": value}, 1_800_000_000.0) == []
