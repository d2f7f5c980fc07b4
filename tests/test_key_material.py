"""Key material in memory and at rest: only usable keys are decrypted; reencrypt; counters.

Regression tests for issue 8, defects 2, 6 and 7.
"""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.db import DatabaseError, transaction
from django.test import override_settings

from chat_security import diagnosis as diagnose
from chat_security import keyring, keys, tokens, usage
from chat_security.exceptions import KeyStoreUnavailable, TokenError
from chat_security.models import Key

from .chat_helpers import bearer, sign
from .test_cli import cli

K1 = "first-encryption-key-0123456789-abcdefghijklmnop"
K2 = "second-encryption-key-0123456789-abcdefghijklmnop"


def encryption(*materials: str):
    return override_settings(CHAT_SECURITY={"ENCRYPTION_KEYS": list(materials)})


def claims(clock, sub="alice"):
    return {"sub": sub, "iat": int(clock.t), "exp": int(clock.t) + 600}


# -- defect 2: one undecryptable old key --------------------------------------------------


@pytest.mark.django_db
def test_an_undecryptable_retired_secret_does_not_take_the_chat_down(clock, client):
    with encryption(K1):
        Key.objects.generate_secret("t")
    with encryption(K2, K1):
        new, value = Key.objects.rotate_secret(grace=0)
    with encryption(K2):  # K1 dropped: the retired secret can no longer be decrypted
        token = sign(value, claims(clock), kid=new.kid)
        assert tokens.verify(token).kid == new.kid
        response = client.get("/chat/api/messages", headers=bearer(token))
        assert response.status_code == 200


@pytest.mark.django_db
def test_retired_and_revoked_keys_keep_no_material_in_memory(clock):
    retired, _ = Key.objects.generate_secret("t")
    revoked, _ = Key.objects.rotate_secret(grace=0)
    Key.objects.revoke(revoked.kid)
    graced, _ = Key.objects.generate_secret("t")
    active, _ = Key.objects.rotate_secret(grace=3600)
    snap = keyring.get_snapshot()
    assert snap.by_kid[active.kid].verify_key is not None
    assert snap.by_kid[graced.kid].verify_key is not None  # still verifies during grace
    assert snap.by_kid[retired.kid].verify_key is None
    assert snap.by_kid[revoked.kid].verify_key is None


@pytest.mark.django_db
def test_a_key_leaving_its_grace_period_drops_its_material_at_the_next_check(clock, settings):
    old, old_value = Key.objects.generate_secret("t")
    Key.objects.rotate_secret(grace=60)
    assert keyring.get_snapshot().by_kid[old.kid].verify_key is not None
    token = sign(old_value, claims(clock), kid=old.kid)
    assert tokens.verify(token).kid == old.kid
    clock.advance(61)
    keyring._State.checked_at = -1e9  # the next interval check
    assert keyring.get_snapshot().by_kid[old.kid].verify_key is None
    with pytest.raises(TokenError) as exc:
        tokens.verify(token)
    assert exc.value.code == "key_retired"


@pytest.mark.django_db
def test_a_usable_key_that_cannot_be_decrypted_answers_unavailable_not_invalid(clock):
    with encryption(K1):
        broken, broken_value = Key.objects.generate_secret("t")
    with encryption(K2):
        # An RS256 or second HS256 key would keep working; here the other key is a
        # public key, and the broken secret's own tokens cannot be judged: 503.
        with pytest.raises(KeyStoreUnavailable):
            tokens.verify(sign(broken_value, claims(clock), kid=broken.kid))
        with pytest.raises(KeyStoreUnavailable):
            tokens.verify(sign(broken_value, claims(clock)))  # no kid: it is a candidate
        assert keyring.get_snapshot().by_kid[broken.kid].unreadable


