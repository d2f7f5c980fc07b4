"""``manage.py chat_security`` (SPEC §7): in-process with call_command, and as a real process."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from joserfc import jwe
from joserfc.jwk import RSAKey

from chat_security import tokens
from chat_security.exceptions import ERROR_CODES, HINTS
from chat_security.models import AuditEntry, Contact, Key, RevokedUser, SecurityConfig
from tests.chat_helpers import stored_secret

from .servers import LANE_VARIABLES
from .tokencraft import hs256, private_pem, public_pem, rsa_key, segment

ROOT = Path(settings.BASE_DIR)
IDENTITY_FIELDS = {
    "user_id", "email", "first_name", "last_name", "phone", "locale", "crm_id",
    "user_data", "agent_data", "private_keys", "ignored",
}  # fmt: skip
STATUS_FIELDS = {"kid", "kind", "state", "fingerprint", "grace_until", "last_used", "use_count"}


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def json(self):
        assert self.out.count("\n") <= 1, self.out
        return json.loads(self.out)

    def assert_bad_input(self, *words: str) -> None:
        """Exit 2, one line on stderr, nothing on stdout, no traceback."""
        assert self.code == 2, (self.code, self.out, self.err)
        assert self.out == ""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err
        for word in words:
            assert word.lower() in lines[0].lower(), lines[0]


def cli(*args: str, stdin: str | bytes | None = None, text_stdin: bool = False) -> Result:
    """call_command with the exit code a shell would see."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    if stdin is not None:
        raw = stdin.encode() if isinstance(stdin, str) else stdin
        sys.stdin = io.StringIO(raw.decode()) if text_stdin else io.TextIOWrapper(io.BytesIO(raw))
    try:
        call_command("chat_security", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    except CommandError as exc:
        code = exc.returncode
        err.write(f"CommandError: {exc}\n")
    finally:
        sys.stdin = saved
    return Result(code, out.getvalue(), err.getvalue())


def store_state() -> tuple:
    """Everything a subcommand could change."""
    return (
        list(Key.objects.order_by("pk").values_list()),
        list(RevokedUser.objects.order_by("pk").values_list()),
        list(SecurityConfig.objects.order_by("pk").values_list()),
        AuditEntry.objects.count(),
    )


@pytest.fixture
def secret(clock):
    return Key.objects.generate_secret()


def claims(clock, **extra) -> dict:
    t = int(clock.t)
    return {"sub": "user-1", "iat": t, "exp": t + 3600, **extra}


pytestmark = pytest.mark.django_db


# -- verify --------------------------------------------------------------------------


def test_verify_valid(clock, secret):
    key, clear = secret
    service = Key.objects.generate_service_keypair()
    private = jwe.encrypt_compact(
        {"alg": "RSA-OAEP-256", "enc": "A256GCM"},
        b'{"account": "A-1", "ssn": "ssn-value-9931"}',
        RSAKey.import_key(service.public_pem),
        algorithms=["RSA-OAEP-256", "A256GCM"],
    )
    token = hs256(
        clear,
        claims(
            clock,
            sub="user-42",
            email="jane@example.com",
            name="Jane Doe",
            locale="en-GB",
            user_payload=private,
        ),
    )
    result = cli("verify", token)
    assert result.code == 0, result.err
    data = result.json
    assert data["valid"] is True
    assert data["header"] == {"alg": "HS256", "typ": "JWT"}
    assert data["claims"]["sub"] == "user-42"
    assert data["kid"] == key.kid
    identity = data["identity"]
    assert set(identity) == IDENTITY_FIELDS
    assert identity["user_id"] == "user-42"
    assert identity["email"] == "jane@example.com"
    assert (identity["first_name"], identity["last_name"]) == ("Jane", "Doe")
    assert identity["locale"] == "en-GB"
    assert sorted(identity["private_keys"]) == ["account", "ssn"]
    assert "ssn-value-9931" not in result.out  # private values never printed
    assert isinstance(identity["ignored"], list)


def test_verify_reports_dropped_identity_values(clock, secret):
    token = hs256(secret[1], claims(clock, email="not-an-email", phone="call me"))
    identity = cli("verify", token).json["identity"]
    assert identity["email"] in (None, "")
    dropped = {item["field"] for item in identity["ignored"]}
    assert {"email", "phone"} <= dropped
    assert all(set(item) >= {"field", "reason"} for item in identity["ignored"])


def test_verify_does_not_count_use(clock, secret):
    cli("verify", tokens.issue("user-1"))
    cli("status")
    assert Key.objects.get(kid=secret[0].kid).use_count == 0


def test_verify_invalid(clock, secret):
    result = cli("verify", hs256("wrong", claims(clock)))
    assert result.code == 1
    assert result.json == {
        "valid": False,
        "error": "invalid_signature",
        "detail": ERROR_CODES["invalid_signature"],
        "hints": [
            "The signature matches no key known here, usable or not. " + HINTS["invalid_signature"]
        ],
        "integration": "default",
    }
    assert result.err == ""


def test_verify_gives_the_admin_testers_hints(clock, secret):
    """Issue 17, item 9: one diagnosis (chat_security.diagnosis) for the tester and the CLI."""
    from chat_security.diagnosis import diagnose

    old_key, old_value = secret
    Key.objects.rotate_secret(grace=0)
    cases = [
        hs256(old_value, claims(clock)),  # signed with the retired secret, no kid
        hs256(old_value, claims(clock, exp=int(clock.t) - 3600)),  # and expired
        "Bearer " + tokens.issue("user-1"),  # the tester's paste mistakes
        '"' + tokens.issue("user-1") + '"',
    ]
    for token in cases:
        result = cli("verify", token)
        assert result.code == 1
        assert result.json["hints"] == diagnose(token).hints != []
    retired = cli("verify", cases[0]).json["hints"][0]
    assert f"Signed with signing secret {old_key.kid}, retired" in retired
    assert "Remove the 'Bearer ' prefix" in cli("verify", cases[2]).json["hints"][0]


@pytest.mark.parametrize(
    "name",
    [
        "verify",
        "issue",
        "security",
        "generate-secret",
        "rotate-secret",
        "add-public-key",
        "generate-service-keypair",
        "revoke",
        "revoke-user",
        "delete-contact",
        "status",
        "generate-encryption-key",
        "reencrypt",
        "generate-signing-keypair",
        "rotate-signing-key",
        "rotate-due",
        "integration",
        "integration list",
        "integration add",
        "integration remove",
    ],
)
def test_every_subcommand_help_says_what_it_does(name, capsys):
    with pytest.raises(SystemExit) as done:
        call_command("chat_security", *name.split(), "--help")
    assert done.value.code == 0
    usage, _, rest = capsys.readouterr().out.partition("\n\n")
    description = rest.split("\n\n")[0]
    assert usage.startswith(f"usage: chat_security {name}") and description.strip()
    assert not description.startswith(("positional arguments", "options"))


def test_verify_empty_string_is_missing_token(clock):
    result = cli("verify", "")
    assert (result.code, result.json["error"]) == (1, "missing_token")


@pytest.mark.parametrize("text_stdin", [False, True])
def test_verify_reads_stdin(clock, secret, text_stdin):
    token = tokens.issue("user-1")
    result = cli("verify", "-", stdin=token + "\n", text_stdin=text_stdin)
    assert result.code == 0
    assert result.json["claims"]["sub"] == "user-1"
    assert cli("verify", "-", stdin="", text_stdin=text_stdin).json["error"] == "missing_token"


def test_verify_stdin_with_undecodable_bytes(clock, secret):
    result = cli("verify", "-", stdin=b"\xff\xfe.\x80.\x81")
    assert (result.code, result.json["error"]) == (1, "malformed")


def test_verify_output_is_ascii_json_even_for_odd_claims(clock, secret):
    note = '"\\ud800 caf\\u00e9"'  # a lone surrogate and an escaped é, as raw JSON
    token = hs256(secret[1], f'{{"sub":"user-1","exp":{int(clock.t) + 60},"note":{note}}}')
    result = cli("verify", token)
    assert result.code == 0
    assert result.out.isascii()
    assert result.json["claims"]["note"] == "\ud800 café"


def _every_code(clock, secret_pair) -> dict[str, tuple[str, ...]]:
    """For each §4 code, CLI arguments that produce it."""
    old_key, old_secret = secret_pair
    cli("rotate-secret", "--grace", "0")
    new_secret = stored_secret(Key.objects.active("secret")[0])
    revoked = tokens.issue("user-revoked")
    clock.advance(5)
    cli("revoke-user", "user-revoked")
    now = int(clock.t)
    ok = {"sub": "user-1", "iat": now, "exp": now + 3600}
    sign = lambda c, **h: hs256(new_secret, c, **h)  # noqa: E731
    return {
        "missing_token": ("verify", ""),
        "token_too_large": ("verify", "x" * 8193),
        "malformed": ("verify", "not.a-token"),
        "algorithm_not_allowed": ("verify", f"{segment({'alg': 'none'})}.{segment(ok)}."),
        "unknown_key": ("verify", sign(ok, kid="hs-000000000000")),
        "key_retired": ("verify", hs256(old_secret, ok, kid=old_key.kid)),
        "invalid_signature": ("verify", hs256("not-the-secret", ok)),
        "missing_claim": ("verify", sign({"sub": "user-1"})),
        "expired": ("verify", sign({**ok, "iat": now - 7200, "exp": now - 3600})),
        "not_yet_valid": ("verify", sign({**ok, "nbf": now + 600})),
        "lifetime_too_long": ("verify", sign({**ok, "exp": now + 30 * 86400})),
        "invalid_claim": ("verify", sign({**ok, "sub": "a\tb"})),
        "subject_changed": ("verify", sign(ok), "--session-subject", "someone-else"),
        "token_revoked": ("verify", revoked),
        "payload_decryption_failed": ("verify", sign({**ok, "user_payload": "garbage"})),
        "unknown_issuer": _unknown_issuer(sign, ok),
    }


def _unknown_issuer(sign, ok) -> tuple[str, ...]:
    """``verify --integration`` names two integrations; the token's iss names neither."""
    cli("integration", "add", "ios", "--issuer", "https://ios.example")
    cli("integration", "add", "android", "--issuer", "https://android.example")
    token = sign({**ok, "iss": "https://web.example"})
    return ("verify", token, "--integration", "ios", "--integration", "android")


@pytest.mark.parametrize("code", [c for c in ERROR_CODES if c != "security_not_configured"])
def test_every_error_code_through_verify(clock, secret, code):
    args = _every_code(clock, secret)[code]
    result = cli(*args)
    assert result.code == 1, result.err
    data = result.json
    assert (data["valid"], data["error"]) == (False, code)
    assert data["detail"] and "\n" not in data["detail"]


def test_security_not_configured_through_verify(clock):
    token = hs256("some-secret", claims(clock))
    result = cli("verify", token)
    assert (result.code, result.json["error"]) == (1, "security_not_configured")


# -- issue ---------------------------------------------------------------------------


def test_issue(clock, secret):
    key, clear = secret
    result = cli(
        "issue", "--sub", "user-7", "--claims", '{"email": "a@example.com"}', "--ttl", "60"
    )
    assert result.code == 0
    token = result.out.strip()
    assert result.out == token + "\n" and token.count(".") == 2
    assert jwt.get_unverified_header(token)["kid"] == key.kid
    decoded = jwt.decode(token, clear, algorithms=["HS256"], options={"verify_iat": False})
    t = int(clock.t)
    assert decoded == {"email": "a@example.com", "sub": "user-7", "iat": t, "exp": t + 60}


def test_issue_default_ttl(clock, secret):
    token = cli("issue", "--sub", "user-7").out.strip()
    assert tokens.verify(token).claims["exp"] == int(clock.t) + 3600


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--sub", "u", "--ttl", "0"), ("ttl",)),
        (("--sub", "u", "--ttl", "-5"), ("ttl",)),
        (("--sub", "u", "--ttl", "999999999"), ("ttl",)),
        (("--sub", "u", "--ttl", "abc"), ("ttl",)),
        (("--sub", "u", "--ttl", "1.5"), ("ttl",)),
        (("--sub", "u", "--claims", "{not json"), ("claims",)),
        (("--sub", "u", "--claims", "[1, 2]"), ("claims",)),
        (("--sub", "u", "--claims", '"x"'), ("claims",)),
        (("--sub", "u", "--claims", '{"x": NaN}'), ("claims",)),
        (("--sub", "u", "--claims", "[" * 100_000), ("claims",)),
        (("--sub", "u", "--claims", '{"blob": "%s"}' % ("x" * 9000)), ()),
        (("--sub", "u", "--claims", '{"exp": 9999999999}'), ("exp", "--ttl")),
        (("--sub", "u", "--claims", '{"iat": 1}'), ("iat", "--ttl")),
        (("--sub", "u", "--claims", '{"sub": "other"}'), ("sub", "--sub")),
        (("--sub", "u", "--claims", '{"userId": "other"}'), ("userId", "--sub")),
        (("--sub", ""), ("sub",)),
        (("--sub", "a\nb"), ("sub",)),
        (("--sub", "x" * 256), ("sub",)),
        (("--sub", " padded"), ("sub",)),
        ((), ("sub",)),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_issue_bad_input(clock, secret, args, words):
    before = store_state()
    cli("issue", *args).assert_bad_input(*words)
    assert store_state() == before


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        ('{"iss": 5}', ("invalid_claim", "iss")),
        ('{"nbf": "x"}', ("invalid_claim", "nbf")),
        ('{"nbf": 99999999999}', ("not_yet_valid", "nbf")),
        ('{"user_payload": "x"}', ("payload_decryption_failed",)),
        ('{"blob": "%s"}' % ("x" * 9000), ("token_too_large",)),
    ],
    ids=["iss-int", "nbf-string", "nbf-future", "user_payload", "too-large"],
)
def test_issue_refuses_a_token_verify_would_refuse(clock, secret, claims, words):
    before = store_state()
    cli("issue", "--sub", "u", "--claims", claims).assert_bad_input(*words)
    assert store_state() == before


