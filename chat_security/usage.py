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
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

from django.db import Error as DjangoDBError  # DatabaseError and InterfaceError alike
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce, Greatest

from . import clock
from .conf import app_settings
from .integrations import DEFAULT_INTEGRATION
from .log import get_logger
from .models import FailureSample, Key, KeyKind, TrafficStat

logger = get_logger("chat_security.usage")

#: A traffic bucket: (hour since the epoch, integration, outcome, kid or "").
Bucket = tuple[int, str, str, str]


class Failure(NamedTuple):
    """A refused request as the panel shows it (SPEC §15): never token material."""

    at: float
    integration: str
    code: str
    kid: str
    iss: str
    channel: str
    path: str
    user_agent: str
    network: str


class _Tally:
    """One thread's counters. Only that thread writes ``counts`` and ``last_use``.

    ``counts`` maps a kid (str) to its verifications and an ``(hour,
    integration, outcome, kid)`` bucket to protected requests; both only grow.
    ``written`` is what the last successful flush wrote of them (only flushes
    replace it). ``failures`` holds the latest refusals per integration (at most
    ``FAILURE_SAMPLES`` each), numbered by ``failure_seq``; ``failures_written``
    is the number of the last one a flush wrote.
    """

    __slots__ = (
        "thread", "counts", "last_use", "hour", "written", "failures", "failure_seq",
        "failures_written",
    )  # fmt: skip

    def __init__(self) -> None:
        self.thread = threading.current_thread()
        self.counts: dict[str | Bucket, int] = {}
        self.last_use: dict[str, float] = {}
        self.hour = -1
        self.written: dict[str | Bucket, int] = {}
        self.failures: dict[str, deque[tuple[int, Failure]]] = {}
        self.failure_seq = 0
        self.failures_written = 0

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
    #: when this process last pruned old traffic rows (-inf: not yet, so the first flush does)
    pruned_at: float = -math.inf


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


def record_traffic(
    outcome: str, now: float | None = None, integration: str = DEFAULT_INTEGRATION
) -> None:
    """Count a protected request by outcome: "signed", "unsigned" or an error code."""
    _record(None, outcome, clock.now() if now is None else now, integration)


def record_signed(
    kid: str, now: float | None = None, integration: str = DEFAULT_INTEGRATION
) -> None:
    """A protected request verified with key ``kid``: its use and its traffic, at once."""
    _record(kid, "signed", clock.now() if now is None else now, integration)


#: Called with each counted request's (outcome, integration) while Prometheus metrics
#: are on (set by :mod:`chat_security.metrics`, SPEC §15). None while they are off: the
#: counting path then pays this one global read, and prometheus_client is never imported.
observe: Callable[[str, str], None] | None = None


def count_request(
    outcome: str,
    kid: str | None = None,
    now: float | None = None,
    integration: str = DEFAULT_INTEGRATION,
) -> None:
    """Count a protected request of ``integration`` by ``outcome``; with ``kid``, a
    "signed" one and that key's use, at ``now``. For the HTTP and WebSocket shells.

    The counters are advisory (the admin's readiness figures): this never fails
    the request; a failure is logged at debug level.
    """
    try:
        if observe is not None:
            observe(outcome, integration)
        if kid is None:
            record_traffic(outcome, now, integration)
        else:
            record_signed(kid, now, integration)
    except Exception:  # noqa: BLE001
        logger.debug("chat traffic counter not recorded", exc_info=True)


def count_verified(result: Any, now: float | None = None) -> None:
    """Count a request verified as ``result`` (a VerifiedToken): "signed" under its
    integration, with its key's use; a fetched key's uses are not counted (no row)."""
    kid = result.kid if result.key_kind != KeyKind.REMOTE_KEY else None
    count_request("signed", kid, now, result.integration)


def record_failure(failure: Failure) -> None:
    """Keep a refused request for the panel's recent failures (written by the flush).

    Advisory like the counters: never fails the request. Each thread keeps the
    newest ``FAILURE_SAMPLES`` per integration, so a flood of bad tokens costs a
    bounded amount of memory and one bounded write per flush.
    """
    try:
        limit = app_settings.FAILURE_SAMPLES
        if not limit:
            return
        tally = _tally()
        kept = tally.failures.get(failure.integration)
        if kept is None or kept.maxlen != limit:
            kept = tally.failures[failure.integration] = deque(kept or (), maxlen=limit)
        # Appended before its number is published: a flush that reads failure_seq
        # then finds every sample numbered up to it (else one would be marked
        # written unseen, and never written).
        seq = tally.failure_seq + 1
        kept.append((seq, failure))
        tally.failure_seq = seq
    except Exception:  # noqa: BLE001
        logger.debug("chat failure sample not recorded", exc_info=True)


def _record(
    kid: str | None, outcome: str | None, now: float, integration: str = DEFAULT_INTEGRATION
) -> None:
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
        bucket = (hour, integration, outcome, kid or "")
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
        failures, failures_upto = _new_failures(tallies)
        usage: dict[str, int] = {}
        last_use: dict[str, float] = {}
        traffic: dict[Bucket, int] = {}
        for tally, counts, used in copies:
            written = tally.written
            for key, count in counts.items():
                grown = count - written.get(key, 0)
                if not grown:
                    continue
                if isinstance(key, str):  # a kid; else an (hour, integration, outcome, kid)
                    usage[key] = usage.get(key, 0) + grown
                    last_use[key] = max(last_use.get(key, 0.0), used[key])
                else:
                    traffic[key] = traffic.get(key, 0) + grown
        prune = _prune_due()
        if usage or traffic or failures or prune:
            try:
                # durable: Django refuses to nest it inside the caller's transaction.
                with transaction.atomic(durable=True):
                    _write(usage, last_use, traffic)
                    _write_failures(failures)
                    if prune:
                        _prune(clock.now())
                        _trim_failures()
            except RuntimeError:
                _defer_flush()
                return False
            except DjangoDBError:
                return False  # counters are advisory; never fail a request for them
        for tally, counts, _used in copies:
            tally.written = counts
        for tally, upto in failures_upto:
            tally.failures_written = upto
        if prune:
            _State.pruned_at = time.monotonic()
        _forget_finished_threads()
        return True
    finally:
        _State.flushing.release()


