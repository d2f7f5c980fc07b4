"""Key hygiene (SPEC §15, issue 20 item 5): the age check W009, the panel's notice and
``rotate-due``, with ``ROTATION_REMINDER_DAYS`` (E025)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat_security import deploy_checks, hygiene, keys, tokens
from chat_security.exceptions import TokenError
from chat_security.models import Integration, Key, KeyKind, KeySource, KeyState

from .test_admin_permissions import BASE, client_for
from .test_checks import ids
from .test_cli import cli, store_state
from .tokencraft import chat_settings, hs256, public_pem, rsa_key

pytestmark = pytest.mark.django_db

DAY = 86400
#: Past the default reminder of 90 days.
OLD = 91 * DAY


def make_keys(integration: str = "default") -> dict[str, Key]:
    """One key of each kind the integration can hold, plus a staged signing key."""
    secret, _value = Key.objects.generate_secret("t", integration=integration)
    slot = 40 if integration == "default" else 41
    return {
        KeyKind.SECRET: secret,
        KeyKind.SIGNING_KEY: Key.objects.generate_signing_keypair(
            "ES256", "t", integration=integration
        ),
        KeyKind.SERVICE_KEY: Key.objects.generate_service_keypair("t", integration=integration),
        KeyKind.PUBLIC_KEY: Key.objects.add_public_key(
            public_pem(rsa_key(slot)), "t", integration=integration
        ),
    }


def add_remote_keys(integration: str, clock) -> str:
    """A key source's last good set, as a fetch stores it: its keys are not rows of Key."""
    kid = f"idp-{integration}"
    KeySource.objects.create(
        integration=Integration.objects.named(integration),
        kind=KeySource.Kind.JWKS_URL,
        url="https://idp.example.com/jwks.json",
        jwks_uri="https://idp.example.com/jwks.json",
        keys=[{"kid": kid, "kty": "RSA", "alg": "RS256", "thumbprint": kid, "first_seen": "x"}],
        fetched_at=datetime.fromtimestamp(clock.t, tz=UTC),
    )
    return kid


def w009(*, database: bool = True) -> list:
    return deploy_checks.check_deploy_key_age(databases=["default"] if database else None)


def due_kids(messages) -> set[str]:
    """The kids of the store that the messages name."""
    return {
        kid for kid in Key.objects.values_list("kid", flat=True) for m in messages if kid in m.msg
    }


def rotate_due(*args: str):
    result = cli("rotate-due", *args)
    assert result.code == 0, (result.out, result.err)
    return result.json


# -- the setting (E025) ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -5, True, "90", 90.0, 36501, [90]])
def test_e025_for_a_bad_reminder(value):
    assert "chat_security.E025" in ids({"ROTATION_REMINDER_DAYS": value})


@pytest.mark.parametrize("value", [None, 1, 90, 36500])
def test_valid_reminders_pass(value):
    assert ids({"ROTATION_REMINDER_DAYS": value}) == []


def test_a_bad_reminder_is_read_as_the_default_and_refused_by_the_cli(clock):
    with chat_settings({"ROTATION_REMINDER_DAYS": "soon"}):
        assert hygiene.reminder_days() == 90
        cli("rotate-due").assert_bad_input("E025")
    with chat_settings({"ROTATION_REMINDER_DAYS": None}):
        assert hygiene.reminder_days() is None


# -- the check (W009) -----------------------------------------------------------------------


def test_w009_names_only_the_due_keys_the_site_holds(clock):
    made = make_keys()
    Integration.objects.add("ios")
    remote = add_remote_keys("ios", clock)
    staged = Key.objects.generate_signing_keypair("RS256", "t")  # staged: never due
    assert w009() == []
    clock.advance(OLD)
    fresh = Key.objects.generate_service_keypair("t", integration="ios")  # young: not due
    messages = w009()
    expected = {made[k].kid for k in hygiene.REMINDED_KINDS}
    assert due_kids(messages) == expected
    assert {m.id for m in messages} == {"chat_security.W009"}
    named = " ".join(m.msg for m in messages)
    assert made[KeyKind.PUBLIC_KEY].kid not in named  # the client's to rotate
    assert remote not in named and staged.kid not in named and fresh.kid not in named
    secret_warning = next(m for m in messages if made[KeyKind.SECRET].kid in m.msg)
    assert "integration default is 91 days old" in secret_warning.msg
    assert "manage.py chat_security rotate-secret" in secret_warning.hint


