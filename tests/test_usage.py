"""Usage and traffic counters: per thread, lock-free to count, exact when added up (issue 12).

Counting takes no lock: each thread writes only its own tally. These tests
check that nothing is lost or counted twice when many threads count while
others flush, that old hours do not pile up, and that a finished thread's
counts are still written. (Four processes adding up: tests/test_races_pg.py.)
"""

from __future__ import annotations

import threading

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from chat_security import usage
from chat_security.models import Key, TrafficStat

pytestmark = pytest.mark.django_db(transaction=True)


def test_threads_counting_while_others_flush_add_up_exactly(clock, monkeypatch):
    key, _ = Key.objects.generate_secret("t")
    threads, per_thread = 6, 2000
    start = threading.Barrier(threads + 1)
    failures = iter([True, False, True, False, False] * 100)
    real_write = usage._write

    def sometimes_failing(*args):
        if next(failures, False):
            raise DatabaseError("flaky")  # kept in memory, written by a later flush
        real_write(*args)

    monkeypatch.setattr(usage, "_write", sometimes_failing)

    def count():
        start.wait()
        for _ in range(per_thread):
            usage.record_use(key.kid)
            usage.record_traffic("signed")

    workers = [threading.Thread(target=count) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    flushes = 0
    while any(w.is_alive() for w in workers) and flushes < 10_000:  # bounded
        usage.flush_usage()
        flushes += 1
    for worker in workers:
        worker.join(timeout=60)
    monkeypatch.undo()
    assert usage.flush_usage() is True
    assert Key.objects.get(pk=key.pk).use_count == threads * per_thread
    assert sum(TrafficStat.objects.values_list("count", flat=True)) == threads * per_thread
    assert flushes > 1
    assert not usage.pending()


def test_counting_takes_no_lock(clock, monkeypatch):
    class Tripwire:
        def __enter__(self):
            raise AssertionError("a lock was taken on the counting path")

        __exit__ = None
        acquire = __enter__

    usage.record_use("warm")  # this thread's tally exists
    monkeypatch.setattr(usage._State, "lock", Tripwire())
    monkeypatch.setattr(usage._State, "flushing", Tripwire())
    try:
        usage.record_use("k")
        usage.record_traffic("signed")
    finally:
        monkeypatch.undo()
    assert usage._tally().counts["k"] == 1


def test_written_hours_do_not_pile_up(clock):
    key, _ = Key.objects.generate_secret("t")
    for _ in range(48):  # two days, one request an hour
        usage.record_traffic("signed")
        usage.record_use(key.kid)
        assert usage.flush_usage()
        clock.advance(3600)
    usage.record_traffic("signed")
    tally = usage._tally()
    hours = {b[0] for b in tally.counts if type(b) is tuple}
    assert len(hours) <= 3  # the current hour, the last one, and one not yet dropped
    assert TrafficStat.objects.count() == 48


def test_a_finished_threads_counts_are_written_and_then_forgotten(clock):
    key, _ = Key.objects.generate_secret("t")
    worker = threading.Thread(target=lambda: [usage.record_use(key.kid) for _ in range(5)])
    worker.start()
    worker.join(timeout=30)
    assert usage.pending()
    assert usage.flush_usage()
    assert Key.objects.get(pk=key.pk).use_count == 5
    assert all(t.thread is not worker for t in usage._State.tallies)


def test_an_hour_already_written_costs_one_update_per_bucket(clock):
    usage.record_traffic("unsigned", integration="ios")
    assert usage.flush_usage()  # the hour's row is made
    usage.record_traffic("unsigned", integration="ios")
    usage.record_traffic("unsigned", integration="ios")
    with CaptureQueriesContext(connection) as flushed:
        assert usage.flush_usage()
    traffic = [q["sql"] for q in flushed.captured_queries if "trafficstat" in q["sql"]]
    assert len(traffic) == 1 and traffic[0].startswith("UPDATE"), traffic
    assert TrafficStat.objects.get(integration="ios", outcome="unsigned").count == 3