def _forget_finished_threads() -> None:
    """Tallies of threads that ended and whose counts are all written (under ``flushing``)."""
    with _State.lock:
        _State.tallies = [
            t
            for t in _State.tallies
            if t.thread.is_alive() or t.written != t.counts or t.failures_written < t.failure_seq
        ]


def _new_failures(tallies: list[_Tally]) -> tuple[list[Failure], list[tuple[_Tally, int]]]:
    """The refusals no flush has written yet, newest ``FAILURE_SAMPLES`` per integration,
    and how far each tally's numbering goes (recorded once they are written)."""
    found: dict[str, list[Failure]] = {}
    upto = []
    for tally in tallies:
        seq = tally.failure_seq  # read first: a sample numbered later waits for next time
        written = tally.failures_written
        for kept in list(tally.failures.values()):
            for n, failure in kept.copy():  # a copy: only the owning thread appends
                if written < n <= seq:
                    found.setdefault(failure.integration, []).append(failure)
        upto.append((tally, seq))
    limit = app_settings.FAILURE_SAMPLES or 0
    if not limit:  # keep none ([-0:] would be all of them)
        return [], upto
    newest = [f for fs in found.values() for f in sorted(fs, key=lambda f: f.at)[-limit:]]
    return newest, upto


def _write_failures(failures: list[Failure]) -> None:
    """Store refusals and keep only the newest ``FAILURE_SAMPLES`` of each integration."""
    if not failures:
        return
    FailureSample.objects.bulk_create(
        FailureSample(
            integration=f.integration, at=datetime.fromtimestamp(f.at, tz=UTC), code=f.code,
            kid=f.kid, iss=f.iss, channel=f.channel, path=f.path, user_agent=f.user_agent,
            network=f.network,
        )
        for f in failures
    )  # fmt: skip
    for integration in {f.integration for f in failures}:
        _keep_newest(integration, app_settings.FAILURE_SAMPLES)


def _keep_newest(integration: str, limit: int) -> None:
    old = FailureSample.objects.filter(integration=integration).order_by("-at", "-id")[limit:]
    stale = list(old.values_list("pk", flat=True))
    if stale:
        FailureSample.objects.filter(pk__in=stale).delete()


def _trim_failures() -> None:
    """Keep at most ``FAILURE_SAMPLES`` refusals of each integration, none at 0: the
    setting may have been lowered since they were written (with the hourly prune)."""
    limit = app_settings.FAILURE_SAMPLES
    if not limit:
        FailureSample.objects.all().delete()
        return
    names = FailureSample.objects.order_by("integration").values_list("integration", flat=True)
    for integration in names.distinct():
        _keep_newest(integration, limit)


#: How often a process prunes traffic rows older than TRAFFIC_RETENTION_DAYS, seconds.
PRUNE_EVERY = 3600


def _prune_due() -> bool:
    return time.monotonic() - _State.pruned_at >= PRUNE_EVERY


def _prune(now: float) -> int:
    """Delete traffic rows past ``TRAFFIC_RETENTION_DAYS``; how many went."""
    cutoff = datetime.fromtimestamp(now - app_settings.TRAFFIC_RETENTION_DAYS * 86400, tz=UTC)
    deleted, _by_model = TrafficStat.objects.filter(hour__lt=cutoff).delete()
    return deleted


def _defer_flush() -> None:
    """Called inside someone's transaction: flush once it has committed."""
    if _State.flush_deferred:
        return
    _State.flush_deferred = True
    transaction.on_commit(_deferred_flush)


def _deferred_flush() -> None:
    _State.flush_deferred = False
    flush_usage()


def _write(usage: dict[str, int], last_use: dict[str, float], traffic: dict[Bucket, int]) -> None:
    for kid, count in usage.items():
        when = Value(datetime.fromtimestamp(last_use[kid], tz=UTC))
        Key.objects.filter(kid=kid).update(
            use_count=F("use_count") + count,
            # SQLite's MAX() is NULL if an argument is: never used → our time.
            last_used=Greatest(Coalesce("last_used", when), when),
        )
    for (hour, integration, outcome, kid), count in traffic.items():
        bucket: dict[str, Any] = {"hour": datetime.fromtimestamp(hour * 3600, tz=UTC),
                  "integration": integration, "outcome": outcome, "kid": kid}  # fmt: skip
        row = TrafficStat.objects.filter(**bucket)
        if not row.update(count=F("count") + count):  # one query once the hour's row exists
            TrafficStat.objects.get_or_create(**bucket)  # another worker may make it first
            row.update(count=F("count") + count)


def pending() -> bool:
    """Whether some thread counted something not written yet."""
    with _State.lock:
        tallies = list(_State.tallies)
    return any(dict(t.counts) != t.written or t.failures_written < t.failure_seq for t in tallies)


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
            tally.failures_written = tally.failure_seq
        _State.flushed_at = time.monotonic()
        _State.flush_at = -math.inf
        _State.flush_deferred = False
