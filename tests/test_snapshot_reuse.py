"""A key-store change that leaves the keys alone is cheap for every worker (issue 11, item 7).

``revoke-user`` and the mode switch move the store's version like any change,
so every worker reads the store again; but key entries whose rows did not
change are reused (nothing decrypted or parsed again), the snapshot keeps its
key set, and with it the tokens the engine remembers. Every user revocation
is held, however old (SPEC §3 step 8).
"""

from __future__ import annotations

import pytest

from chat_security import keyring, propagation, tokens
from chat_security.exceptions import TokenError
from chat_security.models import Key, RevokedUser, SecurityConfig

pytestmark = pytest.mark.django_db


@pytest.fixture
def counted(monkeypatch):
    """How often a key is decrypted or parsed, and a token parsed."""
    calls = {"key": 0, "parse": 0}
    load, parse = keyring._verify_key, tokens.parse

    def counting_load(key):
        calls["key"] += 1
        return load(key)

    def counting_parse(token):
        calls["parse"] += 1
        return parse(token)

    monkeypatch.setattr(keyring, "_verify_key", counting_load)
    monkeypatch.setattr(tokens, "parse", counting_parse)
    return calls


def rebuilt() -> keyring.Snapshot:
    """The snapshot as another worker reads it at its next check.

    In the PostgreSQL + Redis lane the store's voucher lives in Redis, and the
    writer drops it only on commit (never, inside a test's transaction): it is
    dropped here, as it expires within the interval anyway.
    """
    keyring._State.checked_at = -1e9
    propagation.announce()
    return keyring.get_snapshot()


def test_revoke_user_reuses_every_key_and_every_remembered_token(counted):
    Key.objects.generate_secret("t")
    alice, bob = tokens.issue("alice"), tokens.issue("bob")
    before = keyring.get_snapshot()
    tokens.verify(alice), tokens.verify(bob)
    counted.update(key=0, parse=0)

    keyring._State.snapshot = before  # this process stands for a worker elsewhere
    RevokedUser.objects.revoke("bob", "elsewhere")
    keyring._State.snapshot = before
    after = rebuilt()
    assert after is not before and after.version > before.version
    assert after.keyset is before.keyset
    assert after.by_kid == before.by_kid and "bob" in after.revoked_users
    assert tokens.verify(alice).user_id == "alice"  # remembered: not parsed again
    with pytest.raises(TokenError) as caught:
        tokens.verify(bob)  # remembered too, and refused by the new revocation
    assert caught.value.code == "token_revoked"
    assert counted == {"key": 0, "parse": 0}


def test_the_mode_switch_keeps_the_key_set(counted):
    Key.objects.generate_secret("t")
    before = keyring.get_snapshot()
    counted.update(key=0)
    SecurityConfig.set_enabled(False, "t")
    keyring._State.snapshot = before
    after = rebuilt()
    assert after.enabled is False and after.keyset is before.keyset
    assert counted["key"] == 0


def test_a_key_change_makes_a_new_key_set_and_reuses_the_unchanged_keys(counted):
    first, _ = Key.objects.generate_secret("t")
    token = tokens.issue("alice")
    before = keyring.get_snapshot()
    tokens.verify(token)
    counted.update(key=0, parse=0)
    Key.objects.rotate_secret(3600, "t")
    keyring._State.snapshot = before
    after = rebuilt()
    assert after.keyset is not before.keyset
    assert counted["key"] == 1  # only the new secret was decrypted
    assert tokens.verify(token).kid == first.kid  # verified again against the new key set
    assert counted["parse"] == 1


def test_revocations_are_held_however_old(clock, settings):
    """Issue 16, item 1: a token without iat can outlive any window, so nothing is pruned."""
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "MAX_TOKEN_LIFETIME": 3600, "LEEWAY": 30}
    Key.objects.generate_secret("t")
    RevokedUser.objects.revoke("old", "t")
    clock.advance(30 * 86400)
    RevokedUser.objects.revoke("new", "t")
    assert set(rebuilt().revoked_users) == {"old", "new"}
