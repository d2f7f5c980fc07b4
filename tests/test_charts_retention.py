"""How long the charts' hourly rows stay (SPEC §15): the usage flush deletes rows older
than TRAFFIC_RETENTION_DAYS at the first flush of a process, then at most once an hour.

The wall clock is the controlled ``clock`` (2027-01-15 08:00 UTC); the monotonic
clock that spaces the prunes is replaced in ``usage`` only.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from chat_security import usage
from chat_security.models import TrafficStat

from .servers import manage, process_env

pytestmark = pytest.mark.django_db(transaction=True)  # the flush's own transaction

NOW = datetime(2027, 1, 15, 8, tzinfo=UTC)


class Monotonic:
    def __init__(self) -> None:
        # Whole seconds, ahead of the real clock: whole steps then add up exactly.
        self.t = float(math.ceil(time.monotonic()))

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def new_process(monkeypatch) -> Monotonic:
    """``usage`` as in a process that has not flushed yet, on a monotonic clock the test moves."""
    monotonic = Monotonic()
    monkeypatch.setattr(usage, "time", SimpleNamespace(monotonic=monotonic))
    monkeypatch.setattr(usage._State, "pruned_at", -math.inf)
    return monotonic


def rows_at(*ages: timedelta, integration: str = "default") -> None:
    for age in ages:
        TrafficStat.objects.create(
            hour=NOW - age, integration=integration, outcome="signed", count=1
        )


def kept() -> list[timedelta]:
    return sorted(NOW - hour for hour in TrafficStat.objects.values_list("hour", flat=True))


def deletes(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].startswith('DELETE FROM "chat_security_traffic')]


def test_the_first_flush_of_a_process_deletes_rows_past_the_retention(clock, new_process):
    days = timedelta(days=35)  # TRAFFIC_RETENTION_DAYS' default
    rows_at(days + timedelta(hours=1), days, timedelta(hours=1))
    rows_at(days + timedelta(days=3), integration="ios")  # every integration's
    assert usage.flush_usage()  # nothing counted: it prunes all the same
    assert kept() == [timedelta(hours=1), days]  # the row exactly at the limit stays


def test_then_at_most_once_an_hour(clock, new_process):
    assert usage.flush_usage()
    rows_at(timedelta(days=40))
    new_process.t += usage.PRUNE_EVERY - 1
    with CaptureQueriesContext(connection) as queries:
        usage.count_request("signed", "retention-test-key")  # a flush is due: it writes
        usage.flush_usage()
    assert any("chat_security_trafficstat" in q["sql"] for q in queries)
    assert not deletes(queries)
    assert timedelta(days=40) in kept()
    new_process.t += 1
    with CaptureQueriesContext(connection) as queries:
        assert usage.flush_usage()
    assert len(deletes(queries)) == 1
    assert kept() == [timedelta(0)]  # the request counted this hour


def test_the_retention_is_a_setting(clock, new_process, settings):
    settings.CHAT_SECURITY = {**settings.CHAT_SECURITY, "TRAFFIC_RETENTION_DAYS": 2}
    rows_at(timedelta(days=2, hours=1), timedelta(days=1, hours=23))
    assert usage.flush_usage()
    assert kept() == [timedelta(days=1, hours=23)]


def test_a_prune_the_database_refused_is_tried_again_at_the_next_flush(
    clock, new_process, monkeypatch
):
    rows_at(timedelta(days=36))
    real = usage._prune

    def refused(now: float) -> int:
        raise DatabaseError("database is locked")

    monkeypatch.setattr(usage, "_prune", refused)
    assert not usage.flush_usage()
    monkeypatch.setattr(usage, "_prune", real)
    assert kept() == [timedelta(days=36)]
    assert usage.flush_usage()  # no hour has passed, but no prune was done
    assert kept() == []


INSERT = """
from datetime import UTC, datetime, timedelta
from chat_security.models import TrafficStat
now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
for days in (40, 34):
    TrafficStat.objects.create(hour=now - timedelta(days=days), outcome="signed", count=1)
"""


def test_a_new_process_prunes_at_its_first_flush(tmp_path):
    """Two real processes: one writes the rows (and never flushes), the next flushes once."""
    env = process_env("tests.process_settings", tmp_path / "db.sqlite3")
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "shell", "-v0", "-c", INSERT)
    flush = (
        "import json\n"
        "from chat_security import usage\n"
        "from chat_security.models import TrafficStat\n"
        "print(json.dumps([TrafficStat.objects.count(), usage.flush_usage(),"
        " TrafficStat.objects.count()]))\n"
    )
    assert json.loads(manage(env, "shell", "-v0", "-c", flush)) == [2, True, 1]
