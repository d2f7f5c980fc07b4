"""``manage.py check --deploy``: warnings for a site about to go live (issue 9, item 5)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.test import override_settings

from chat_security import checks, deploy_checks
from chat_security.models import Integration, Key, SecurityConfig


def deploy_ids(*, database: bool) -> set[str]:
    err = io.StringIO()
    options = {"deploy": True, "stderr": err, "stdout": io.StringIO()}
    if database:
        options["databases"] = ["default"]
    call_command("check", **options)
    return {word.strip(":()") for word in err.getvalue().split() if "chat_security.W" in word}


@pytest.mark.django_db
def test_a_ready_site_gets_no_chat_security_deploy_warning(clock):
    Key.objects.generate_secret("t")
    assert deploy_ids(database=True) == set()


@pytest.mark.django_db
def test_security_off_is_w003(clock):
    Key.objects.generate_secret("t")
    SecurityConfig.set_enabled(False, "t")
    assert deploy_ids(database=True) == {"chat_security.W003"}


@pytest.mark.django_db
def test_a_scheduled_switch_is_named_in_w003_and_ends_it_when_due(clock):
    Key.objects.generate_secret("t")
    SecurityConfig.set_enabled(False, "t")
    SecurityConfig.schedule_on(datetime.fromtimestamp(clock.t + 7200, tz=UTC), "t")
    [warning] = [m for m in deploy_checks.check_deploy_key_store(databases=["default"])]
    assert warning.id == "chat_security.W003"
    assert "until " in warning.msg and "UTC (scheduled)" in warning.msg, warning.msg
    assert "let the schedule do it" in warning.hint
    clock.advance(2 * 3600)
    assert deploy_ids(database=True) == set()  # due: security is on, nothing to warn


@pytest.mark.django_db
def test_no_usable_key_is_w004(clock):
    assert deploy_ids(database=True) == {"chat_security.W004"}
    key, _ = Key.objects.generate_secret("t")
    Key.objects.revoke(key.kid)
    assert deploy_ids(database=True) == {"chat_security.W004"}


@pytest.mark.django_db
def test_a_service_key_alone_is_not_a_signing_key(clock):
    Key.objects.generate_service_keypair("t")
    assert "chat_security.W004" in deploy_ids(database=True)


@pytest.mark.django_db
def test_without_database_the_key_store_is_not_read(clock, django_assert_num_queries):
    SecurityConfig.set_enabled(False, "t")  # would be W003 and W004 with --database
    with django_assert_num_queries(0):
        assert deploy_ids(database=False) == set()


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"LEEWAY": 300}, set()),
        ({"LEEWAY": 301}, {"chat_security.W005"}),
        ({"MAX_TOKEN_LIFETIME": 24 * 3600}, set()),
        ({"MAX_TOKEN_LIFETIME": 24 * 3600 + 1, "DEFAULT_TOKEN_TTL": 60}, {"chat_security.W006"}),
    ],
)
def test_leeway_and_lifetime_limits(setting, expected):
    keys = {"ENCRYPTION_KEYS": ["deploy-checks-key-0123456789-abcdefghijklmnop"]}
    with override_settings(CHAT_SECURITY={**keys, **setting}):
        assert deploy_ids(database=False) == expected


def test_no_deploy_warning_outside_deploy_checks():
    with override_settings(CHAT_SECURITY={"LEEWAY": 3600}):
        ids = {m.id for m in checks.check_settings()}
    assert "chat_security.W005" not in ids


@pytest.mark.django_db
def test_encryption_key_derived_from_secret_key_is_flagged_at_deploy(clock):
    Key.objects.generate_secret("t")
    with override_settings(CHAT_SECURITY={}):
        assert "chat_security.W001" in deploy_ids(database=False)


@pytest.mark.django_db
def test_an_unmigrated_key_store_is_w007(monkeypatch):
    from django.db import DatabaseError

    def broken(*args, **kwargs):
        raise DatabaseError("no such table: chat_security_integration\nmore")

    monkeypatch.setattr(Integration.objects, "filter", broken)
    messages = deploy_checks.check_deploy_key_store(databases=["default"])
    assert [m.id for m in messages] == ["chat_security.W007"]
    assert "no such table" in messages[0].msg and "\n" not in messages[0].msg