def test_w009_names_the_integration_and_its_command(clock):
    Integration.objects.add("ios")
    key, _ = Key.objects.generate_secret("t", integration="ios")
    clock.advance(OLD)
    (message,) = w009()
    assert f"{key.kid} of integration ios is 91 days old" in message.msg
    assert "rotate-secret --integration ios" in message.hint


def test_w009_not_after_rotation_nor_for_a_key_in_grace(clock):
    made = make_keys()
    clock.advance(OLD)
    assert len(w009()) == 3
    Key.objects.rotate_secret(None, "t")
    Key.objects.rotate_signing_key(None, "t")
    Key.objects.generate_service_keypair("t")
    assert w009() == []
    assert Key.objects.get(pk=made[KeyKind.SECRET].pk).state() == KeyState.GRACE


def test_w009_is_off_when_the_reminder_is(clock):
    make_keys()
    clock.advance(10 * 365 * DAY)
    with chat_settings({"ROTATION_REMINDER_DAYS": None}):
        assert w009() == []
    with chat_settings({"ROTATION_REMINDER_DAYS": 3650}):
        assert w009() == []
    with chat_settings({"ROTATION_REMINDER_DAYS": 30}):
        assert len(w009()) == 3


def test_w009_only_with_deploy_and_database(clock, django_assert_num_queries):
    make_keys()
    clock.advance(OLD)

    def reported(**options) -> bool:
        err = io.StringIO()
        call_command("check", stdout=io.StringIO(), stderr=err, **options)
        return "chat_security.W009" in err.getvalue()

    assert reported(deploy=True, databases=["default"])
    assert not reported(databases=["default"])  # a deploy check, as E020
    with django_assert_num_queries(0):
        assert not reported(deploy=True)
        assert w009(database=False) == []


# -- the panel's notice ---------------------------------------------------------------------


def panel(client) -> str:
    client.get(BASE)  # warms the session and the key snapshot
    with CaptureQueriesContext(connection) as queries:
        content = client.get(BASE).content.decode()
    panel.queries = len(queries)  # type: ignore[attr-defined]
    return content


def test_the_panel_notice_appears_and_goes_without_a_query_more(clock):
    made = make_keys()
    client = client_for("admin")
    quiet = panel(client)
    before = panel.queries  # type: ignore[attr-defined]
    assert "chat-rotation-due" not in quiet
    clock.advance(OLD)
    loud = panel(client)
    assert panel.queries == before  # type: ignore[attr-defined]
    notice = loud.split('id="integration-default-rotation-due"')[1].split("</div>")[0]
    for kind in hygiene.REMINDED_KINDS:
        assert made[kind].kid in notice
    assert made[KeyKind.PUBLIC_KEY].kid not in notice
    assert "91 days old" in notice and "ROTATION_REMINDER_DAYS is 90" in notice
    assert "manage.py chat_security rotate-signing-key" in notice
    assert "manage.py chat_security rotate-secret" in notice
    assert "manage.py chat_security generate-service-keypair" in notice
    rotate_due("--include-secrets", "--include-service-keys")
    assert "chat-rotation-due" not in panel(client)


def test_the_panel_notice_names_the_integration(clock):
    Integration.objects.add("ios")
    key = Key.objects.generate_signing_keypair("RS256", "t", integration="ios")
    Key.objects.generate_secret("t")
    client = client_for("admin")
    clock.advance(40 * DAY)
    Key.objects.rotate_secret(None, "t")  # default's is young
    clock.advance(60 * DAY)
    content = panel(client)
    assert content.count('class="chat-warning chat-rotation-due"') == 1
    notice = content.split('id="integration-ios-rotation-due"')[1].split("</div>")[0]
    assert key.kid in notice and "integration ios is 100 days old" in notice
    assert "rotate-signing-key --integration ios" in notice
    assert 'href="#integration-ios-signing-keys"' in notice


def test_support_staff_see_no_notice(clock):
    make_keys()
    clock.advance(OLD)
    assert "chat-rotation-due" not in client_for("support").get(BASE).content.decode()


# -- rotate-due -----------------------------------------------------------------------------


def test_nothing_due_is_exit_0_and_an_empty_list(clock):
    assert rotate_due() == {
        "dry_run": False,
        "reminder_days": 90,
        "rotated": [],
        "skipped": [],
        "failed": [],
    }
    make_keys()
    clock.advance(89 * DAY)
    before = store_state()
    assert rotate_due()["rotated"] == []
    assert store_state() == before


