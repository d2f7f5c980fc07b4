"""The key store (chat_security.models): what the database holds, states, audit."""

from __future__ import annotations

import base64
import re
from datetime import timedelta

import pytest
from django.db import connection

from chat_security import keys, tokens, usage
from chat_security.exceptions import KeyStateError
from chat_security.models import AuditEntry, Key, RevokedUser, SecurityConfig
from tests.chat_helpers import stored_secret

from .tokencraft import public_pem, rsa_key

pytestmark = pytest.mark.django_db


def database_dump() -> str:
    """Every row of every chat_security table, as one string (what a DB dump reveals)."""
    tables = [t for t in connection.introspection.table_names() if t.startswith("chat_security_")]
    assert {"chat_security_key", "chat_security_securityconfig"} <= set(tables)
    chunks = []
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - names from introspection
            for row in cursor.fetchall():
                chunks.append(repr(row))
    return "\n".join(chunks)


def test_database_rows_hold_no_secret_and_no_private_key(clock):
    first, first_secret = Key.objects.generate_secret("alice")
    second, second_secret = Key.objects.rotate_secret(actor="alice")
    service = Key.objects.generate_service_keypair("alice")
    rotated_service = Key.objects.generate_service_keypair("alice")
    Key.objects.add_public_key(public_pem(rsa_key(1)), "alice")
    RevokedUser.objects.revoke("user-9", "alice")
    SecurityConfig.set_enabled(False, "alice")
    tokens.verify(tokens.issue("user-1"))
    usage.flush_usage()

    dump = database_dump()
    assert "hs-" in dump and "svc-" in dump  # the dump really holds the key rows

    for secret in (first_secret, second_secret):
        assert secret not in dump
        assert base64.b64encode(secret.encode()).decode() not in dump
        assert secret.encode().hex() not in dump
    assert "PRIVATE KEY" not in dump
    for key in (service, rotated_service):
        pem = keys.decrypt(Key.objects.get(pk=key.pk).encrypted_material)
        assert "PRIVATE KEY" in pem
        body_lines = [line for line in pem.splitlines() if not line.startswith("-----")]
        for line in body_lines:
            assert line not in dump  # no 64-character slice of the private key's base64
        assert "".join(body_lines)[:40] not in dump


def test_status_and_str_never_show_a_secret(clock):
    key, secret = Key.objects.generate_secret()
    status = key.as_status()
    assert set(status) >= {
        "kid", "kind", "state", "fingerprint", "grace_until", "last_used", "use_count"
    }  # fmt: skip
    assert secret not in repr(status) and secret not in str(key)
    assert key.masked == secret[:6] + "…"
    assert stored_secret(key) == secret


def test_generate_secret_refuses_while_an_active_one_exists(clock):
    Key.objects.generate_secret()
    with pytest.raises(KeyStateError, match="rotate-secret"):
        Key.objects.generate_secret()
    assert Key.objects.count() == 1
    assert AuditEntry.objects.filter(action="generate_secret").count() == 1


def test_generate_secret_again_after_revoking_the_active_one(clock):
    key, _ = Key.objects.generate_secret()
    Key.objects.revoke(key.kid)
    new, _ = Key.objects.generate_secret()
    assert new.state() == "active"


def test_secret_states_active_grace_retired(clock):
    key, _ = Key.objects.generate_secret()
    assert key.state() == "active"
    new, _ = Key.objects.rotate_secret(grace=3600)
    key.refresh_from_db()
    assert (key.state(), new.state()) == ("grace", "active")
    assert key.is_usable()
    assert set(Key.objects.usable("secret")) == {new, key}
    assert Key.objects.active("secret") == [new]
    clock.advance(3600)
    assert key.state() == "retired"
    assert not key.is_usable()
    assert key.grace_until == new.created_at + timedelta(hours=1)


def test_rotation_with_zero_grace_sets_retired_at(clock):
    key, _ = Key.objects.generate_secret()
    Key.objects.rotate_secret(grace=0)
    key.refresh_from_db()
    assert key.state() == "retired"
    assert key.retired_at is not None


def test_revoked_wins_over_every_other_state(clock):
    key, _ = Key.objects.generate_secret()
    Key.objects.rotate_secret()
    Key.objects.revoke(key.kid)
    key.refresh_from_db()
    assert key.state() == "revoked"
    with pytest.raises(KeyStateError, match="already revoked"):
        Key.objects.revoke(key.kid)
    with pytest.raises(KeyStateError, match="no key"):
        Key.objects.revoke("hs-unknown")


