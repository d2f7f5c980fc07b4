"""Read side of the panel's traffic charts (SPEC §15), from the hourly rows the usage
flush writes (``TrafficStat``: hour, integration, outcome, kid, count).

:func:`read` makes two queries for the whole panel, whatever the number of
integrations, keys or hours: the last 24 hours by hour, and the last 30 days by
UTC day. An hour or a day without a row counts zero. :func:`integration_charts`
turns one integration's counts into its charts and the sentences an admin reads
before switching security on and before revoking an old key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db.models import Sum
from django.db.models.functions import TruncDay
from django.utils.formats import date_format

from ..exceptions import ERROR_CODES
from ..models import KeyState, TrafficStat
from . import charts
from .charts import Series

HOURS = 24
DAYS = 30
HOUR, DAY = 3600, 86400
SIGNED, UNSIGNED, REJECTED = "signed", "unsigned", "rejected"
#: The stacked series, bottom up: what security on would keep, then what it would refuse.
OUTCOMES = (
    Series("chat-verified", "verified"),
    Series("chat-unsigned", "unsigned"),
    Series("chat-rejected", "rejected"),
)
KEY_KINDS = ("secrets", "public_keys", "signing_keys")  # the stored keys that verify tokens


def _kind(outcome: str) -> str:
    return outcome if outcome in (SIGNED, UNSIGNED) else REJECTED


@dataclass
class Traffic:
    """One integration's counts; hours and days are numbered since the epoch (UTC)."""

    first_hour: int
    first_day: int
    hourly: dict[str, list[int]] = field(default_factory=dict)  # signed/unsigned/rejected
    daily: dict[str, list[int]] = field(default_factory=dict)
    codes_24h: dict[str, int] = field(default_factory=dict)
    codes_30d: dict[str, int] = field(default_factory=dict)
    keys_24h: dict[str, int] = field(default_factory=dict)  # kid -> signed requests
    keys_daily: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in (SIGNED, UNSIGNED, REJECTED):
            self.hourly.setdefault(kind, [0] * HOURS)
            self.daily.setdefault(kind, [0] * DAYS)

    def total_24h(self, kind: str) -> int:
        return sum(self.hourly[kind])