def test_by_default_only_signing_key_pairs_rotate(clock):
    made = make_keys()
    clock.advance(OLD)
    result = rotate_due()
    (rotated,) = result["rotated"]
    new = Key.objects.get(kid=rotated["new_kid"])
    assert rotated == {
        "integration": "default",
        "kind": "signing_key",
        "old_kid": made[KeyKind.SIGNING_KEY].kid,
        "age_days": 91,
        "new_kid": new.kid,
        "alg": "ES256",
        "grace_until": datetime.fromtimestamp(clock.t + 48 * 3600, tz=UTC).isoformat(),
        "public_key_pem": new.public_pem,
    }
    assert "secret" not in str(rotated).replace("signing", "")
    assert new.state() == KeyState.ACTIVE and new.kind == KeyKind.SIGNING_KEY
    assert {(s["kind"], s["old_kid"], s["reason"]) for s in result["skipped"]} == {
        ("secret", made[KeyKind.SECRET].kid, "rotated only with --include-secrets"),
        ("service_key", made[KeyKind.SERVICE_KEY].kid, "rotated only with --include-service-keys"),
    }
    for kind in (KeyKind.SECRET, KeyKind.SERVICE_KEY, KeyKind.PUBLIC_KEY):
        assert Key.objects.get(pk=made[kind].pk).state() == KeyState.ACTIVE
    assert Key.objects.get(pk=made[KeyKind.SIGNING_KEY].pk).state() == KeyState.GRACE


