from __future__ import annotations

import asyncio
import inspect

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


@pytest.fixture(autouse=True)
def _sockets_end_with_their_test(request):
    """An async test's sockets end with it (see ``sockets_settle``)."""
    if inspect.iscoroutinefunction(getattr(request, "function", None)):
        request.getfixturevalue("sockets_settle")


@pytest.fixture
async def sockets_settle():
    """Each async test gets its own channel layer and leaves no watcher at work.

    Its event loop is closed after it. A channel layer kept from an earlier test
    (channels_redis) may still hold a receive lock bound to that test's loop; and
    a watcher cancelled while a re-check runs in the database thread would still
    be querying when pytest-django flushes the database. So: a fresh layer for the
    test (Channels resets its layers when CHANNEL_LAYERS changes), and, after it,
    the watcher stopped and the database thread idle.
    """
    from channels.db import database_sync_to_async
    from django.conf import settings
    from django.test import override_settings

    from chat_security.websocket.watcher import Watcher

    with override_settings(CHANNEL_LAYERS=settings.CHANNEL_LAYERS):
        yield
        watcher = Watcher.running.get(asyncio.get_running_loop())
        if watcher is not None and watcher.task is not None:
            watcher.connections.clear()
            watcher.task.cancel()
            await asyncio.gather(watcher.task, return_exceptions=True)
        await database_sync_to_async(lambda: None)()  # queued behind any call in flight


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


@pytest.fixture
def snapshot_not_rechecked():
    """For tests that count a page's queries: no version check falls due between two
    measured requests however slowly the machine runs (KEY_CACHE_SECONDS: an hour).
    This process's own changes still reach its snapshot at once (they invalidate it
    locally), so the page shows what the test wrote."""
    from tests.tokencraft import chat_settings

    with chat_settings({"KEY_CACHE_SECONDS": 3600}):
        yield
