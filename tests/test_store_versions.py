"""How other processes learn of key-store changes: the version moves in the writer's transaction.

Regression tests for issue 8, defect 1. The "other worker" is simulated by a
snapshot kept aside and put back after the change; the real two-process test
is in ``test_two_processes.py``.
"""

from __future__ import annotations

import pytest
from django.db import transaction

from chat_security import keyring
from chat_security.models import Integration, Key, RevokedUser, SecurityConfig


def version() -> int:
    return SecurityConfig.objects.get(pk=1).version


def as_other_worker(snap: keyring.Snapshot) -> keyring.Snapshot:
    """What a worker that built ``snap`` earlier sees at its next check."""
    keyring._State.snapshot, keyring._State.checked_at = snap, -1e9
    return keyring.get_snapshot()


@pytest.mark.django_db(transaction=True)
def test_a_stale_admin_save_cannot_hide_switching_security_on(monkeypatch):
    SecurityConfig.set_enabled(False, "setup")
    stale = SecurityConfig.load()  # admin A loads the row at v
    RevokedUser.objects.revoke("someone", "cli")  # B commits: v + 1
    worker = keyring.get_snapshot()  # a worker rebuilds at B's version: off
    assert worker.enabled is False
    monkeypatch.setattr(SecurityConfig, "load", classmethod(lambda cls: stale))
    SecurityConfig.set_enabled(True, "admin A")
    assert as_other_worker(worker).enabled is True


@pytest.mark.django_db(transaction=True)
def test_a_full_save_of_a_stale_config_row_never_moves_the_version_back():
    stale = SecurityConfig.load()
    RevokedUser.objects.revoke("someone", "cli")
    after_revoke = version()
    stale.changed_by = "someone else"
    stale.save()  # a plain save, e.g. from third-party code
    assert version() > after_revoke
    assert SecurityConfig.objects.get(pk=1).changed_by == "someone else"


@pytest.mark.django_db
def test_a_plain_save_of_an_integration_moves_the_version():
    """An integration's switch, issuer or paths edited outside the manager (the
    Django shell, third-party code) still reaches every worker."""
    SecurityConfig.load()
    default = Integration.objects.default()
    before = version()
    default.enabled = False
    default.save()
    assert version() > before


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "change",
    [
        lambda: SecurityConfig.set_enabled(False, "t"),
        lambda: Key.objects.generate_secret("t"),
        lambda: RevokedUser.objects.revoke("u", "t"),
        lambda: Key.objects.generate_service_keypair("t"),
    ],
    ids=["security", "generate-secret", "revoke-user", "service-key"],
)
def test_the_version_moves_inside_the_writers_transaction(change, monkeypatch):
    SecurityConfig.load()
    before = version()
    # Nothing may depend on on_commit: a process that dies right after its
    # commit must still have told everybody.
    monkeypatch.setattr(transaction, "on_commit", lambda *a, **k: None)
    with transaction.atomic():
        change()
        assert version() > before  # already moved, before the commit
    assert version() > before


@pytest.mark.django_db(transaction=True)
def test_revoking_a_key_moves_the_version_and_a_rolled_back_change_does_not():
    key, _ = Key.objects.generate_secret("t")
    before = version()
    with pytest.raises(RuntimeError), transaction.atomic():
        Key.objects.revoke(key.kid, "t")
        raise RuntimeError("roll back")
    assert version() == before
    assert Key.objects.get(pk=key.pk).revoked_at is None
    Key.objects.revoke(key.kid, "t")
    assert version() > before


@pytest.mark.django_db(transaction=True)
def test_other_workers_see_a_revocation_at_their_next_check():
    key, _ = Key.objects.generate_secret("t")
    worker = keyring.get_snapshot()
    assert worker.by_kid[key.kid].revoked_at is None
    Key.objects.revoke(key.kid, "cli")
    assert as_other_worker(worker).by_kid[key.kid].revoked_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_plain_model_save_elsewhere_is_also_propagated():
    key, _ = Key.objects.generate_secret("t")
    before = version()
    key.created_by = "someone else"
    key.save()
    assert version() > before