def test_service_keypair_rotation_states(clock):
    first = Key.objects.generate_service_keypair()
    assert first.kind == "service_key" and first.kid.startswith("svc-")
    assert first.bits == 2048 and "BEGIN PUBLIC KEY" in first.public_pem
    second = Key.objects.generate_service_keypair(grace=0)
    first.refresh_from_db()
    assert (first.state(), second.state()) == ("retired", "active")


def test_security_config_defaults_to_on(clock):
    assert SecurityConfig.objects.count() == 0
    assert SecurityConfig.load().enabled is True
    SecurityConfig.set_enabled(False, "bob")
    config = SecurityConfig.load()
    assert (config.enabled, config.changed_by) == (False, "bob")
    assert config.changed_at.timestamp() == clock.t


def test_key_changes_bump_the_store_version(clock, django_capture_on_commit_callbacks):
    version = SecurityConfig.load().version
    with django_capture_on_commit_callbacks(execute=True):
        Key.objects.generate_secret()
    assert SecurityConfig.load().version > version


def test_revoke_user_records_the_moment(clock):
    first = RevokedUser.objects.revoke("user-1", "carol")
    clock.advance(60)
    again = RevokedUser.objects.revoke("user-1", "carol")
    assert RevokedUser.objects.count() == 1
    assert again.revoked_at.timestamp() == first.revoked_at.timestamp() + 60


def test_audit_entries_are_written(clock):
    key, _ = Key.objects.generate_secret("alice")
    new, _ = Key.objects.rotate_secret(actor="alice")
    public = Key.objects.add_public_key(public_pem(rsa_key(1)), "bob")
    service = Key.objects.generate_service_keypair("bob")
    Key.objects.revoke(key.kid, "carol")
    RevokedUser.objects.revoke("user-1", "carol")
    SecurityConfig.set_enabled(False, "dave")
    SecurityConfig.set_enabled(True, "dave")
    entries = [
        (e.actor, e.action, e.kid, e.detail) for e in AuditEntry.objects.order_by("at", "pk")
    ]
    assert entries == [
        ("alice", "generate_secret", key.kid, ""),
        ("alice", "rotate_secret", new.kid, ""),
        ("bob", "add_public_key", public.kid, ""),
        ("bob", "generate_service_key", service.kid, ""),
        ("carol", "revoke_key", key.kid, ""),
        ("carol", "revoke_user", "", "user-1"),
        ("dave", "security_off", "", ""),
        ("dave", "security_on", "", ""),
    ]
    assert all(e.at.timestamp() == clock.t for e in AuditEntry.objects.all())


def test_kids_are_unique_and_fingerprints_are_sha256(clock):
    secret_key, secret = Key.objects.generate_secret()
    assert re.fullmatch(r"hs-[0-9a-f]{12}", secret_key.kid)
    assert re.fullmatch(r"[0-9a-f]{64}", secret_key.fingerprint)
    public = Key.objects.add_public_key(public_pem(rsa_key(1)))
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", public.fingerprint)  # RFC 7638, base64url
    assert len({k.kid for k in Key.objects.all()}) == Key.objects.count()


# -- the key-state rules: one home (models), the same answers from rows and entries ----------

_TIMES = (None, 100.0, 200.0)


@pytest.mark.parametrize("grace_until", _TIMES)
@pytest.mark.parametrize("retired_at", _TIMES)
@pytest.mark.parametrize("revoked_at", _TIMES)
def test_key_state_rules_agree_everywhere(grace_until, retired_at, revoked_at):
    """``key_state``, ``usable_until`` and the keyring's entries tell one story."""
    from chat_security import models
    from chat_security.keyring import KeyEntry

    entry = KeyEntry("k", "secret", None, 0.0, grace_until, retired_at, revoked_at)
    for now in (50.0, 100.0, 150.0, 250.0):
        state = models.key_state(now, grace_until, retired_at, revoked_at)
        usable = state in (models.KeyState.ACTIVE, models.KeyState.GRACE)
        # The rule as SPEC §2 words it: revoked never; retired once its time came;
        # in grace until the grace end; otherwise active.
        expected = (
            models.KeyState.REVOKED
            if revoked_at is not None
            else models.KeyState.RETIRED
            if retired_at is not None and retired_at <= now
            else (models.KeyState.GRACE if now < grace_until else models.KeyState.RETIRED)
            if grace_until is not None
            else models.KeyState.ACTIVE
        )
        assert state == expected
        assert entry.usable(now) is usable and entry.state(now) == state
        if usable:
            assert entry.usable_state(now) == state
        else:
            assert entry.stopped_at() == (revoked_at or retired_at or grace_until)