def window(now: float) -> tuple[int, int, datetime]:
    """The first hour and the first day shown (the current ones are last), and the end."""
    hour = int(now // HOUR)
    return hour - HOURS + 1, int(now // DAY) - DAYS + 1, _at((hour + 1) * HOUR)


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def read(now: float) -> dict[str, Traffic]:
    """Integration name -> its :class:`Traffic` (only those with rows in the window)."""
    first_hour, first_day, end = window(now)
    found: dict[str, Traffic] = {}

    def of(name: str) -> Traffic:
        return found.setdefault(name, Traffic(first_hour, first_day))

    rows = TrafficStat.objects.filter(hour__lt=end)
    # A row is one (hour, integration, outcome, kid) already: nothing to add up.
    hourly = rows.filter(hour__gte=_at(first_hour * HOUR)).values_list(
        "integration", "outcome", "kid", "hour", "count"
    )
    for name, outcome, kid, hour, n in hourly:
        traffic, kind = of(name), _kind(outcome)
        traffic.hourly[kind][int(hour.timestamp()) // HOUR - first_hour] += n
        if kind == REJECTED:
            _count(traffic.codes_24h, outcome, n)
        elif kind == SIGNED and kid:
            _count(traffic.keys_24h, kid, n)
    # TruncDay in UTC whatever TIME_ZONE says: the charts' days are UTC days.
    daily = (
        rows.filter(hour__gte=_at(first_day * DAY))
        .annotate(day=TruncDay("hour", tzinfo=UTC))
        .values("integration", "outcome", "kid", "day")
        .annotate(n=Sum("count"))
        .values_list("integration", "outcome", "kid", "day", "n")
    )
    for name, outcome, kid, day, n in daily:
        traffic, kind = of(name), _kind(outcome)
        index = int(day.timestamp()) // DAY - first_day
        traffic.daily[kind][index] += n
        if kind == REJECTED:
            _count(traffic.codes_30d, outcome, n)
        elif kind == SIGNED and kid:
            traffic.keys_daily.setdefault(kid, [0] * DAYS)[index] += n
    return found


def _count(counts: dict[str, int], name: str, n: int) -> None:
    counts[name] = counts.get(name, 0) + n


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.0f} %" if total else "–"


def summary(signed: int, unsigned: int, codes: dict[str, int]) -> dict[str, Any]:
    """Requests signed / unsigned / rejected by code, with their shares (the Usage table)."""
    rejected = sorted(codes.items(), key=lambda item: (-item[1], item[0]))
    rejected_total = sum(n for _code, n in rejected)
    total = signed + unsigned + rejected_total
    return {
        "total": total,
        "signed": signed,
        "unsigned": unsigned,
        "signed_pct": _pct(signed, total),
        "unsigned_pct": _pct(unsigned, total),
        "rejected_total": rejected_total,
        "rejected_pct": _pct(rejected_total, total),
        "rejected": [
            {
                "code": code,
                "count": n,
                "pct": _pct(n, total),
                "explanation": ERROR_CODES.get(code, ""),
            }
            for code, n in rejected
        ],
    }


def site_summary(traffic: Iterable[Traffic]) -> dict[str, Any]:
    """The last 24 h of every integration added up (removed ones too)."""
    signed = unsigned = 0
    codes: dict[str, int] = {}
    for one in traffic:
        signed += one.total_24h(SIGNED)
        unsigned += one.total_24h(UNSIGNED)
        for code, n in one.codes_24h.items():
            _count(codes, code, n)
    return summary(signed, unsigned, codes)


# -- one integration's charts ----------------------------------------------------------


def _hour_labels(first_hour: int) -> tuple[list[str], list[str]]:
    """Each hour's full name, and a tick label every third hour (with the date at 00:00)."""
    names, labels = [], []
    for n in range(HOURS):
        at = _at((first_hour + n) * HOUR)
        names.append(f"{at:%Y-%m-%d %H}:00")
        label = f"{at:%H}:00" if at.hour % 3 == 0 else ""
        labels.append(f"{label}\n{date_format(at, 'M j')}" if at.hour == 0 else label)
    return names, labels


def _day_labels(first_day: int) -> tuple[list[str], list[str]]:
    """Each day's date, and a tick label every fifth day counted back from today."""
    days = [_at((first_day + n) * DAY) for n in range(DAYS)]
    labels = [date_format(d, "M j") if (DAYS - 1 - n) % 5 == 0 else "" for n, d in enumerate(days)]
    return [f"{day:%Y-%m-%d}" for day in days], labels


def _stacked(
    chart_id: str,
    counts: dict[str, list[int]],
    unit: str,
    names_labels: tuple[list[str], list[str]],
) -> charts.Chart:
    names, labels = names_labels
    values = [counts[SIGNED], counts[UNSIGNED], counts[REJECTED]]
    totals = ", ".join(f"{sum(v):,} {s.label}" for s, v in zip(OUTCOMES, values, strict=True))
    span = "24 hours" if unit == "hour" else "30 days"
    return charts.stacked_bars(
        chart_id,
        f"Chat requests per {unit}, last {span}",
        f"Stacked bars, one per {unit} (UTC) from {names[0]} to {names[-1]}: {totals}.",
        OUTCOMES,
        values,
        names,
        labels,
        (f"{unit} (UTC)", f"requests per {unit}"),
        "No requests yet",
    )


def _codes(chart_id: str, codes: dict[str, int], span: str, requests: int) -> charts.Chart:
    rows = sorted(codes.items(), key=lambda item: (-item[1], item[0]))
    listed = ", ".join(f"{code} {n:,}" for code, n in rows) or "none"
    return charts.horizontal_bars(
        chart_id,
        f"Rejections by code, last {span}",
        f"Horizontal bars, one per error code, largest first: {listed}.",
        rows,
        OUTCOMES[2],
        ("code", "rejected requests"),
        "No rejections" if requests else "No requests yet",
    )


def _key_rows(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["kid"]: row for kind in KEY_KINDS for row in entry[kind]}


def _key_series(entry: dict[str, Any], traffic: Traffic) -> list[tuple[str, list[int]]]:
    """Each stored key in use (active or in grace), then any other that verified a
    request in the 30 days (revoked since, say): its verified requests per day."""
    rows = _key_rows(entry)
    shown = [kid for kid, row in rows.items() if row["state"] in (KeyState.ACTIVE, KeyState.GRACE)]
    others = sorted(set(traffic.keys_daily) - set(shown), key=lambda k: -sum(traffic.keys_daily[k]))
    series = []
    for kid in [*shown, *others]:
        row = rows.get(kid)
        label = f"{kid} ({row['state_label']})" if row else kid
        series.append((label, traffic.keys_daily.get(kid, [0] * DAYS)))
    return series


def _keys(chart_id: str, entry: dict[str, Any], traffic: Traffic) -> charts.Chart:
    series = _key_series(entry, traffic)
    names, labels = _day_labels(traffic.first_day)
    listed = ", ".join(f"{label} {sum(v):,}" for label, v in series) or "none"
    return charts.lines(
        chart_id,
        "Uses of each stored key per day, last 30 days",
        f"One line per key: the requests it verified each day (UTC); in 30 days: {listed}.",
        series,
        names,
        labels,
        ("day (UTC)", "verified requests per day"),
        "No stored key verified a request yet" if not series else "No uses yet",
    )


def _traffic_line(traffic: Traffic, enabled: bool) -> str:
    """'Last 24 h: 1,234 requests: 93 % verified, 5 % unsigned, 2 % rejected (…).'"""
    counts = summary(traffic.total_24h(SIGNED), traffic.total_24h(UNSIGNED), traffic.codes_24h)
    if not counts["total"]:
        return "No chat requests in the last 24 h."
    line = (
        f"Last 24 h: {counts['total']:,} requests: {counts['signed_pct']} verified, "
        f"{counts['unsigned_pct']} unsigned, {counts['rejected_pct']} rejected"
    )
    if counts["rejected"]:
        line += f" (most often {counts['rejected'][0]['code']})"
    line += "."
    if not enabled and counts["unsigned"]:
        line += f" Switched on now, security would also refuse the {counts['unsigned']:,} unsigned."
    return line


def _key_lines(entry: dict[str, Any], traffic: Traffic) -> list[str]:
    """Per stored key in use: its state, last use and uses — before revoking an old one."""
    lines = []
    for kid, row in _key_rows(entry).items():
        if row["state"] not in (KeyState.ACTIVE, KeyState.GRACE):
            continue
        last = f"last used {row['last_used']}" if row["last_used"] else "never used"
        day = traffic.keys_24h.get(kid, 0)
        month = sum(traffic.keys_daily.get(kid, ()))
        lines.append(
            f"Key {kid} ({row['state_label']}): {last}; {day:,} uses in 24 h, {month:,} in 30 days."
        )
    return lines


def integration_charts(
    entry: dict[str, Any], traffic: Traffic | None, now: float
) -> dict[str, Any]:
    """One integration's charts and summary, from :func:`integration_data`'s ``entry``
    (its keys, switch and ids: no query) and its :class:`Traffic` (None: no rows)."""
    first_hour, first_day, _end = window(now)
    traffic = traffic or Traffic(first_hour, first_day)
    stem = entry["ids"]["traffic"]
    requests_24h = sum(sum(v) for v in traffic.hourly.values())
    requests_30d = sum(sum(v) for v in traffic.daily.values())
    return {
        "requests_24h": requests_24h,
        "signed_pct": _pct(traffic.total_24h(SIGNED), requests_24h),
        "summary": _traffic_line(traffic, entry["security"]["enabled"]),
        "key_lines": _key_lines(entry, traffic),
        "fetched_keys": entry.get("key_source") is not None,
        "hourly": _stacked(f"{stem}-hours", traffic.hourly, "hour", _hour_labels(first_hour)),
        "daily": _stacked(f"{stem}-days", traffic.daily, "day", _day_labels(first_day)),
        "codes": [
            _codes(f"{stem}-codes-24h", traffic.codes_24h, "24 hours", requests_24h),
            _codes(f"{stem}-codes-30d", traffic.codes_30d, "30 days", requests_30d),
        ],
        "keys": _keys(f"{stem}-keys", entry, traffic),
    }
