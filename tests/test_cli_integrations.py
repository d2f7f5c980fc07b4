"""``manage.py chat_security`` and integrations (SPEC §13 "CLI"): ``integration
list|add|remove``, ``--integration`` on every key subcommand, site signing key
pairs, ``status``'s integrations and ``verify``'s ``"integration"``."""

from __future__ import annotations

import jwt
import pytest

from chat_security import keyring, middleware, tokens
from chat_security.exceptions import KeyStateError, TokenError
from chat_security.models import (
    AuditEntry,
    Contact,
    Integration,
    Key,
    RevokedUser,
    SecurityConfig,
)

from .test_cli import STATUS_FIELDS, cli
from .tokencraft import hs256, public_pem, rsa_key

pytestmark = pytest.mark.django_db

IOS = "https://ios.example"


def store_state() -> tuple:
    """Everything a subcommand could change, integrations and contacts included."""
    return (
        list(Integration.objects.order_by("pk").values_list()),
        list(Key.objects.order_by("pk").values_list()),
        list(RevokedUser.objects.order_by("pk").values_list()),
        list(Contact.objects.order_by("pk").values_list()),
        list(SecurityConfig.objects.order_by("pk").values_list()),
        AuditEntry.objects.count(),
    )


def ok(*args: str) -> dict:
    result = cli(*args)
    assert result.code == 0, (args, result.err)
    return result.json


def issued(*args: str) -> str:
    result = cli("issue", *args)
    assert result.code == 0, (args, result.err)
    return result.out.strip()


@pytest.fixture
def ios(clock):
    return ok("integration", "add", "ios", "--issuer", IOS, "--path", "/ios/api/")


@pytest.fixture
def brand_b(clock):
    return ok("integration", "add", "brand-b", "--own-users", "--path", "/b/api/")


# -- integration list / add / remove ------------------------------------------------------


def test_integration_add_prints_it_and_list_shows_every_one(clock):
    added = ok(
        "integration", "add", "ios", "--issuer", IOS, "--audience", "chat",
        "--path", "/ios/api/", "--path", "/ios/ws/",
    )  # fmt: skip
    assert added == {
        "name": "ios", "issuer": IOS, "audience": "chat", "mode": "on",
        "paths": ["/ios/api/", "/ios/ws/"], "user_space": "default", "own_users": False,
        "kids": [],
    }  # fmt: skip
    brand = ok("integration", "add", "brand-b", "--own-users")
    assert (brand["user_space"], brand["own_users"], brand["paths"]) == ("brand-b", True, [])
    assert (brand["issuer"], brand["audience"]) == (None, None)
    secret = ok("generate-secret", "--integration", "ios")["kid"]
    service = ok("generate-service-keypair", "--integration", "ios")["kid"]

    listed = ok("integration", "list")["integrations"]
    assert [i["name"] for i in listed] == ["default", "ios", "brand-b"]
    default, ios_entry, brand_entry = listed
    # default's rules come from the settings: PROTECTED_PATHS, ISSUER, AUDIENCE
    assert default == {
        "name": "default", "issuer": None, "audience": None, "mode": "on",
        "paths": ["/chat/api/"], "user_space": "default", "own_users": False, "kids": [],
    }  # fmt: skip
    assert ios_entry == {**added, "kids": ios_entry["kids"]}
    assert sorted(ios_entry["kids"]) == sorted([secret, service])
    assert brand_entry == {**brand, "kids": []}
    assert Integration.objects.get(name="ios").created_by == "cli"


def test_integration_list_shows_defaults_settings(clock, settings):
    settings.CHAT_SECURITY = {
        **settings.CHAT_SECURITY,
        "ISSUER": ["https://a.example", "https://b.example"],
        "AUDIENCE": "chat",
        "PROTECTED_PATHS": ["/chat/api/", "/support/api/"],
    }
    (default,) = ok("integration", "list")["integrations"]
    assert default["issuer"] == ["https://a.example", "https://b.example"]
    assert default["audience"] == "chat"
    assert default["paths"] == ["/chat/api/", "/support/api/"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("Bad",), ("integration name",)),
        (("a" * 51,), ("integration name",)),
        (("default",), ("already exists",)),
        (("ios",), ("already exists",)),
        (("web", "--path", "chat/"), ("path prefix",)),
        (("web", "--issuer", "x\ny"), ("issuer",)),
        (("web", "--audience", "a" * 256), ("audience",)),
        (("web", "--path"), ("--path",)),
        (("web", "--bogus"), ("unrecognized",)),
        ((), ("name",)),
    ],
)
def test_integration_add_bad_input(ios, args, words):
    before = store_state()
    cli("integration", "add", *args).assert_bad_input(*words)
    assert store_state() == before