def test_issue_without_a_secret(clock):
    cli("issue", "--sub", "u").assert_bad_input("generate-secret")


# -- security switch ----------------------------------------------------------------------


def test_security_on_off(clock):
    assert cli("security", "off").json == {"mode": "off"}
    assert SecurityConfig.load().enabled is False
    assert cli("status").json["mode"] == "off"
    assert cli("security", "on").json == {"mode": "on"}
    assert SecurityConfig.load().enabled is True
    assert AuditEntry.objects.filter(actor="cli", action__startswith="security_").count() == 2


@pytest.mark.parametrize("args", [("security",), ("security", "maybe"), ("security", "ON")])
def test_security_bad_input(clock, args):
    before = store_state()
    cli(*args).assert_bad_input()
    assert store_state() == before


# -- secrets ---------------------------------------------------------------------------


def test_generate_secret(clock):
    result = cli("generate-secret")
    data = result.json
    assert set(data) == {"kid", "secret"}
    key = Key.objects.get(kid=data["kid"])
    assert stored_secret(key) == data["secret"]
    assert key.created_by == "cli"


def test_generate_secret_twice_points_to_rotate(clock, secret):
    before = store_state()
    cli("generate-secret").assert_bad_input("rotate-secret")
    assert store_state() == before


@pytest.mark.parametrize(("grace", "seconds"), [("0", 0), ("48", 48 * 3600), ("1.5", 5400)])
def test_rotate_secret_grace(clock, secret, grace, seconds):
    old, old_secret = secret
    data = cli("rotate-secret", "--grace", grace).json
    assert set(data) == {"kid", "secret"} and data["kid"] != old.kid
    old.refresh_from_db()
    assert old.grace_until.timestamp() == clock.t + seconds
    assert old.state() == ("retired" if seconds == 0 else "grace")
    token = hs256(old_secret, claims(clock), kid=old.kid)
    expected = "key_retired" if seconds == 0 else None
    verdict = cli("verify", token).json
    assert verdict.get("error") == expected