@pytest.mark.django_db
def test_the_tester_loads_old_keys_on_demand_and_reports_the_unreadable(clock):
    with encryption(K1):
        old, old_value = Key.objects.generate_secret("t")
    with encryption(K2, K1):
        Key.objects.rotate_secret(grace=0)
        token = sign(old_value, claims(clock))  # no kid: the tester must find the signer
        diagnosis = diagnose.diagnose(token)
        assert diagnosis.code == "invalid_signature"
        assert diagnosis.signer is not None and diagnosis.signer.kid == old.kid
    with encryption(K2):
        diagnosis = diagnose.diagnose(token)
        assert diagnosis.code == "invalid_signature"
        assert diagnosis.signer is None
        assert any(old.kid in hint and "reencrypt" in hint for hint in diagnosis.hints)


# -- reencrypt and generate-encryption-key --------------------------------------------------


def test_generate_encryption_key_prints_a_fresh_key_fit_for_the_setting():
    first, second = cli("generate-encryption-key"), cli("generate-encryption-key")
    assert first.code == 0 and first.err == ""
    value = first.out.strip()
    assert len(value) >= keys.MIN_ENCRYPTION_KEY and value != second.out.strip()
    with encryption(value):
        assert keys.decrypt(keys.encrypt("x")) == "x"


@pytest.mark.django_db
def test_reencrypt_moves_everything_to_the_first_key_and_says_which_keys_can_go(clock):
    with encryption(K1):
        secret, value = Key.objects.generate_secret("t")
        service = Key.objects.generate_service_keypair("t")
    with encryption(K2, K1):
        result = cli("reencrypt")
        assert result.code == 0, result.err
        report = result.json
        assert sorted(report["reencrypted"]) == sorted([secret.kid, service.kid])
        assert report["unreadable"] == []
        assert report["no_longer_needed"] == [2]
        assert [k["needed"] for k in report["encryption_keys"]] == [True, False]
        assert K1 not in result.out and K2 not in result.out and value not in result.out
    with encryption(K2):  # the old key is gone: everything still works
        assert tokens.verify(sign(value, claims(clock), kid=secret.kid)).kid == secret.kid
        assert keyring.get_snapshot().by_kid[service.kid].private_key() is not None


@pytest.mark.django_db
def test_reencrypt_reports_material_no_configured_key_can_read(clock):
    with encryption(K1):
        lost, _ = Key.objects.generate_secret("t")
    with encryption(K2):
        before = Key.objects.get(pk=lost.pk).encrypted_material
        result = cli("reencrypt")
        assert result.code == 1
        assert result.json["unreadable"] == [lost.kid]
        assert Key.objects.get(pk=lost.pk).encrypted_material == before  # left as it was


# -- defects 6 and 7: usage counters ----------------------------------------------------------


@pytest.mark.django_db
def test_last_used_never_goes_backwards(clock):
    key, _ = Key.objects.generate_secret("t")
    later = dt.datetime.fromtimestamp(clock.t + 300, tz=dt.UTC)
    Key.objects.filter(pk=key.pk).update(last_used=later)  # another worker flushed a later use
    usage.record_use(key.kid)  # this worker's use is older
    assert usage.flush_usage()
    key.refresh_from_db()
    assert key.last_used == later and key.use_count == 1


@pytest.mark.django_db(transaction=True)
def test_the_flush_never_runs_inside_the_callers_transaction(clock):
    key, _ = Key.objects.generate_secret("t")
    usage.record_use(key.kid)
    with transaction.atomic():  # e.g. ATOMIC_REQUESTS
        assert usage.flush_usage() is False  # deferred
        assert Key.objects.get(pk=key.pk).use_count == 0
    # ... and done once the caller's transaction committed.
    assert Key.objects.get(pk=key.pk).use_count == 1


