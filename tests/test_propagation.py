"""How workers learn of key-store changes: the shared cache's counter, the database as truth.

Issue 11, deliverable 2 (SPEC §12), and the database-down backoff of deliverable 7.
The "other worker" is a snapshot kept aside and put back (see test_store_versions).
"""

from __future__ import annotations

import math
import time

import pytest
from django.db import DatabaseError
from django.test import override_settings

from chat_security import keyring, propagation
from chat_security.exceptions import KeyStoreUnavailable
from chat_security.models import Key, RevokedUser, SecurityConfig

from .test_checks import ids


@pytest.fixture
def shared_cache(tmp_path, settings):
    """A cache every process shares: what Redis is in production (declared in KEY_CACHE_ALIAS)."""
    settings.CACHES = {
        "default": {"BACKEND": "tests.shared_cache.SharedInTests", "LOCATION": str(tmp_path)}
    }
    settings.CHAT_SECURITY = {
        **settings.CHAT_SECURITY,
        "KEY_CACHE_SECONDS": 60,  # vouchers trusted for 30 s: the tests move time themselves
        "KEY_CACHE_ALIAS": "default",
    }
    assert propagation.shared_cache() is not None
    return propagation.shared_cache()


def due_check(snap=None):
    """This process's next check of the store, as if its interval had passed."""
    if snap is not None:
        keyring._State.snapshot = snap  # it stands for a worker elsewhere
    keyring._State.checked_at = -1e9
    return keyring.get_snapshot()


as_other_worker = due_check


@pytest.mark.django_db
def test_a_worker_asks_the_cache_not_the_database(shared_cache, django_assert_num_queries):
    Key.objects.generate_secret("t")
    keyring.get_snapshot()  # read from the database, and vouched for in the cache
    with django_assert_num_queries(0):
        for _ in range(5):
            due_check()
    assert keyring.get_snapshot().interval == 30  # half KEY_CACHE_SECONDS with a shared cache


@pytest.mark.django_db
def test_one_query_vouches_for_every_worker(shared_cache, django_assert_num_queries):
    Key.objects.generate_secret("t")
    worker = keyring.get_snapshot()
    shared_cache.clear()  # no voucher (Redis restarted without its data, or evicted)
    with django_assert_num_queries(1):  # the first worker to check asks the database ...
        assert due_check(worker) is worker
    with django_assert_num_queries(0):  # ... and every other worker trusts its voucher
        assert due_check(worker) is worker


@pytest.mark.django_db(transaction=True)
def test_a_change_announced_in_the_cache_reaches_other_workers(shared_cache):
    key, _ = Key.objects.generate_secret("t")
    worker = keyring.get_snapshot()
    assert propagation.read_voucher() == worker.version
    Key.objects.revoke(key.kid, "elsewhere")
    assert propagation.read_voucher() is None  # dropped after the commit
    assert as_other_worker(worker).by_kid[key.kid].revoked_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_change_never_announced_is_seen_when_the_voucher_expires(shared_cache, monkeypatch):
    """The writer could not reach the cache (down, partitioned, or it died after its
    commit) and the cache kept its data: the voucher it could not drop expires, so the
    change is in force within KEY_CACHE_SECONDS all the same (found by tests/test_model.py)."""
    worker = keyring.get_snapshot()
    monkeypatch.setattr(propagation, "announce", lambda: None)  # committed, never announced
    SecurityConfig.set_enabled(False, "elsewhere")
    assert as_other_worker(worker).enabled is True  # the voucher is still fresh ...
    later = propagation.wall_clock() + propagation.voucher_lifetime()
    monkeypatch.setattr(propagation, "wall_clock", lambda: later)
    assert propagation.read_voucher() is None
    assert as_other_worker(worker).enabled is False  # ... and once it is not, the database


@pytest.mark.django_db
def test_a_voucher_is_trusted_only_for_its_version_and_lifetime(shared_cache, monkeypatch):
    now = propagation.wall_clock()
    propagation.vouch(7, now)
    assert propagation.read_voucher() == 7
    propagation.vouch(7, now - propagation.voucher_lifetime())
    assert propagation.read_voucher() is None  # too old
    propagation.vouch(7, now + 5)
    assert propagation.read_voucher() is None  # from the future: a clock that is wrong
    for junk in (7, "7", (None, now), ("7", now), (7, "now"), (7, now, 1)):
        shared_cache.set(propagation.VOUCHER_KEY, junk)
        assert propagation.read_voucher() is None


