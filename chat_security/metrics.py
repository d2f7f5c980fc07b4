"""Prometheus metrics (SPEC §15), off unless ``CHAT_SECURITY["METRICS"]`` is True.

With the extra installed (``chat-security[metrics]``: prometheus_client) and the
setting on, each process counts into ``prometheus_client``'s default
registry, so a site that already exposes it (``django-prometheus``, its own
``/metrics``) shows these series too; :func:`metrics_view` serves a scrape,
adding up every worker's files in gunicorn's multi-process mode
(``PROMETHEUS_MULTIPROC_DIR``).

Cost and safety:

* Off, nothing imports ``prometheus_client`` (this module does only when
  metrics are switched on) and a counted request pays one global read in
  :func:`chat_security.usage.count_request` (``usage.observe is None``).
* On, a counted request pays a dictionary lookup and the client's ``inc()``:
  the labelled child for each (outcome, integration) pair is looked up once.
* Label values are bounded: integrations are the configured ones (names a
  process has seen, at most :data:`MAX_INTEGRATIONS`), codes are the SPEC's
  error codes; anything else counts as :data:`OTHER`. A token's user id,
  ``jti`` or ``kid`` is never a label (a key's kid is, for the keys in grace:
  stored keys, which only the site's admins create).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from . import clock, usage
from .conf import app_settings, register_cache
from .exceptions import ERROR_CODES, ChatSecurityError
from .integrations import NAME
from .log import get_logger
from .models import KeyState

logger = get_logger("chat_security.metrics")

#: The label value of anything outside the bounded sets; no integration name or
#: error code can be it (an integration name starts with a letter or digit).
OTHER = "_other"
#: The most integration names one process labels; more count as :data:`OTHER`.
MAX_INTEGRATIONS = 100
#: count_request's outcome -> (the ``outcome`` label, the ``code`` label).
OUTCOMES: dict[str, tuple[str, str]] = {
    "signed": ("accepted", ""),
    "unsigned": ("anonymous", ""),
    **{code: ("rejected", code) for code in ERROR_CODES},
}
#: The environment variable that puts prometheus_client in multi-process mode.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


class _Metrics:
    """The metric objects, made once per process (the registry refuses a second set)."""

    def __init__(self) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge

        self.verifications = Counter(
            "chat_security_verifications",
            "Chat requests and sockets identified, by integration and outcome "
            "(accepted, rejected, anonymous); code: the error code of a rejection",
            ("integration", "outcome", "code"),
        )
        self.sockets = Gauge(
            "chat_security_websocket_connections",
            "Chat WebSocket connections open now, by integration",
            ("integration",),
            multiprocess_mode="livesum",  # the live workers' sockets, added up
        )
        self.fetches = Counter(
            "chat_security_key_fetches",
            "Fetches of identity providers' key sets, by integration and outcome (ok, error)",
            ("integration", "outcome"),
        )
        REGISTRY.register(GraceCollector())


#: (count_request's outcome, integration) -> the counter's child; only bounded pairs.
#: Module-level: the counting path reads it once per request.
_children: dict[tuple[str, str], Any] = {}


class _State:
    lock = threading.Lock()
    metrics: _Metrics | None = None
    on = False
    #: the integration names labelled so far (at most MAX_INTEGRATIONS)
    integrations: set[str] = set()


# -- switching on and off ---------------------------------------------------------------


def enable() -> bool:
    """Count from now on; False (and a warning) when prometheus_client is not installed."""
    with _State.lock:
        if _State.metrics is None:
            try:
                _State.metrics = _Metrics()
            except ImportError:
                logger.warning(
                    "CHAT_SECURITY['METRICS'] is on but prometheus_client is not installed: "
                    "install the metrics extra, chat-security[metrics] (check E028); "
                    "metrics stay off"
                )
                return False
        _State.on = True
        usage.observe = _count
    return True


def disable() -> None:
    """Stop counting (the series keep their values)."""
    _State.on = False
    usage.observe = None


def enabled() -> bool:
    return _State.on


def apply_setting() -> None:
    """Switch on or off as ``METRICS`` says: at startup and whenever the settings change."""
    # raw(): read, not memoised; this runs inside the settings-change receiver
    if app_settings.raw("METRICS") is True:
        enable()
    else:
        disable()


register_cache(apply_setting)


# -- bounded labels -----------------------------------------------------------------------


def integration_label(name: Any) -> str:
    """``name`` as a label value: a configured integration's name, else :data:`OTHER`."""
    if name in _State.integrations:
        return str(name)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return OTHER
    with _State.lock:
        if len(_State.integrations) >= MAX_INTEGRATIONS:
            return OTHER
        _State.integrations.add(name)
    return name