@pytest.mark.django_db(transaction=True)
def test_a_failing_flush_does_not_break_the_callers_transaction(clock, monkeypatch):
    key, _ = Key.objects.generate_secret("t")
    usage.record_use(key.kid)

    def broken(*args, **kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr(usage, "_write", broken)
    with transaction.atomic():
        usage.flush_usage()
        # The outer transaction is still usable (no TransactionManagementError).
        assert Key.objects.filter(pk=key.pk).exists()
    monkeypatch.undo()
    assert usage.flush_usage() is True  # the counts were kept for the next flush
    assert Key.objects.get(pk=key.pk).use_count == 1


# -- issue 17, item 1: ENCRYPTION_KEYS set after the first secret ------------------------------


def _e020() -> list:
    from chat_security import deploy_checks

    return deploy_checks.check_deploy_key_material(databases=["default"])


@pytest.mark.django_db
def test_encryption_keys_set_after_generate_secret_say_what_to_run_and_the_recipe_recovers(
    clock, client
):
    from django.conf import settings
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    with override_settings(CHAT_SECURITY={}):  # W001: no ENCRYPTION_KEYS yet
        made = cli("generate-secret")
        assert made.code == 0
        assert "Set ENCRYPTION_KEYS first" in made.err and "reencrypt" in made.err
        kid, value = made.json["kid"], made.json["secret"]
        assert _e020() == []
    token = sign(value, claims(clock), kid=kid)

    with encryption(K1):  # set after the secret: it no longer decrypts
        response = client.get("/chat/api/messages", headers=bearer(token))
        assert response.status_code == 503
        body = response.json()
        assert body["error"] == "unavailable" and "try again" not in body["detail"]
        for words in (kid, "ENCRYPTION_KEYS", "second", "manage.py chat_security reencrypt"):
            assert words in body["detail"]
        assert "Retry-After" not in response  # a deploy fixes it, not a retry
        [error] = _e020()
        assert error.id == "chat_security.E020" and kid in error.msg
        assert "SECRET_KEY" in error.hint and "reencrypt" in error.hint
        with pytest.raises(SystemCheckError, match="chat_security.E020"):
            call_command("check", deploy=True, databases=["default"], stdout=io.StringIO())

    with encryption(K1, settings.SECRET_KEY):  # the recipe: the old key listed second...
        assert _e020() == []
        assert client.get("/chat/api/messages", headers=bearer(token)).status_code == 200
        done = cli("reencrypt")  # ...then reencrypt...
        assert done.code == 0 and done.json["reencrypted"] == [kid]
        assert done.json["no_longer_needed"] == [2]
    with encryption(K1):  # ...then the old key removed
        assert _e020() == []
        assert client.get("/chat/api/messages", headers=bearer(token)).status_code == 200


@pytest.mark.django_db
def test_e020_names_every_usable_key_it_cannot_decrypt_and_no_other(clock):
    with encryption(K1):
        retired, _ = Key.objects.generate_secret("t")
        active, _ = Key.objects.rotate_secret(grace=0)
        service = Key.objects.generate_service_keypair("t")
    with encryption(K2, K1):
        readable, _ = Key.objects.rotate_secret(grace=3600)  # active under K2; old one in grace
    with encryption(K2):
        [error] = _e020()
        assert active.kid in error.msg and service.kid in error.msg
        assert retired.kid not in error.msg and readable.kid not in error.msg
        assert "set or changed after" in error.hint and "second" in error.hint
    with encryption(K2, K1):
        assert _e020() == []


@pytest.mark.django_db
def test_e020_reads_nothing_without_database(django_assert_num_queries):
    from chat_security import deploy_checks

    with django_assert_num_queries(0):
        assert deploy_checks.check_deploy_key_material(databases=None) == []


@pytest.mark.django_db
def test_the_token_endpoint_and_the_cli_name_the_unreadable_secret(clock, client):
    from django.contrib.auth import get_user_model

    with encryption(K1):
        key, value = Key.objects.generate_secret("t")
    with encryption(K2):
        client.force_login(get_user_model().objects.create_user("u17", password="x"))
        response = client.get("/api/chat-token")
        assert response.status_code == 503
        assert key.kid in response.json()["detail"] and "reencrypt" in response.json()["detail"]
        cli("verify", sign(value, claims(clock), kid=key.kid)).assert_bad_input(
            key.kid, "reencrypt"
        )


@pytest.mark.django_db
def test_generate_secret_is_quiet_when_encryption_keys_are_set(clock):
    with encryption(K1):
        made = cli("generate-secret")
    assert made.code == 0 and made.err == ""