def test_integration_remove(ios, brand_b):
    assert ok("integration", "remove", "brand-b") == {"name": "brand-b", "removed": True}
    assert not Integration.objects.filter(name="brand-b").exists()
    kid = ok("generate-secret", "--integration", "ios")["kid"]

    before = store_state()
    cli("integration", "remove", "ios").assert_bad_input("usable keys", kid)
    cli("integration", "remove", "default").assert_bad_input("cannot be removed")
    cli("integration", "remove", "brand-b").assert_bad_input("no integration")
    cli("integration", "remove").assert_bad_input()
    cli("integration").assert_bad_input()
    cli("integration", "rename", "ios").assert_bad_input("invalid choice")
    assert store_state() == before

    ok("revoke", kid)  # kids are unique: revoke needs no --integration
    assert ok("integration", "remove", "ios")["removed"] is True
    assert list(Integration.objects.values_list("name", flat=True)) == ["default"]
    assert not Key.objects.filter(kid=kid).exists()


# -- --integration on every key subcommand ---------------------------------------------------

UNKNOWN = [
    ("generate-secret",),
    ("rotate-secret",),
    ("rotate-secret", "--grace", "0"),
    ("add-public-key", "-"),
    ("generate-service-keypair",),
    ("generate-signing-keypair",),
    ("rotate-signing-key",),
    ("security", "off"),
    ("revoke-user", "alice"),
    ("delete-contact", "alice"),
    ("issue", "--sub", "alice"),
    ("verify", "x.y.z"),
]


@pytest.mark.parametrize("args", UNKNOWN, ids=lambda a: " ".join(a))
@pytest.mark.parametrize("name", ["nope", "Bad\nName", "-"])
def test_an_unknown_integration_is_refused_and_changes_nothing(clock, args, name):
    Key.objects.generate_secret()
    Contact.objects.create(user_id="alice")
    before = store_state()
    result = cli(*args, f"--integration={name}", stdin=public_pem(rsa_key(1)))
    result.assert_bad_input("no integration named")
    assert store_state() == before


def test_key_subcommands_act_on_the_named_integration(ios, tmp_path):
    ios_secret = ok("generate-secret", "--integration", "ios")
    # one active secret per integration: default may still have its first one
    default_secret = ok("generate-secret")
    cli("generate-secret", "--integration", "ios").assert_bad_input("rotate-secret")
    rotated = ok("rotate-secret", "--grace", "0", "--integration", "ios")
    pem = tmp_path / "client.pem"
    pem.write_text(public_pem(rsa_key(1)))
    public = ok("add-public-key", str(pem), "--integration", "ios")
    service = ok("generate-service-keypair", "--integration", "ios")
    signing = ok("generate-signing-keypair", "--integration", "ios")

    owner = dict(Key.objects.values_list("kid", "integration__name"))
    for data in (ios_secret, rotated, public, service, signing):
        assert owner[data["kid"]] == "ios"
    assert owner[default_secret["kid"]] == "default"
    assert Key.objects.get(kid=ios_secret["kid"]).state() == "retired"
    assert Key.objects.get(kid=default_secret["kid"]).state() == "active"
    assert Key.objects.filter(integration__name="default").count() == 1


def test_security_switch_per_integration(ios):
    assert ok("security", "off", "--integration", "ios") == {"mode": "off"}
    assert Integration.objects.get(name="ios").enabled is False
    assert Integration.objects.get(name="default").enabled is True
    status = ok("status")
    assert status["mode"] == "on"
    assert {i["name"]: i["mode"] for i in status["integrations"]} == {
        "default": "on",
        "ios": "off",
    }
    assert ok("security", "off") == {"mode": "off"}
    assert ok("security", "on", "--integration", "ios") == {"mode": "on"}
    assert ok("status")["mode"] == "off"
    action, detail = AuditEntry.objects.order_by("-pk").values_list("action", "detail")[0]
    assert (action, detail) == ("security_on", "integration ios")


