from __future__ import annotations

import pytest

from chat_security import conf


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Each test starts with no cached settings, keys, key snapshot, counters or
    remembered verifications: as after a settings change."""
    conf.reset_caches()
    yield
    conf.reset_caches()


@pytest.fixture(autouse=True)
def _empty_cache():
    """Each test starts with an empty Django cache. In the PostgreSQL lane it is
    Redis, which keeps what a test wrote after its database transaction is rolled
    back; local memory would too, for the rest of the session."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, which it drops at the end of the session.

    Async ORM calls made by tests themselves (``await Message.objects.acount()``)
    run in asgiref's executor thread, whose connection nothing closes; PostgreSQL
    refuses to drop a database still in use, so those sessions end first.
    """
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


class Clock:
    """A controllable replacement for chat_security.clock.now."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock(monkeypatch):
    from chat_security import clock as clock_module

    c = Clock()
    monkeypatch.setattr(clock_module, "now", c)
    return c
