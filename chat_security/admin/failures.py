"""Read side of the panel's "Recent failures" (SPEC §15): why a customer's chat is refused.

One section per integration, for everyone who may open the panel (support
staff with ``test_tokens`` and key managers): the newest ``FAILURE_SAMPLES``
refusals, newest first, and below them what each code that occurs means and
what to do about it (the token tester's hint). Read-only, and never token
material: the rows hold what ``chat_security.refusals`` kept.

Each worker writes its refusals with its usage counters, at most every
``USAGE_FLUSH_SECONDS``; rendering the panel writes this process's first,
so what another worker refused shows within that interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

from .. import refusals, usage
from ..conf import app_settings
from ..exceptions import ERROR_CODES, HINTS
from ..models import FailureSample
from ..timefmt import exact_utc, relative
from .data import anchor

#: How the panel names a channel.
CHANNELS = {"http": "HTTP", "websocket": "WebSocket"}


def failure_row(sample: FailureSample, now: float) -> dict[str, Any]:
    """One kept refusal as a row: the CLI's fields, the time in UTC and relative to now."""
    at = sample.at.astimezone(UTC)
    return {
        **refusals.describe(sample),
        "at_utc": exact_utc(sample.at),
        "day": f"{at:%Y-%m-%d}",
        "time": f"{at:%H:%M:%S} UTC",
        "ago": relative(sample.at.timestamp(), now),
        "channel_label": CHANNELS.get(sample.channel, sample.channel),
    }


def _codes(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each code among ``rows`` once, most frequent first: its explanation and hint."""
    seen: dict[str, int] = {}
    for row in rows:
        seen[row["code"]] = seen.get(row["code"], 0) + 1
    return [
        {
            "code": code,
            "count": str(n),
            "explanation": ERROR_CODES.get(code, ""),
            "hint": HINTS.get(code, ""),
        }
        for code, n in sorted(seen.items(), key=lambda item: (-item[1], item[0]))
    ]


def failure_parts(names: Sequence[str], now: float) -> list[dict[str, Any]]:
    """Each integration's "Recent failures" section, in the order of ``names``.

    A fixed number of queries whatever the number of integrations: this
    process's flush (none when nothing is pending) and one read of the table.
    """
    usage.flush_usage()  # this process's refusals show at once; others' within the interval
    by_name: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for sample in refusals.recent(names):
        by_name[sample.integration].append(failure_row(sample, now))
    return [
        {
            "name": name,
            "ids": {"failures": anchor(name, "failures")},
            "rows": rows,
            "codes": _codes(rows),
        }
        for name, rows in by_name.items()
    ]


def failures_context(names: Sequence[str], now: float) -> dict[str, Any]:
    """What the panel's template needs for the sections: the parts and the settings
    their text names."""
    return {
        "failure_parts": failure_parts(names, now),
        "failure_samples": app_settings.FAILURE_SAMPLES,
        "usage_flush_seconds": int(app_settings.USAGE_FLUSH_SECONDS),
    }
