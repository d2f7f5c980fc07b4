"""Adversarial review of the core (engine, key store, CLI, checks): one test per finding.

Each test here failed before its fix; the randomized test at the end compares a
remembered (cached) verification with a cold one over sequences of key, user,
mode, setting and clock changes.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from joserfc import jwe
from joserfc.jwk import RSAKey

from chat_security import checks, keys, public_keys, tokens, verified
from chat_security.exceptions import (
    ChatSecurityError,
    KeyImportError,
    KeyStoreUnavailable,
    TokenError,
)
from chat_security.models import Key, RevokedUser, SecurityConfig

from ..test_cli import ROOT, Result, _env, cli, migrated_db, store_state  # noqa: F401
from ..tokencraft import chat_settings, hs256, public_pem, rs256, rsa_key

pytestmark = pytest.mark.django_db
JWE_PROFILE = ["RSA-OAEP-256", "A256GCM"]


def outcome(token, **kwargs):
    """("ok", user id, kid, key state, private) or the §4 code; nothing else may escape."""
    try:
        result = tokens.verify(token, **kwargs)
    except TokenError as exc:
        return exc.code
    return ("ok", result.user_id, result.kid, str(result.key_state), repr(result.private))


def encrypt_to(service: Key, data: dict) -> str:
    public = RSAKey.import_key(service.public_pem)
    return jwe.encrypt_compact(
        {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": service.kid},
        json.dumps(data).encode(),
        public,
        algorithms=JWE_PROFILE,
    )


@pytest.fixture
def secret(clock):
    return Key.objects.generate_secret()


def claims(clock, **extra) -> dict:
    return {"sub": "user-1", "iat": int(clock.t), "exp": int(clock.t) + 3600, **extra}


# -- §3 step 6: time claims beyond float range ------------------------------------------------


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [10**400, -(10**400), 2**1024])
def test_integer_times_beyond_float_range_are_invalid_claim(clock, secret, name, value):
    # Before: OverflowError (int too large to convert to float) escaped the engine -> 500.
    token = hs256(secret[1], claims(clock, **{name: value}))
    assert outcome(token) == "invalid_claim"


def test_large_but_finite_integer_times_follow_the_normal_rules(clock, secret):
    assert outcome(hs256(secret[1], claims(clock, exp=10**300))) == "lifetime_too_long"
    assert outcome(hs256(secret[1], claims(clock, nbf=10**300))) == "not_yet_valid"
    assert outcome(hs256(secret[1], claims(clock, iat=-(10**300)))) == "lifetime_too_long"


# -- strict JSON: a number that only decodes to Infinity ----------------------------------------


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1E999"])
def test_numbers_that_overflow_to_infinity_are_malformed(clock, secret, literal):
    # Before: 1e400 in any claim became float('inf') and was accepted; the CLI then
    # printed the non-JSON word Infinity in its "one JSON object" output.
    t = int(clock.t)
    payload = f'{{"sub":"user-1","exp":{t + 60},"score":{literal}}}'
    assert outcome(hs256(secret[1], payload)) == "malformed"
    header = f'{{"alg":"HS256","x":{literal}}}'
    assert outcome(hs256(secret[1], claims(clock), header=header)) == "malformed"


def test_cli_verify_output_stays_strict_json(clock, secret):
    t = int(clock.t)
    token = hs256(secret[1], f'{{"sub":"user-1","exp":{t + 60},"score":1e400}}')
    result = cli("verify", token)
    assert result.code == 1
    data = json.loads(result.out, parse_constant=pytest.fail)
    assert data["error"] == "malformed"


# -- the verify cache and user_payload ---------------------------------------------------------


def test_remembered_token_is_refused_once_its_service_key_grace_ends(clock, secret):
    # Before: the remembered token kept returning the decrypted payload after the
    # service key that decrypted it was retired; a cold verify refused it.
    old = Key.objects.generate_service_keypair()
    token = tokens.issue("user-1", {"user_payload": encrypt_to(old, {"card": "x"})})
    Key.objects.generate_service_keypair(grace=60)
    assert tokens.verify(token).private == {"card": "x"}  # remembered now
    clock.advance(61)
    assert outcome(token) == "payload_decryption_failed"
    tokens.forget_verified()
    assert outcome(token) == "payload_decryption_failed"


# -- issue(): the app's own tokens must pass the app's own checks ------------------------------


@pytest.mark.parametrize(
    ("audience", "issuer"),
    [("chat-api", None), (None, "https://site.example"), (["a", "b"], ["https://i", "x"])],
)
def test_issued_tokens_carry_the_configured_aud_and_iss(clock, secret, audience, issuer):
    # Before: with AUDIENCE or ISSUER set, every token issued by the tag, the
    # token endpoint or the CLI was refused with missing_claim.
    with chat_settings({"AUDIENCE": audience, "ISSUER": issuer}):
        result = tokens.verify(tokens.issue("user-1"))
    first = {"aud": audience, "iss": issuer}
    for name, value in first.items():
        if value is None:
            assert name not in result.claims
        else:
            assert result.claims[name] == (value if isinstance(value, str) else value[0])


def test_issue_keeps_an_aud_given_by_the_claims_builder(clock, secret):
    with chat_settings({"AUDIENCE": ["a", "b"]}):
        result = tokens.verify(tokens.issue("user-1", {"aud": ["b", "c"]}))
    assert result.claims["aud"] == ["b", "c"]


@pytest.mark.parametrize("value", [5, {"chat": 1}, 1.5])
def test_misconfigured_audience_fails_closed_not_500(clock, secret, value):
    # E009 flags these; a server started without running checks must still refuse
    # tokens cleanly instead of raising TypeError on every request.
    token = hs256(secret[1], claims(clock, aud="chat"))
    with chat_settings({"AUDIENCE": value}):
        assert outcome(token) == "invalid_claim"


# -- concurrent key changes ----------------------------------------------------------------------

_RACE = textwrap.dedent(
    """
    import sys, threading, time
    import django
    django.setup()
    from django.core.management import call_command
    from django.db import connections
    from chat_security import models
    from chat_security.models import Key, KeyKind

    call_command("migrate", verbosity=0)
    mode = sys.argv[1]
    if mode == "rotate":
        Key.objects.generate_secret()
    read_active = models.KeyManager._lock_active

    def slow(self, kind, owner):
        rows = read_active(self, kind, owner)
        time.sleep(0.5)  # widen the window between reading the active key and writing
        return rows

    models.KeyManager._lock_active = slow
    start = threading.Barrier(2)
    results = []

    def worker():
        start.wait()
        try:
            if mode == "rotate":
                Key.objects.rotate_secret(grace=3600)
            elif mode == "service":
                Key.objects.generate_service_keypair(grace=3600)
            else:
                Key.objects.generate_secret()
            results.append("ok")
        except Exception as exc:
            results.append(type(exc).__name__)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    kind = KeyKind.SERVICE_KEY if mode == "service" else KeyKind.SECRET
    print(sorted(results), len(Key.objects.active(kind)))
    """
)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("rotate", "['ok', 'ok'] 1"),
        ("service", "['ok', 'ok'] 1"),
        ("generate", "['KeyStateError', 'ok'] 1"),
    ],
)
def test_concurrent_key_changes_serialise(tmp_path, mode, expected):
    # Before: on SQLite one of two concurrent rotations failed with "database is
    # locked"; on PostgreSQL both succeeded and left two active secrets. Every key
    # change now first writes the SecurityConfig row, so the second one waits and
    # then sees the first one's result.
    env = _env(tmp_path / "race.sqlite3")
    done = subprocess.run(
        [sys.executable, "-c", _RACE, mode],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


# -- encryption at rest: ENCRYPTION_KEYS that are not a list of strong keys -------------------


@pytest.mark.parametrize(
    "value", ["a-single-encryption-key-0123456789-abcdefgh", [], ["short"], [None]]
)
def test_malformed_encryption_keys_fail_closed(clock, value):
    # Before: a bare string was iterated into one-character keys, so every secret
    # was encrypted under HKDF("a") - a database dump revealed it after 1 guess.
    with chat_settings({"ENCRYPTION_KEYS": value}):
        with pytest.raises(ChatSecurityError, match="ENCRYPTION_KEYS"):
            Key.objects.generate_secret()
        assert not Key.objects.exists()
        with pytest.raises(ChatSecurityError):
            keys.encrypt("anything")


def test_store_written_under_good_keys_is_unavailable_under_a_bare_string(clock, secret):
    token = tokens.issue("user-1")
    bad = {"ENCRYPTION_KEYS": django_settings.CHAT_SECURITY["ENCRYPTION_KEYS"][0]}
    with chat_settings(bad), pytest.raises(KeyStoreUnavailable):
        tokens.verify(token)


def test_changed_secret_key_without_encryption_keys_is_503_never_500_or_accept(clock, client):
    with override_settings(CHAT_SECURITY={}):
        Key.objects.generate_secret()
        token = tokens.issue("user-1")
        assert outcome(token)[0] == "ok"
        with override_settings(SECRET_KEY="a-completely-different-django-secret-key-0123456"):
            with pytest.raises(KeyStoreUnavailable):
                tokens.verify(token)
            response = client.get("/chat/api/messages", HTTP_AUTHORIZATION=f"Bearer {token}")
            assert response.status_code == 503
            assert response.json()["error"] == "unavailable"
            assert cli("verify", token).code == 2


# -- CLI -------------------------------------------------------------------------------------


def _run(db_env: dict, *args: str, stdin: str | None = None) -> Result:
    done = subprocess.run(
        [sys.executable, "manage.py", "chat_security", *args],
        cwd=ROOT,
        env=db_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def process_env(migrated_db, tmp_path):  # noqa: F811
    db = tmp_path / "db.sqlite3"
    db.write_bytes(migrated_db.read_bytes())
    return _env(db)


def test_cli_bad_input_is_one_line_even_when_system_checks_warn(process_env):
    # The demo's development SECRET_KEY triggers a system-check warning. Before,
    # Django printed it (five lines) on stderr before every result and error.
    env = {k: v for k, v in process_env.items() if k != "SECRET_KEY"}
    _run(env, "revoke", "hs-nothing").assert_bad_input("no key")
    generated = _run(env, "generate-secret")
    assert generated.code == 0 and generated.err == ""
    assert _run(env, "status").err == ""


def test_cli_refuses_to_act_on_misconfigured_settings(process_env):
    before = _run(process_env, "status").json
    env = {**process_env, "CHAT_SECURITY_ENCRYPTION_KEYS": "too-short"}
    _run(env, "generate-secret").assert_bad_input("chat_security.E013")
    _run(env, "status").assert_bad_input("E013")
    assert _run(process_env, "status").json == before


def test_cli_stdin_over_the_cap_is_too_large_not_truncated(clock, secret):
    # Before: stdin was cut at exactly 1 MiB, so with MAX_TOKEN_BYTES at its
    # 1 MiB maximum an oversized token was parsed (malformed) instead of refused.
    with chat_settings({"MAX_TOKEN_BYTES": 1 << 20}):
        result = cli("verify", "-", stdin="A" * ((1 << 20) + 1))
    assert (result.code, result.json["error"]) == (1, "token_too_large")


def test_cli_add_public_key_from_an_oversized_file(tmp_path, clock):
    big = tmp_path / "big.pem"
    big.write_bytes(b"ssh-rsa " + b"A" * (2 << 20))
    before = store_state()
    cli("add-public-key", str(big)).assert_bad_input("too large")
    assert store_state() == before


# -- public-key import -------------------------------------------------------------------------


def test_deeply_nested_jwk_is_refused_not_a_recursion_error():
    # Before: RecursionError escaped (a CLI traceback, a 500 in the admin).
    text = '{"kty": "RSA", "n": ' + "[" * 30_000 + "]" * 30_000 + "}"
    with pytest.raises(KeyImportError):
        public_keys.parse_public_key(text)
    before = store_state()
    with pytest.raises(KeyImportError):
        Key.objects.add_public_key(text)
    assert store_state() == before


@pytest.mark.parametrize("member", ["q", "dp", "dq", "qi"])
def test_jwk_with_any_private_member_is_refused(member):
    # Before: only d and p were looked for; a JWK carrying q (a prime factor of n)
    # was accepted as a public key.
    jwk = RSAKey.import_key(public_pem(rsa_key(1))).as_dict(private=False)
    with pytest.raises(KeyImportError, match="private"):
        public_keys.parse_public_key(json.dumps({**jwk, member: "AQAB"}))


# -- system checks -----------------------------------------------------------------------------


@pytest.mark.parametrize("conf", [{1: 2, "LEEWAY": 30}, {("a", "b"): 1}])
def test_non_string_setting_names_are_e002_not_a_crash(conf):
    # Before: TypeError from sorted()/join() crashed `manage.py check`.
    with override_settings(CHAT_SECURITY={"ENCRYPTION_KEYS": ["k" * 32], **conf}):
        found = [m.id for m in checks.check_settings()]
    assert found == ["chat_security.E002"]


# -- randomized: a remembered verification never differs from a cold one -----------------------


class _World:
    """Keys, users, mode and settings changed at random; tokens minted along the way."""

    def __init__(self, rng: random.Random, clock, settings) -> None:
        self.rng, self.clock, self.settings = rng, clock, settings
        key, clear = Key.objects.generate_secret()
        self.secrets = [(key.kid, clear)]
        self.slot = 1
        self.private = rsa_key(self.slot)
        self.public = Key.objects.add_public_key(public_pem(self.private))
        self.services = [Key.objects.generate_service_keypair()]
        self.tokens: list[str] = []
        self.base = dict(django_settings.CHAT_SECURITY)

    def mint(self) -> None:
        rng, t = self.rng, int(self.clock.t)
        body = {
            "sub": rng.choice(["user-1", "user-2"]),
            "iat": t + rng.choice([0, 0, 0, -120, 20, 100]),
            "exp": t + rng.choice([60, 600, 3600, 3600, 90_000]),
        }
        if rng.random() < 0.2:
            body["aud"] = rng.choice(["chat", "other"])
        if rng.random() < 0.3:
            body["user_payload"] = encrypt_to(rng.choice(self.services), {"n": rng.random()})
        kid, clear = self.secrets[-1] if rng.random() < 0.7 else rng.choice(self.secrets)
        style = rng.choice(["hs-kid", "hs", "rs-kid", "rs"])
        if style == "hs-kid":
            token = hs256(clear, body, kid=kid)
        elif style == "hs":
            token = hs256(clear, body)
        elif style == "rs-kid":
            token = rs256(self.private, body, kid=self.public.kid)
        else:
            token = rs256(self.private, body)
        self.tokens = [*self.tokens, token][-10:]

    def step(self) -> None:
        rng = self.rng
        action = rng.choice(
            ["advance"] * 5
            + ["mint"] * 3
            + ["rotate", "revoke", "revoke_user", "mode", "setting", "service"]
        )
        if action == "advance":
            self.clock.advance(rng.choice([1, 1, 29, 31, 59, 61, 600, 3601, 86_401]))
        elif action == "mint":
            self.mint()
        elif action == "rotate":
            key, clear = Key.objects.rotate_secret(grace=rng.choice([0, 60, 3600]))
            self.secrets.append((key.kid, clear))
        elif action == "revoke":
            live = list(Key.objects.filter(revoked_at=None).values_list("kid", flat=True))
            kid = rng.choice(live)
            Key.objects.revoke(kid)
            if kid == self.public.kid:  # a site replaces its key pair
                self.slot += 1
                self.private = rsa_key(self.slot)
                self.public = Key.objects.add_public_key(public_pem(self.private))
        elif action == "revoke_user":
            RevokedUser.objects.revoke(rng.choice(["user-1", "user-2"]))
        elif action == "mode":
            SecurityConfig.set_enabled(rng.random() < 0.5)
        elif action == "setting" and rng.random() < 0.5:
            self.settings.CHAT_SECURITY = self.base
        elif action == "setting":
            self.settings.CHAT_SECURITY = {
                **self.base,
                rng.choice(["LEEWAY", "MAX_TOKEN_LIFETIME"]): rng.choice([0, 30, 7200, 100_000]),
                "AUDIENCE": rng.choice([None, None, "chat", ["chat", "x"]]),
                "ALLOWED_ALGORITHMS": rng.choice([["HS256", "RS256"], ["HS256"], ["RS256"]]),
                "REQUIRE_EXP": rng.random() < 0.8,
            }
        elif action == "service":
            self.services.append(Key.objects.generate_service_keypair(grace=rng.choice([0, 60])))


def _cold(token: str, **kwargs):
    remembered = dict(verified.MEMORY)
    verified.MEMORY.clear()
    try:
        return outcome(token, **kwargs)
    finally:
        verified.MEMORY.clear()
        verified.MEMORY.update(remembered)


@pytest.mark.parametrize("seed", range(8))
def test_remembered_and_cold_verification_always_agree(clock, settings, seed):
    world = _World(random.Random(seed), clock, settings)
    world.mint()
    hits = 0
    for _ in range(60):
        world.step()
        for token in world.tokens:
            for subject in (None, "user-1"):
                was_remembered = token in verified.MEMORY
                warm = outcome(token, session_subject=subject)
                assert warm == _cold(token, session_subject=subject), (token, subject)
                hits += was_remembered
    assert hits >= 10  # the sequence really exercised remembered tokens


# -- probes that found nothing, kept as regression tests ----------------------------------------


def test_rs256_header_with_an_hmac_signature_keyed_by_the_public_pem(clock):
    # Classic key confusion from the other side: alg stays RS256, the signature is
    # HMAC-SHA256 keyed with the registered public key's PEM text.
    private = rsa_key(1)
    public = Key.objects.add_public_key(public_pem(private))
    for header in ({"alg": "RS256"}, {"alg": "RS256", "kid": public.kid}):
        for pem in (public.public_pem, public_pem(private), public.public_pem.strip()):
            assert outcome(hs256(pem, claims(clock), header=header)) == "invalid_signature"


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        ('{"alg":"HS256","\\u0061lg":"HS256"}', None),  # "alg" twice once unescaped
        (None, '{"sub":"user-1","\\u0073ub":"user-2","exp":%d}'),
        (None, '\ufeff{"sub":"user-1","exp":%d}'),  # a byte-order mark
    ],
)
def test_escaped_duplicates_and_bom_are_malformed(clock, secret, header, payload):
    body = payload % (clock.t + 60) if payload else claims(clock)
    assert outcome(hs256(secret[1], body, header=header)) == "malformed"


@pytest.mark.django_db
def test_a_closed_connection_is_key_store_unavailable(monkeypatch):
    """InterfaceError is not a DatabaseError; the key store must still fail closed."""
    from django.db import InterfaceError

    from chat_security import keyring
    from chat_security.exceptions import KeyStoreUnavailable

    def closed(*args, **kwargs):
        raise InterfaceError("connection already closed")

    monkeypatch.setattr(keyring, "_build", closed)
    with pytest.raises(KeyStoreUnavailable):
        keyring.get_snapshot()