def test_rotate_secret_default_grace(clock, secret):
    cli("rotate-secret")
    old = Key.objects.get(kid=secret[0].kid)
    assert old.grace_until.timestamp() == clock.t + 48 * 3600


@pytest.mark.parametrize("grace", ["-1", "abc", "nan", "inf", "1e9", ""])
def test_rotate_secret_bad_grace(clock, secret, grace):
    before = store_state()
    cli("rotate-secret", "--grace", grace).assert_bad_input("grace")
    assert store_state() == before


# -- public keys ------------------------------------------------------------------------


def test_add_public_key_file_and_stdin(clock, tmp_path):
    path = tmp_path / "public.pem"
    path.write_text(public_pem(rsa_key(1)))
    data = cli("add-public-key", str(path)).json
    assert set(data) == {"kid", "fingerprint"}
    assert Key.objects.get(kid=data["kid"]).kind == "public_key"

    second = cli("add-public-key", "-", stdin=public_pem(rsa_key(2))).json
    assert second["kid"] != data["kid"]
    assert Key.objects.filter(kind="public_key").count() == 2


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("garbage", ("unrecognised",)),
        ("", ("no key",)),
        (None, ("private key",)),  # the private key itself
        ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", ("read",)),
    ],
    ids=["garbage", "empty", "private", "broken-pem"],
)
def test_add_public_key_bad_file(clock, tmp_path, content, words):
    path = tmp_path / "key.txt"
    path.write_text(private_pem(rsa_key(1)) if content is None else content)
    before = store_state()
    cli("add-public-key", str(path)).assert_bad_input(*words)
    cli("add-public-key", "-", stdin=path.read_bytes()).assert_bad_input(*words)
    assert store_state() == before