@pytest.mark.django_db(transaction=True)
def test_cache_down_falls_back_to_the_database(shared_cache, monkeypatch):
    worker = keyring.get_snapshot()

    def down(*args, **kwargs):
        raise ConnectionError("cache down")

    for method in ("get", "set", "delete"):
        monkeypatch.setattr(type(shared_cache), method, down)
    assert propagation.read_voucher() is None
    RevokedUser.objects.revoke("alice", "elsewhere")  # the announcement fails quietly
    assert "alice" in as_other_worker(worker).revoked_users


@pytest.mark.django_db
def test_a_cache_that_is_down_is_left_alone_for_a_while(shared_cache, monkeypatch):
    calls = []

    def down(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("cache down")

    monkeypatch.setattr(type(shared_cache), "get", down)
    for _ in range(20):
        assert propagation.read_voucher() is None
    assert len(calls) == 1  # one failed call, then the database is polled
    assert propagation.check_interval() == 60  # once per KEY_CACHE_SECONDS, as without a cache
    monkeypatch.undo()
    propagation.vouch(7, propagation.wall_clock())  # not even written meanwhile
    assert propagation.read_voucher() is None  # still within CACHE_RETRY_SECONDS
    propagation._State.cache_down_until -= propagation.CACHE_RETRY_SECONDS
    propagation.vouch(7, propagation.wall_clock())
    assert propagation.read_voucher() == 7  # back on the cache


PER_SERVER = [
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
    "django.core.cache.backends.filebased.FileBasedCache",
]


@pytest.mark.django_db
@pytest.mark.parametrize("backend", PER_SERVER)
def test_a_cache_servers_do_not_share_is_never_used(
    backend, tmp_path, settings, django_assert_num_queries
):
    """Issue 16, item 3: a per-server cache announced changes only on its own server."""
    settings.CACHES = {"default": {"BACKEND": backend, "LOCATION": str(tmp_path / "c")}}
    settings.CHAT_SECURITY = {
        **settings.CHAT_SECURITY,
        "KEY_CACHE_SECONDS": 0,
        "KEY_CACHE_ALIAS": "default",  # even when named
    }
    assert propagation.shared_cache() is None
    assert ids({"KEY_CACHE_ALIAS": "default"}) == ["chat_security.E019"]
    keyring.get_snapshot()
    with django_assert_num_queries(1):  # polls the database
        keyring.get_snapshot()


@pytest.mark.django_db
def test_by_default_no_cache_is_trusted_the_database_is_polled(settings, django_assert_num_queries):
    """A Redis cache as "default" is not taken for shared unless KEY_CACHE_ALIAS says so."""
    settings.CACHES = {"default": {"BACKEND": "tests.shared_cache.SharedInTests"}}
    settings.CHAT_SECURITY = {  # the defaults (the PostgreSQL lane's settings name one)
        k: v for k, v in settings.CHAT_SECURITY.items() if k != "KEY_CACHE_ALIAS"
    }
    assert propagation.shared_cache() is None
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "KEY_CACHE_SECONDS": 0}
    keyring.get_snapshot()
    with django_assert_num_queries(1):
        keyring.get_snapshot()


def test_key_cache_seconds_defaults_to_one_second():
    from chat_security.conf import DEFAULTS

    assert DEFAULTS["KEY_CACHE_SECONDS"] == 1