# -- site signing key pairs ---------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_a_signing_key_pair_issues_tokens_verify_and_pyjwt_accept(alg):
    ok("integration", "add", "ios", "--issuer", IOS, "--audience", "chat")
    made = ok("generate-signing-keypair", "--alg", alg, "--integration", "ios")
    assert set(made) == {"kid", "alg", "public_key_pem", "state"}
    assert (made["alg"], made["state"]) == (alg, "active")
    assert made["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in str(made)

    token = issued("--sub", "alice", "--claims", '{"email": "a@example.com"}',
                   "--integration", "ios")  # fmt: skip
    header = jwt.get_unverified_header(token)
    assert (header["alg"], header["kid"]) == (alg, made["kid"])
    claims = jwt.decode(
        token, made["public_key_pem"], algorithms=[alg], audience="chat", issuer=IOS
    )
    assert (claims["sub"], claims["email"]) == ("alice", "a@example.com")

    for args in ((), ("--integration", "ios")):
        data = ok("verify", token, *args)
        assert (data["valid"], data["kid"], data["integration"]) == (True, made["kid"], "ios")
        assert data["header"]["alg"] == alg
    refused = cli("verify", token, "--integration", "default")
    assert refused.code == 1
    assert (refused.json["error"], refused.json["integration"]) == ("unknown_key", "default")


def test_a_staged_key_is_promoted_by_rotate_signing_key(ios, clock):
    first = ok("generate-signing-keypair", "--integration", "ios")
    assert (first["alg"], first["state"]) == ("RS256", "active")
    staged = ok("generate-signing-keypair", "--alg", "ES256", "--integration", "ios")
    assert (staged["alg"], staged["state"]) == ("ES256", "staged")
    old_token = issued("--sub", "alice", "--integration", "ios")
    assert jwt.get_unverified_header(old_token)["kid"] == first["kid"]  # staged never signs

    rotated = ok("rotate-signing-key", "--grace", "1", "--integration", "ios")
    assert rotated == {**staged, "state": "active"}
    new_token = issued("--sub", "alice", "--integration", "ios")
    assert jwt.get_unverified_header(new_token) == {
        "alg": "ES256", "kid": staged["kid"], "typ": "JWT",
    }  # fmt: skip
    assert ok("verify", new_token)["kid"] == staged["kid"]
    assert ok("verify", old_token)["kid"] == first["kid"]  # in grace: still verifies
    states = {k["kid"]: k["state"] for k in ok("status")["integrations"][1]["keys"]}
    assert states == {first["kid"]: "grace", staged["kid"]: "active"}

    clock.advance(3601)
    assert cli("verify", old_token).json["error"] == "key_retired"


def test_rotate_signing_key_without_a_staged_key_makes_one(ios):
    first = ok("generate-signing-keypair", "--alg", "ES256", "--integration", "ios")
    same_alg = ok("rotate-signing-key", "--grace", "0", "--integration", "ios")
    assert (same_alg["alg"], same_alg["state"]) == ("ES256", "active")
    assert same_alg["kid"] != first["kid"]
    assert Key.objects.get(kid=first["kid"]).state() == "retired"
    other = ok("rotate-signing-key", "--alg", "RS256", "--integration", "ios")
    assert (other["alg"], other["state"]) == ("RS256", "active")
    assert Key.objects.get(kid=same_alg["kid"]).state() == "grace"
    # default has no signing key pair: its first rotation just makes one
    made = ok("rotate-signing-key")
    assert (made["alg"], made["state"]) == ("RS256", "active")
    assert Key.objects.get(kid=made["kid"]).integration.name == "default"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("generate-signing-keypair", "--alg", "HS256"), ("invalid choice",)),
        (("generate-signing-keypair", "--alg", "es256"), ("invalid choice",)),
        (("generate-signing-keypair", "--grace", "1"), ("unrecognized",)),
        (("rotate-signing-key", "--alg", "EdDSA"), ("invalid choice",)),
        (("rotate-signing-key", "--grace", "-1"), ("grace",)),
        (("rotate-signing-key", "--grace", "nan"), ("grace",)),
    ],
)
def test_signing_key_bad_input(ios, args, words):
    ok("generate-signing-keypair", "--integration", "ios")
    ok("generate-signing-keypair", "--integration", "ios")  # a staged one to promote
    before = store_state()
    cli(*args, "--integration", "ios").assert_bad_input(*words)
    assert store_state() == before