def _count(outcome: str, integration: str) -> None:
    """``usage.observe`` while metrics are on: one counted request."""
    child = _children.get((outcome, integration))
    if child is None:
        child = _verification_child(outcome, integration)
    child.inc()


def _verification_child(outcome: str, integration: str) -> Any:
    metrics = _State.metrics
    assert metrics is not None
    outcome_label, code = OUTCOMES.get(outcome, ("rejected", OTHER))
    name = integration_label(integration)
    child = metrics.verifications.labels(name, outcome_label, code)
    if outcome in OUTCOMES and name == integration:  # remember only what is bounded
        _children[(outcome, integration)] = child
    return child


def open_sockets(integration: str) -> Any | None:
    """The open-sockets gauge of ``integration`` (inc when a socket opens, dec when it
    closes, on the same object), or None while metrics are off."""
    metrics = _State.metrics
    if not _State.on or metrics is None:
        return None
    return metrics.sockets.labels(integration_label(integration))


def count_fetch(integration: str, ok: bool) -> None:
    """A key set fetch of ``integration`` ended (``remote.sources``); never raises."""
    metrics = _State.metrics
    if not _State.on or metrics is None:
        return
    try:
        metrics.fetches.labels(integration_label(integration), "ok" if ok else "error").inc()
    except Exception:  # noqa: BLE001 — advisory, like the usage counters
        logger.debug("key fetch not counted", exc_info=True)


# -- keys in grace, read at scrape time ------------------------------------------------------


class GraceCollector:
    """``chat_security_key_grace_remaining_seconds{integration, kid}``: for each key in
    its grace period now, the seconds until the grace ends. Computed from the key
    snapshot when scraped, so every worker answers the same and nothing is stored."""

    NAME = "chat_security_key_grace_remaining_seconds"
    HELP = "Seconds until a key in its grace period stops verifying, by integration and kid"

    def _family(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        return GaugeMetricFamily(self.NAME, self.HELP, labels=("integration", "kid"))

    def describe(self) -> list[Any]:
        # Registering calls describe (not collect): no key store read at startup.
        return [self._family()]

    def collect(self) -> Iterator[Any]:
        from . import keyring

        family = self._family()
        try:
            snapshot = keyring.get_snapshot()
        except ChatSecurityError:  # the store cannot be read: the series are absent
            yield family
            return
        now = clock.now()
        for entry in snapshot.by_kid.values():
            if entry.grace_until is not None and entry.state(now) == KeyState.GRACE:
                labels = (integration_label(entry.integration), entry.kid)
                family.add_metric(labels, entry.grace_until - now)
        yield family


# -- the scrape --------------------------------------------------------------------------------


def scrape_registry() -> Any:
    """What a scrape exposes: the default registry, or in multi-process mode
    (``PROMETHEUS_MULTIPROC_DIR``) every process's files added up, and the keys in grace."""
    from prometheus_client import REGISTRY, CollectorRegistry

    if not os.environ.get(MULTIPROC_DIR):
        return REGISTRY
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
    registry.register(GraceCollector())
    return registry


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The scrape, in the format the scraper asks for (Prometheus text by default).

    Mount it in the site's urls.py and keep it from the public (see
    docs/observability.md); 404 while metrics are off.
    """
    if not _State.on:
        raise Http404("chat_security metrics are off (CHAT_SECURITY['METRICS'])")
    from prometheus_client.exposition import choose_encoder

    encode: Callable[[Any], bytes]
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encode(scrape_registry()), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