def test_add_public_key_missing_file_and_duplicates(clock, tmp_path):
    cli("add-public-key", str(tmp_path / "nope.pem")).assert_bad_input("cannot read")
    cli("add-public-key", "-", stdin=public_pem(rsa_key(1)))
    before = store_state()
    cli("add-public-key", "-", stdin=public_pem(rsa_key(1))).assert_bad_input("already")
    assert store_state() == before


# -- service key pair ----------------------------------------------------------------------


def test_generate_service_keypair(clock):
    data = cli("generate-service-keypair").json
    assert set(data) == {"kid", "public_key_pem"}
    assert data["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in json.dumps(data)
    again = cli("generate-service-keypair", "--grace", "0").json
    assert Key.objects.get(kid=data["kid"]).state() == "retired"
    assert Key.objects.get(kid=again["kid"]).state() == "active"


def test_generate_service_keypair_bad_grace(clock):
    before = store_state()
    cli("generate-service-keypair", "--grace", "-3").assert_bad_input("grace")
    assert store_state() == before


# -- revocation ---------------------------------------------------------------------------


def test_revoke(clock, secret):
    data = cli("revoke", secret[0].kid).json
    assert data == {"kid": secret[0].kid, "state": "revoked"}
    before = store_state()
    cli("revoke", secret[0].kid).assert_bad_input("already revoked")
    cli("revoke", "hs-unknown").assert_bad_input("no key")
    cli("revoke").assert_bad_input()
    assert store_state() == before


@pytest.mark.parametrize("kid", ["-Kx3q", "--looks-like-an-option", "-v1", "-1"])
def test_revoke_a_kid_that_starts_with_a_dash(clock, kid):
    # An RFC 7638 thumbprint is base64url: 1 public key in 64 gets a kid starting with "-".
    Key.objects.add_public_key(public_pem(rsa_key(1)), kid=kid)
    assert cli("revoke", kid).json == {"kid": kid, "state": "revoked"}
    assert Key.objects.get(kid=kid).revoked_at is not None
    cli("revoke", "--", kid).assert_bad_input("already revoked")


def test_identifier_subcommands_still_offer_help(clock):
    for name in ("revoke", "revoke-user", "delete-contact"):
        with pytest.raises(SystemExit) as done:
            call_command("chat_security", name, "--help", stdout=io.StringIO())
        assert done.value.code == 0


def test_user_ids_that_start_with_a_dash(clock, secret):
    assert cli("revoke-user", "-alice").json["user_id"] == "-alice"
    assert RevokedUser.objects.filter(user_id="-alice").exists()
    Contact.objects.create(user_id="-1", email="a@example.com")
    assert cli("delete-contact", "-1").code == 0
    assert not Contact.objects.filter(user_id="-1").exists()


def test_revoke_user(clock, secret):
    older = tokens.issue("user-1")
    clock.advance(5)
    data = cli("revoke-user", "user-1").json
    assert data["user_id"] == "user-1" and data["revoked_at"]
    assert cli("verify", older).json["error"] == "token_revoked"
    clock.advance(1)
    assert cli("verify", tokens.issue("user-1")).json["valid"] is True


@pytest.mark.parametrize("user_id", ["", " x", "a\tb", "x" * 256])
def test_revoke_user_bad_id(clock, user_id):
    before = store_state()
    cli("revoke-user", user_id).assert_bad_input("user id")
    assert store_state() == before


# -- status ------------------------------------------------------------------------------


def test_status(clock, secret):
    _old, old_secret = secret
    _new, new_secret = Key.objects.rotate_secret()
    Key.objects.add_public_key(public_pem(rsa_key(1)))
    Key.objects.generate_service_keypair()
    tokens.verify(tokens.issue("user-1"))  # counted in memory; status flushes it
    result = cli("status")
    data = result.json
    assert data["mode"] == "on"
    assert {k["kind"] for k in data["keys"]} == {"secret", "public_key", "service_key"}
    for entry in data["keys"]:
        assert set(entry) >= STATUS_FIELDS
        assert entry["state"] in ("active", "grace", "retired", "revoked")
    states = {k["kid"]: k for k in data["keys"]}
    assert states[secret[0].kid]["state"] == "grace"
    assert states[secret[0].kid]["grace_until"]
    assert states[_new.kid]["use_count"] == 1 and states[_new.kid]["last_used"]
    for clear in (old_secret, new_secret):
        assert clear not in result.out
        assert clear[:12] not in result.out
    assert "PRIVATE" not in result.out


def test_status_on_a_fresh_install(clock):
    default = {
        "name": "default", "issuer": None, "audience": None, "mode": "on",
        "paths": ["/chat/api/"], "user_space": "default", "own_users": False,
        "enforce_at": None, "keys": [], "key_source": None,
    }  # fmt: skip
    assert cli("status").json == {"mode": "on", "keys": [], "integrations": [default]}


# -- the parser -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [(), ("frobnicate",), ("verify",), ("issue", "--sub", "u", "--bogus", "1")]
)
def test_usage_errors(clock, args):
    cli(*args).assert_bad_input()