# -- issue ----------------------------------------------------------------------------------


def test_issue_uses_the_integrations_secret_and_rules(clock):
    ok("integration", "add", "ios", "--issuer", IOS, "--audience", "chat")
    ios_kid = ok("generate-secret", "--integration", "ios")["kid"]
    default_kid = ok("generate-secret")["kid"]
    token = issued("--sub", "alice", "--integration", "ios")
    assert jwt.get_unverified_header(token)["kid"] == ios_kid
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["iss"], claims["aud"]) == (IOS, "chat")
    plain = issued("--sub", "alice")
    assert jwt.get_unverified_header(plain)["kid"] == default_kid
    assert "iss" not in jwt.decode(plain, options={"verify_signature": False})


def test_issue_for_an_integration_without_a_key(ios):
    before = store_state()
    cli("issue", "--sub", "alice", "--integration", "ios").assert_bad_input(
        "generate-secret --integration ios"
    )
    assert store_state() == before


# -- user spaces: revoke-user and delete-contact ------------------------------------------------


def test_revoke_user_in_an_integration_with_its_own_users(brand_b, clock):
    ok("generate-secret")
    ok("generate-secret", "--integration", "brand-b")
    ours = issued("--sub", "alice")
    theirs = issued("--sub", "alice", "--integration", "brand-b")
    clock.advance(5)

    data = ok("revoke-user", "alice", "--integration", "brand-b")
    assert (data["user_id"], data["user_space"]) == ("alice", "brand-b")
    refused = cli("verify", theirs, "--integration", "brand-b")
    assert (refused.json["error"], refused.json["integration"]) == ("token_revoked", "brand-b")
    accepted = ok("verify", ours, "--integration", "default")
    assert (accepted["valid"], accepted["integration"]) == (True, "default")
    assert list(RevokedUser.objects.values_list("user_space", "user_id")) == [("brand-b", "alice")]


def test_revoke_user_in_a_shared_user_space_reaches_default(ios, clock):
    ok("generate-secret")
    token = issued("--sub", "alice")
    clock.advance(5)
    assert ok("revoke-user", "alice", "--integration", "ios")["user_space"] == "default"
    assert cli("verify", token).json["error"] == "token_revoked"


@pytest.mark.parametrize(
    "args",
    [
        ("-alice", "--integration", "brand-b"),
        ("--integration", "brand-b", "-alice"),
        ("--integration=brand-b", "-alice"),
        ("-alice", "--integration=brand-b"),
        ("--integration", "brand-b", "--", "-alice"),
    ],
)
def test_identifier_and_integration_in_any_order(brand_b, args):
    data = ok("revoke-user", *args)
    assert (data["user_id"], data["user_space"]) == ("-alice", "brand-b")
    assert RevokedUser.objects.filter(user_space="brand-b", user_id="-alice").exists()
    Contact.objects.create(user_space="brand-b", user_id="-alice")
    assert ok("delete-contact", *args)["deleted"]["contact"] == 1


def test_an_identifier_that_looks_like_the_option(brand_b):
    data = ok("revoke-user", "--integration", "brand-b", "--", "--integration")
    assert (data["user_id"], data["user_space"]) == ("--integration", "brand-b")
    cli("revoke-user", "--integration").assert_bad_input("expected one argument")


def test_delete_contact_in_an_integrations_user_space(brand_b, ios):
    Contact.objects.create(user_id="alice", email="ours@example.com")
    Contact.objects.create(user_space="brand-b", user_id="alice", email="theirs@example.com")

    data = ok("delete-contact", "alice", "--integration", "brand-b")
    assert data["deleted"]["contact"] == 1
    assert list(Contact.objects.values_list("user_space", "email")) == [
        ("default", "ours@example.com")
    ]
    assert ok("delete-contact", "alice", "--integration", "brand-b")["deleted"] == {"contact": 0}
    # ios shares default's user space: its alice is default's
    assert ok("delete-contact", "alice", "--integration", "ios")["deleted"]["contact"] == 1
    assert not Contact.objects.exists()


# -- status ---------------------------------------------------------------------------------


