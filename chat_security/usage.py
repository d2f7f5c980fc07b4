"""Usage and traffic counters: counted in memory per thread, written out now and then.

Counting is on every verified request's path, so it takes no lock and
touches nothing another thread writes. Each thread has its own
:class:`_Tally`, which only that thread writes and whose counts only grow.
A flush (any thread, at most every ``USAGE_FLUSH_SECONDS``, and at exit)
copies every tally (``dict(d)`` is one consistent step: under the GIL, and on
free-threaded CPython under the dict's own per-object lock), writes what
grew since the last successful flush, and only then records the copy as
written. A failed or deferred flush therefore loses nothing, and no count
is written twice.

The write runs in a transaction of its own, never inside the caller's:
inside ``ATOMIC_REQUESTS`` or an outer ``atomic`` a failed write would break
the rest of the request, and a successful one would hold the key rows'
locks until the request commits. There it is deferred until the outer
transaction commits (``on_commit``). ``last_used`` only moves forward
(``Greatest``), whatever order workers flush in.
"""

from __future__ import annotations

import atexit
import math
import threading
import time
from datetime import UTC, datetime

from django.db import Error as DjangoDBError  # DatabaseError and InterfaceError alike
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Greatest

from . import clock
from .conf import app_settings
from .log import get_logger
from .models import Key, TrafficStat

logger = get_logger("chat_security.usage")


class _Tally:
    """One thread's counters. Only that thread writes ``counts`` and ``last_use``.

    ``counts`` maps a kid (str) to its verifications and an ``(hour,
    outcome)`` pair to protected requests; both only grow. ``written`` is
    what the last successful flush wrote of them (only flushes replace it).
    """

    __slots__ = ("thread", "counts", "last_use", "hour", "written")

    def __init__(self) -> None:
        self.thread = threading.current_thread()
        self.counts: dict[str | tuple[int, str], int] = {}
        self.last_use: dict[str, float] = {}
        self.hour = -1
        self.written: dict[str | tuple[int, str], int] = {}

    def new_hour(self, hour: int) -> None:
        """Drop the buckets of hours before the last one that were written in full.

        Nobody counts into an earlier hour any more, so one whose count equals
        its written count can go: the memory stays at a few hours' buckets.
        """
        written = self.written
        for bucket in [
            b
            for b, n in self.counts.items()
            if type(b) is tuple and b[0] < hour - 1 and written.get(b) == n
        ]:
            del self.counts[bucket]
        self.hour = hour


class _State:
    lock = threading.Lock()  # registering a thread's tally; never on the counting path
    flushing = threading.Lock()
    tallies: list[_Tally] = []
    flushed_at: float = time.monotonic()
    #: flushed_at + USAGE_FLUSH_SECONDS as last computed: before it, no flush can be due
    #: (-inf: not computed since the settings changed, so ask flush_due)
    flush_at: float = -math.inf
    flush_deferred: bool = False


_local = threading.local()


def _tally() -> _Tally:
    try:
        tally: _Tally = _local.tally
        return tally
    except AttributeError:
        tally = _local.tally = _Tally()
        with _State.lock:
            _State.tallies.append(tally)
        return tally


def flush_due(margin: float = 0.0) -> bool:
    """Whether a flush falls due within ``margin`` seconds."""
    due = _State.flush_at = _State.flushed_at + app_settings.USAGE_FLUSH_SECONDS
    return time.monotonic() >= due - margin


def _flushed(at: float) -> None:
    _State.flushed_at = at
    _State.flush_at = at + app_settings.USAGE_FLUSH_SECONDS


def record_use(kid: str, now: float | None = None) -> None:
    """Count a verification by key ``kid`` (at ``now``, default the clock's)."""
    _record(kid, None, clock.now() if now is None else now)


def record_traffic(outcome: str, now: float | None = None) -> None:
    """Count a protected request by outcome: "signed", "unsigned" or an error code."""
    _record(None, outcome, clock.now() if now is None else now)


def record_signed(kid: str, now: float | None = None) -> None:
    """A protected request verified with key ``kid``: its use and its traffic, at once."""
    _record(kid, "signed", clock.now() if now is None else now)


def count_request(outcome: str, kid: str | None = None, now: float | None = None) -> None:
    """Count a protected request by ``outcome``; with ``kid``, a "signed" one and that
    key's use, at ``now``. For the HTTP and WebSocket shells.

    The counters are advisory (the admin's readiness figures): this never fails
    the request; a failure is logged at debug level.
    """
    try:
        if kid is None:
            record_traffic(outcome, now)
        else:
            record_signed(kid, now)
    except Exception:  # noqa: BLE001
        logger.debug("chat traffic counter not recorded", exc_info=True)