@pytest.mark.django_db
def test_while_the_database_is_down_it_is_retried_with_a_backoff(
    monkeypatch, django_assert_num_queries
):
    keyring.get_snapshot()
    keyring._State.checked_at = -1e9

    def broken(*args, **kwargs):
        raise DatabaseError("server closed the connection")

    monkeypatch.setattr(keyring, "_unchanged", broken)
    with pytest.raises(KeyStoreUnavailable):
        keyring.get_snapshot()
    with django_assert_num_queries(0), pytest.raises(KeyStoreUnavailable):
        keyring.get_snapshot()  # within the backoff: not even tried
    monkeypatch.undo()
    keyring._State.retry_at = 0.0  # the backoff (at most MAX_RETRY_SECONDS) has passed
    assert keyring.get_snapshot() is not None  # recovered, no restart
    assert keyring._State.failures == 0


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("shared", []),
        (None, []),
        ("default", ["chat_security.E019"]),  # local memory
        ("nope", ["chat_security.E018"]),
        (3, ["chat_security.E018"]),
    ],
)
def test_e018_e019_key_cache_alias(alias, expected, settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "shared": {"BACKEND": "tests.shared_cache.SharedInTests"},
    }
    assert ids({"KEY_CACHE_ALIAS": alias}) == expected


@override_settings(CHAT_SECURITY={"KEY_CACHE_ALIAS": None})
def test_no_alias_means_polling():
    assert propagation.shared_cache() is None and propagation.read_voucher() is None


@pytest.mark.django_db
def test_the_backoff_is_capped_however_long_the_database_stays_down(monkeypatch):
    """Issue 16, item 4: 0.05 * 2**failures overflowed after 1024 failures in a row."""
    keyring.get_snapshot()

    def broken(*args, **kwargs):
        raise DatabaseError("server closed the connection")

    monkeypatch.setattr(keyring, "_unchanged", broken)
    keyring._State.failures = 5000
    keyring._State.checked_at = keyring._State.retry_at = -1e9
    with pytest.raises(KeyStoreUnavailable):
        keyring.get_snapshot()  # not OverflowError
    assert 0 < keyring._State.retry_at - time.monotonic() <= keyring.MAX_RETRY_SECONDS
    delays = [keyring.retry_delay(n) for n in range(1, 3000)]
    assert delays[0] == keyring.FIRST_RETRY_SECONDS
    assert delays == sorted(delays) and max(delays) == keyring.MAX_RETRY_SECONDS


class _Monotonic:
    """keyring's view of time.monotonic, moved by the test."""

    def __init__(self) -> None:
        # A whole number: every step the tests take is then exact. From a fractional
        # start, t + 59 + 1 - (t + 59) can come out below 1 near a power of two
        # seconds of uptime, and the snapshot looked fresh a moment too long.
        self.t = float(math.ceil(time.monotonic()))

    def monotonic(self) -> float:
        return self.t


@pytest.mark.django_db
def test_a_change_made_behind_the_stores_back_is_seen_within_the_maximum_age(monkeypatch, settings):
    """Issue 16, item 8: QuerySet.update moves no version; the snapshot had no age limit."""
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "KEY_CACHE_SECONDS": 1}
    fake = _Monotonic()
    monkeypatch.setattr(keyring, "time", fake)
    key, _ = Key.objects.generate_secret("t")
    assert keyring.get_snapshot().by_kid[key.kid].revoked_at is None
    Key.objects.filter(kid=key.kid).update(revoked_at=key.created_at)  # no version moves
    fake.t += keyring.MAX_SNAPSHOT_AGE - 1
    assert keyring.get_snapshot().by_kid[key.kid].revoked_at is None  # allowed: not yet
    fake.t += 1
    assert keyring.get_snapshot().by_kid[key.kid].revoked_at is not None


@pytest.mark.django_db
def test_an_unchanged_store_costs_one_small_query_per_interval_until_the_maximum_age(
    monkeypatch, settings, django_assert_num_queries
):
    settings.CHAT_SECURITY = {
        **settings.CHAT_SECURITY, "KEY_CACHE_SECONDS": 1, "KEY_CACHE_ALIAS": None
    }  # fmt: skip
    fake = _Monotonic()
    monkeypatch.setattr(keyring, "time", fake)
    Key.objects.generate_secret("t")
    first = keyring.get_snapshot()
    fake.t += 1
    with django_assert_num_queries(1):  # the version
        assert keyring.get_snapshot() is first
    fake.t += keyring.MAX_SNAPSHOT_AGE
    with django_assert_num_queries(5):  # config, integrations, keys, key sources, revocations
        again = keyring.get_snapshot()
    assert again is not first and again.keyset is first.keyset  # nothing re-parsed