def test_status_lists_every_integration_with_its_keys(ios, brand_b):
    default_kid = ok("generate-secret")["kid"]
    ios_secret = ok("generate-secret", "--integration", "ios")
    ios_signing = ok("generate-signing-keypair", "--alg", "ES256", "--integration", "ios")
    brand_kid = ok("generate-service-keypair", "--integration", "brand-b")["kid"]
    ok("security", "off", "--integration", "brand-b")

    result = cli("status")
    data = result.json
    # SPEC §7's fields stay the default integration's
    assert data["mode"] == "on"
    assert [k["kid"] for k in data["keys"]] == [default_kid]
    default, ios_entry, brand = data["integrations"]
    assert data["keys"] == default["keys"]
    assert {k: v for k, v in ios_entry.items() if k != "keys"} == {
        "name": "ios", "issuer": IOS, "audience": None, "mode": "on", "paths": ["/ios/api/"],
        "user_space": "default", "own_users": False, "enforce_at": None, "key_source": None,
    }  # fmt: skip
    assert (brand["name"], brand["mode"], brand["user_space"]) == ("brand-b", "off", "brand-b")
    by_kid = {k["kid"]: k for i in data["integrations"] for k in i["keys"]}
    assert set(by_kid) == {default_kid, ios_secret["kid"], ios_signing["kid"], brand_kid}
    for entry in by_kid.values():
        assert set(entry) >= STATUS_FIELDS | {"alg", "integration"}
    assert by_kid[default_kid]["integration"] == "default"
    assert (by_kid[ios_signing["kid"]]["kind"], by_kid[ios_signing["kid"]]["alg"]) == (
        "signing_key",
        "ES256",
    )
    assert by_kid[ios_secret["kid"]]["alg"] == "HS256"
    assert by_kid[brand_kid]["integration"] == "brand-b"
    assert ios_secret["secret"] not in result.out
    assert "PRIVATE" not in result.out


def test_status_costs_three_queries_however_many_integrations(clock, django_assert_num_queries):
    for name in ("a", "b", "c", "d"):
        ok("integration", "add", name)
        ok("generate-secret", "--integration", name)
    before = store_state()
    with django_assert_num_queries(
        3
    ):  # the keys and key sources with their integration, the integrations
        assert len(cli("status").json["integrations"]) == 5
    assert store_state() == before


# -- verify -----------------------------------------------------------------------------------


def test_verify_names_the_integration_that_judged_it(ios, clock):
    secret = Key.objects.generate_secret(integration="ios")[1]
    t = int(clock.t)
    token = hs256(secret, {"sub": "alice", "iss": IOS, "iat": t, "exp": t + 60})
    # none named: every integration, iss picks
    assert ok("verify", token)["integration"] == "ios"
    assert (
        ok("verify", token, "--integration", "ios", "--integration", "default")["integration"]
        == "ios"
    )
    refused = cli("verify", token, "--integration", "default")
    assert refused.code == 1
    assert (refused.json["error"], refused.json["integration"]) == (
        "security_not_configured",
        "default",
    )
    bad = hs256("not-the-secret", {"sub": "alice", "iss": IOS, "iat": t, "exp": t + 60})
    wrong = cli("verify", bad).json
    assert (wrong["error"], wrong["integration"]) == ("invalid_signature", "ios")
    malformed = cli("verify", "not-a-token")
    assert (malformed.json["error"], malformed.json["integration"]) == ("malformed", None)
    unknown = cli("verify", token, "--integration", "ios", "--integration", "nope")
    unknown.assert_bad_input("no integration named 'nope'")


def test_verify_without_integration_on_a_site_with_one_is_as_before(clock):
    _key, secret = Key.objects.generate_secret()
    t = int(clock.t)
    token = hs256(secret, {"sub": "alice", "iss": "https://anything.example", "exp": t + 60})
    data = ok("verify", token)
    assert (data["valid"], data["integration"]) == (True, "default")
    assert tokens.verify(token).integration == "default"


# -- integration set ----------------------------------------------------------------------


def listed(name: str) -> dict:
    return next(i for i in ok("integration", "list")["integrations"] if i["name"] == name)