def _record(kid: str | None, outcome: str | None, now: float) -> None:
    """The counting path: this thread's tally only, no lock, a few dictionary steps."""
    tally = _tally()
    counts = tally.counts
    if kid is not None:
        counts[kid] = counts.get(kid, 0) + 1
        tally.last_use[kid] = now
    if outcome is not None:
        hour = int(now // 3600)
        if hour != tally.hour:
            tally.new_hour(hour)
        bucket = (hour, outcome)
        counts[bucket] = counts.get(bucket, 0) + 1
    if time.monotonic() >= _State.flush_at and flush_due():
        flush_usage()


def flush_usage() -> bool:
    """Write what every thread counted since the last flush; True if it is written.

    False when the database refused (the counts stay for the next flush),
    when it was deferred to the end of the caller's transaction, or when
    another thread is flushing right now.
    """
    if not _State.flushing.acquire(blocking=False):
        return False
    try:
        _flushed(time.monotonic())
        with _State.lock:
            tallies = list(_State.tallies)
        copies = [(tally, dict(tally.counts), dict(tally.last_use)) for tally in tallies]
        usage: dict[str, int] = {}
        last_use: dict[str, float] = {}
        traffic: dict[tuple[int, str], int] = {}
        for tally, counts, used in copies:
            written = tally.written
            for key, count in counts.items():
                grown = count - written.get(key, 0)
                if not grown:
                    continue
                if isinstance(key, str):  # a kid; else an (hour, outcome) bucket
                    usage[key] = usage.get(key, 0) + grown
                    last_use[key] = max(last_use.get(key, 0.0), used[key])
                else:
                    traffic[key] = traffic.get(key, 0) + grown
        if usage or traffic:
            try:
                # durable: Django refuses to nest it inside the caller's transaction.
                with transaction.atomic(durable=True):
                    _write(usage, last_use, traffic)
            except RuntimeError:
                _defer_flush()
                return False
            except DjangoDBError:
                return False  # counters are advisory; never fail a request for them
        for tally, counts, _used in copies:
            tally.written = counts
        _forget_finished_threads()
        return True
    finally:
        _State.flushing.release()


def _forget_finished_threads() -> None:
    """Tallies of threads that ended and whose counts are all written (under ``flushing``)."""
    with _State.lock:
        _State.tallies = [t for t in _State.tallies if t.thread.is_alive() or t.written != t.counts]


def _defer_flush() -> None:
    """Called inside someone's transaction: flush once it has committed."""
    if _State.flush_deferred:
        return
    _State.flush_deferred = True
    transaction.on_commit(_deferred_flush)


def _deferred_flush() -> None:
    _State.flush_deferred = False
    flush_usage()


def _write(
    usage: dict[str, int], last_use: dict[str, float], traffic: dict[tuple[int, str], int]
) -> None:
    for kid, count in usage.items():
        when = Value(datetime.fromtimestamp(last_use[kid], tz=UTC))
        Key.objects.filter(kid=kid).update(
            use_count=F("use_count") + count,
            # SQLite's MAX() is NULL if an argument is: never used → our time.
            last_used=Greatest(Coalesce("last_used", when), when),
        )
    for (hour, outcome), count in traffic.items():
        at = datetime.fromtimestamp(hour * 3600, tz=UTC)
        stat, _created = TrafficStat.objects.get_or_create(hour=at, outcome=outcome)
        TrafficStat.objects.filter(pk=stat.pk).update(count=F("count") + count)


def pending() -> bool:
    """Whether some thread counted something not written yet."""
    with _State.lock:
        tallies = list(_State.tallies)
    return any(dict(t.counts) != t.written for t in tallies)


def _flush_at_exit() -> None:
    """A worker that stops reports what it counted (a crash loses one interval at most)."""
    try:
        if pending():
            flush_usage()
    except Exception:  # noqa: BLE001 — the interpreter is going away; never raise here
        logger.debug("usage counters not written at exit", exc_info=True)


atexit.register(_flush_at_exit)


def reset() -> None:
    """Forget every unwritten count (tests, setting changes)."""
    with _State.lock:
        for tally in _State.tallies:
            tally.written = dict(tally.counts)
        _State.flushed_at = time.monotonic()
        _State.flush_at = -math.inf
        _State.flush_deferred = False