def test_every_kind_rotates_when_asked_and_the_secret_is_printed_once(clock):
    made = make_keys()
    clock.advance(OLD)
    result = rotate_due("--include-secrets", "--include-service-keys", "--grace", "2")
    by_kind = {r["kind"]: r for r in result["rotated"]}
    assert sorted(by_kind) == ["secret", "service_key", "signing_key"]
    assert result["skipped"] == [] and result["failed"] == []
    for kind, row in by_kind.items():
        old = Key.objects.get(pk=made[kind].pk)
        assert row["old_kid"] == old.kid and old.state() == KeyState.GRACE
        assert row["grace_until"] == old.grace_until.isoformat()
        assert old.grace_until.timestamp() == clock.t + 2 * 3600
        assert Key.objects.get(kid=row["new_kid"]).state() == KeyState.ACTIVE
    secret = by_kind["secret"]["secret"]
    new_secret = Key.objects.get(kid=by_kind["secret"]["new_kid"])
    assert new_secret.fingerprint == keys.secret_fingerprint(secret)
    assert "secret" not in by_kind["signing_key"] and "secret" not in by_kind["service_key"]
    assert by_kind["service_key"]["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    assert Key.objects.get(pk=made[KeyKind.PUBLIC_KEY].pk).state() == KeyState.ACTIVE
    # A token signed with the printed secret verifies.
    t = int(clock.t)
    token = hs256(secret, {"sub": "u", "iat": t, "exp": t + 600}, kid=new_secret.kid)
    assert tokens.verify(token, count_use=False).kid == new_secret.kid


def test_dry_run_changes_nothing(clock):
    made = make_keys()
    clock.advance(OLD)
    before = store_state()
    result = rotate_due("--dry-run", "--include-secrets", "--include-service-keys")
    assert store_state() == before
    assert result["dry_run"] is True
    assert {(r["kind"], r["old_kid"], r["new_kid"]) for r in result["rotated"]} == {
        (kind.value, made[kind].kid, None) for kind in hygiene.REMINDED_KINDS
    }
    assert all("secret" not in r for r in result["rotated"])
    plain = rotate_due("--dry-run")
    assert [r["kind"] for r in plain["rotated"]] == ["signing_key"]
    assert len(plain["skipped"]) == 2 and store_state() == before


def test_integration_limits_it_and_a_second_run_does_nothing(clock):
    Integration.objects.add("ios")
    default, ios = make_keys(), make_keys("ios")
    clock.advance(OLD)
    result = rotate_due("--integration", "ios", "--include-secrets", "--include-service-keys")
    assert {r["integration"] for r in result["rotated"]} == {"ios"}
    assert len(result["rotated"]) == 3
    for kind in hygiene.REMINDED_KINDS:
        assert Key.objects.get(pk=default[kind].pk).state() == KeyState.ACTIVE
        assert Key.objects.get(pk=ios[kind].pk).state() == KeyState.GRACE
    before = store_state()
    again = rotate_due("--integration", "ios", "--include-secrets", "--include-service-keys")
    assert again["rotated"] == [] and again["skipped"] == []
    assert store_state() == before
    everything = rotate_due("--include-secrets", "--include-service-keys")
    assert {r["integration"] for r in everything["rotated"]} == {"default"}
    assert rotate_due("--include-secrets", "--include-service-keys")["rotated"] == []


def test_bad_options_change_nothing(clock):
    make_keys()
    clock.advance(OLD)
    before = store_state()
    cli("rotate-due", "--integration", "nope").assert_bad_input("no integration named")
    cli("rotate-due", "--grace", "-1").assert_bad_input("--grace")
    cli("rotate-due", "--grace", "soon").assert_bad_input("--grace")
    assert store_state() == before


def test_old_keys_keep_their_grace_period(clock):
    Key.objects.generate_signing_keypair("RS256", "t")
    secret_key, secret = Key.objects.generate_secret("t")
    clock.advance(OLD)
    signed = tokens.issue("alice", ttl=24 * 3600)  # by the active signing key pair
    t = int(clock.t)
    by_secret = hs256(secret, {"sub": "bob", "iat": t, "exp": t + 24 * 3600}, kid=secret_key.kid)
    old_kid = tokens.verify(signed, count_use=False).kid
    result = rotate_due("--include-secrets", "--grace", "1")
    assert {r["old_kid"] for r in result["rotated"]} == {old_kid, secret_key.kid}
    clock.advance(1800)  # within the grace period
    assert tokens.verify(signed, count_use=False).kid == old_kid
    assert tokens.verify(by_secret, count_use=False).kid == secret_key.kid
    new_token = tokens.issue("alice")
    assert tokens.verify(new_token, count_use=False).kid != old_kid
    clock.advance(3600)  # past it
    for token in (signed, by_secret):
        with pytest.raises(TokenError) as refused:
            tokens.verify(token, count_use=False)
        assert refused.value.code == "key_retired"


def test_a_staged_key_is_promoted_unless_it_is_itself_due(clock):
    Key.objects.generate_signing_keypair("RS256", "t")
    clock.advance(OLD - DAY)
    staged = Key.objects.generate_signing_keypair("ES256", "t")
    clock.advance(DAY)
    (rotated,) = rotate_due()["rotated"]
    assert rotated["new_kid"] == staged.kid and rotated["alg"] == "ES256"  # published ahead

    clock.advance(OLD)  # the promoted key is due, and a staged one older still
    old_staged = Key.objects.generate_signing_keypair("RS256", "t")
    clock.advance(OLD)
    (rotated,) = rotate_due()["rotated"]
    assert rotated["old_kid"] == staged.kid
    assert rotated["new_kid"] != old_staged.kid and rotated["alg"] == "RS256"
    assert Key.objects.get(pk=old_staged.pk).state() == KeyState.REVOKED
    assert rotate_due()["rotated"] == []


def test_a_key_rotated_meanwhile_is_not_rotated_again(clock, monkeypatch):
    """Two servers running the same cron job: the second sees the first's rotation."""
    make_keys()
    clock.advance(OLD)
    stale = hygiene.due_now()
    Key.objects.rotate_signing_key(None, "other server")
    monkeypatch.setattr(hygiene, "due_now", lambda integration=None: stale)
    before = list(Key.objects.order_by("pk").values_list())
    result = rotate_due()
    assert result["rotated"] == []
    assert [s["reason"] for s in result["skipped"] if s["kind"] == "signing_key"] == [
        "rotated meanwhile"
    ]
    assert list(Key.objects.order_by("pk").values_list()) == before  # (the version moved)


def test_disabled_reminder_rotates_nothing(clock):
    make_keys()
    clock.advance(10 * 365 * DAY)
    with chat_settings({"ROTATION_REMINDER_DAYS": None}):
        result = rotate_due("--include-secrets")
    assert result["reminder_days"] is None and result["rotated"] == []


def test_rotate_due_help_warns_about_secrets(capsys):
    with pytest.raises(SystemExit):
        call_command("chat_security", "rotate-due", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--include-secrets" in text and "Never send this output to a log" in text