def test_integration_set_changes_each_field_and_prints_it_as_list_does(ios, clock):
    kid = ok("generate-secret", "--integration", "ios")["kid"]
    changed = ok("integration", "set", "ios", "--issuer", "https://new.example")
    assert changed == listed("ios")
    assert (changed["issuer"], changed["audience"], changed["paths"], changed["kids"]) == (
        "https://new.example", None, ["/ios/api/"], [kid],
    )  # fmt: skip
    changed = ok("integration", "set", "ios", "--audience", "chat")
    assert (changed["issuer"], changed["audience"]) == ("https://new.example", "chat")
    changed = ok("integration", "set", "ios", "--path", "/app/", "--path", "/app/ws/")
    assert changed["paths"] == ["/app/", "/app/ws/"]
    assert changed["audience"] == "chat"
    changed = ok("integration", "set", "ios", "--no-paths", "--issuer", "", "--audience", "")
    assert (changed["issuer"], changed["audience"], changed["paths"]) == (None, None, [])
    assert (changed["user_space"], changed["mode"], changed["kids"]) == ("default", "on", [kid])
    row = Integration.objects.get(name="ios")
    assert (row.issuer, row.audience, row.paths) == ("", "", [])
    entries = AuditEntry.objects.filter(action="change_integration").order_by("pk")
    assert [e.detail for e in entries] == [
        "ios: issuer", "ios: audience", "ios: paths", "ios: issuer, audience, paths",
    ]  # fmt: skip
    assert {e.actor for e in entries} == {"cli"}


def test_integration_set_keeps_an_own_user_space(brand_b):
    changed = ok("integration", "set", "brand-b", "--issuer", "https://b.example")
    assert (changed["user_space"], changed["own_users"]) == ("brand-b", True)
    cli("integration", "set", "brand-b", "--own-users").assert_bad_input("unrecognized")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("default", "--issuer", IOS), ("ISSUER", "setting")),
        (("default", "--path", "/x/"), ("PROTECTED_PATHS", "setting")),
        (("nope", "--issuer", IOS), ("no integration named 'nope'",)),
        (("ios", "--path", "chat/"), ("path prefix",)),
        (("ios", "--path", "/" + "a" * 200), ("at most 200",)),
        (("ios", *[a for i in range(21) for a in ("--path", f"/p{i}/")]), ("at most 20",)),
        (("ios", "--issuer", "x\ny"), ("issuer",)),
        (("ios", "--audience", "a" * 256), ("audience",)),
        (("ios", "--issuer", IOS, "--audience", "a\tb"), ("audience",)),
        (("ios", "--path", "/a/", "--no-paths"), ("not allowed with",)),
        (("ios", "--path"), ("--path",)),
        (("ios", "--user-space", "x"), ("unrecognized",)),
        ((), ("name",)),
    ],
)
def test_integration_set_bad_input_changes_nothing(ios, args, words):
    ok("generate-secret", "--integration", "ios")
    before = store_state()
    cli("integration", "set", *args).assert_bad_input(*words)
    assert store_state() == before


def test_the_change_is_in_force_for_verification(ios, clock):
    secret = Key.objects.generate_secret(integration="ios")[1]
    t = int(clock.t)
    old = hs256(secret, {"sub": "alice", "iss": IOS, "iat": t, "exp": t + 600})
    new = hs256(secret, {"sub": "alice", "iss": "https://new.example", "iat": t, "exp": t + 600})
    assert tokens.verify(old, integration="ios").integration == "ios"
    assert middleware.serving("/app/chat", keyring.get_snapshot()) == ()

    ok("integration", "set", "ios", "--issuer", "https://new.example", "--path", "/app/")

    assert tokens.verify(new, integration="ios").integration == "ios"
    with pytest.raises(TokenError) as refused:
        tokens.verify(old, integration="ios")
    assert refused.value.code == "invalid_claim"
    assert middleware.serving("/app/chat", keyring.get_snapshot()) == ("ios",)
    assert middleware.serving("/ios/api/chat", keyring.get_snapshot()) == ()


def test_change_from_python_leaves_what_is_none_and_refuses_a_string_of_paths(ios):
    before = store_state()
    with pytest.raises(KeyStateError, match="list of path prefixes"):
        Integration.objects.change("ios", paths="/app/")
    with pytest.raises(KeyStateError, match="change the setting"):
        Integration.objects.change("default", audience="chat")
    assert store_state() == before
    row = Integration.objects.change("ios", paths=("/a/", "/a/"), actor="admin")
    assert (row.issuer, row.audience, row.paths, row.user_space) == (IOS, "", ["/a/"], "default")
    assert AuditEntry.objects.get(action="change_integration").actor == "admin"