def test_delete_contact(clock):
    Contact.objects.create(user_id="user-1", email="a@example.com")
    result = cli("delete-contact", "user-1")
    assert result.code == 0
    assert not Contact.objects.filter(user_id="user-1").exists()


# -- a real process ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory) -> Path:
    """A demo-site database, migrated once, copied per test."""
    path = tmp_path_factory.mktemp("clidb") / "template.sqlite3"
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=_env(path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return path


def _env(db: Path) -> dict[str, str]:
    # The demo's settings on the SQLite file ``db`` only: in the PostgreSQL lane the
    # services' URLs are in the environment, and a Redis cache shared by every test's
    # processes would outlive each test's file.
    env = {k: v for k, v in os.environ.items() if not k.startswith(LANE_VARIABLES)}
    env.update(
        DJANGO_SETTINGS_MODULE="demo_site.settings",
        DATABASE_URL=f"sqlite:///{db}",
        SECRET_KEY="cli-subprocess-tests-secret-key-0123456789abcdef",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


@pytest.fixture
def manage(migrated_db, tmp_path):
    db = tmp_path / "db.sqlite3"
    shutil.copy(migrated_db, db)

    def run(*args: str, stdin: str | None = None) -> Result:
        done = subprocess.run(
            [sys.executable, "manage.py", "chat_security", *args],
            cwd=ROOT,
            env=_env(db),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    return run


def test_process_secret_issue_verify(manage):
    generated = manage("generate-secret")
    assert generated.code == 0 and generated.err == ""
    kid = generated.json["kid"]
    manage("generate-secret").assert_bad_input("rotate-secret")

    issued = manage("issue", "--sub", "user-1", "--claims", '{"name": "Jane Doe"}')
    assert issued.code == 0 and issued.err == ""
    token = issued.out.strip()
    assert issued.out == token + "\n"

    valid = manage("verify", token)
    assert valid.code == 0, valid.err
    data = valid.json
    assert data["valid"] is True and data["kid"] == kid == data["header"]["kid"]
    assert data["claims"]["sub"] == "user-1"
    assert set(data["identity"]) == IDENTITY_FIELDS
    assert data["identity"]["first_name"] == "Jane"

    piped = manage("verify", "-", stdin=token + "\n")
    assert piped.code == 0 and piped.json["valid"] is True

    empty = manage("verify", "")
    assert (empty.code, empty.json["error"]) == (1, "missing_token")
    tampered = manage("verify", token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB"))
    assert tampered.code == 1 and tampered.json["error"] in ("invalid_signature", "malformed")
    assert set(tampered.json) == {"valid", "error", "detail", "hints", "integration"}


def test_process_bad_input(manage, tmp_path):
    assert manage("generate-secret").code == 0
    before = manage("status").json
    manage("issue", "--sub", "user-1", "--ttl", "99999999").assert_bad_input("ttl")
    manage("issue", "--sub", "user-1", "--claims", "{oops").assert_bad_input("claims")
    manage("issue", "--sub", "user-1", "--claims", '{"iss": 5}').assert_bad_input("invalid_claim")
    manage("rotate-secret", "--grace", "-1").assert_bad_input("grace")
    manage("rotate-secret", "--grace", "abc").assert_bad_input("grace")
    bad = tmp_path / "bad.pem"
    bad.write_text(private_pem(rsa_key(1)))
    manage("add-public-key", str(bad)).assert_bad_input("private key")
    manage("revoke", "hs-unknown").assert_bad_input("no key")
    manage().assert_bad_input()
    assert manage("status").json == before


def test_process_keys_and_status(manage, tmp_path):
    secret = manage("generate-secret").json["secret"]
    rotated = manage("rotate-secret", "--grace", "0").json
    pub = tmp_path / "id.pem"
    pub.write_text(public_pem(rsa_key(1)))
    added = manage("add-public-key", "-", stdin=pub.read_text()).json
    service = manage("generate-service-keypair").json
    assert manage("security", "off").json == {"mode": "off"}
    revoked = manage("revoke", added["kid"])
    assert revoked.code == 0, revoked.err
    assert revoked.json["state"] == "revoked"
    user = manage("revoke-user", "user-9")
    assert user.code == 0 and user.json["user_id"] == "user-9"
    dashed = manage(
        "add-public-key",
        "-",
        stdin=json.dumps(
            {**RSAKey.import_key(public_pem(rsa_key(2))).as_dict(private=False), "kid": "-dashed"}
        ),
    ).json
    assert manage("revoke", dashed["kid"]).json == {"kid": "-dashed", "state": "revoked"}

    status = manage("status")
    assert status.code == 0
    data = status.json
    assert data["mode"] == "off"
    by_kid = {k["kid"]: k for k in data["keys"]}
    assert by_kid[rotated["kid"]]["state"] == "active"
    assert by_kid[added["kid"]]["state"] == "revoked"
    assert by_kid[service["kid"]]["kind"] == "service_key"
    assert [k["state"] for k in data["keys"] if k["kind"] == "secret"].count("retired") == 1
    for entry in data["keys"]:
        assert set(entry) >= STATUS_FIELDS
    for clear in (secret, rotated["secret"]):
        assert clear not in status.out


def test_process_integrations(manage):
    """SPEC §13 from a shell: the nested ``integration`` parser, ``--integration``
    anywhere, a signing key pair's token verified by the CLI and by PyJWT."""
    added = manage("integration", "add", "ios", "--issuer", "https://ios.example", "--own-users")
    assert added.code == 0 and added.err == "", added.err
    assert (added.json["name"], added.json["user_space"]) == ("ios", "ios")
    made = manage("generate-signing-keypair", "--integration", "ios", "--alg", "ES256")
    assert made.code == 0 and made.err == "", made.err
    assert (made.json["alg"], made.json["state"]) == ("ES256", "active")
    token = manage("issue", "--integration", "ios", "--sub", "alice").out.strip()
    claims = jwt.decode(token, made.json["public_key_pem"], algorithms=["ES256"])
    assert (claims["sub"], claims["iss"]) == ("alice", "https://ios.example")
    verified = manage("verify", token)
    assert verified.code == 0, verified.err
    assert (verified.json["integration"], verified.json["kid"]) == ("ios", made.json["kid"])
    assert manage("revoke-user", "--integration", "ios", "-alice").json["user_space"] == "ios"

    before = manage("status").json
    assert [i["name"] for i in before["integrations"]] == ["default", "ios"]
    manage("integration", "add", "Bad").assert_bad_input("integration name")
    manage("integration", "frobnicate").assert_bad_input("invalid choice")
    manage("integration").assert_bad_input()
    manage("integration", "remove", "ios").assert_bad_input("usable keys")
    manage("generate-signing-keypair", "--alg", "HS256").assert_bad_input("invalid choice")
    manage("generate-secret", "--integration", "nope").assert_bad_input("no integration")
    manage("revoke-user", "alice", "--integration").assert_bad_input("expected one argument")
    manage("verify", token, "--integration", "nope").assert_bad_input("no integration")
    assert manage("status").json == before


def test_process_unmigrated_database_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "manage.py", "chat_security", "generate-secret"],
        cwd=ROOT,
        env=_env(tmp_path / "empty.sqlite3"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    Result(done.returncode, done.stdout, done.stderr).assert_bad_input("migrate")
