"""Times as the admin and the CLI show them: UTC, in the words a person would use.

The panel's key tables and the token tester (admin and CLI) use these; times are UTC
so that what support staff read matches what the signing servers log.
"""

from __future__ import annotations

from datetime import UTC, datetime


def human_duration(seconds: float) -> str:
    """'45 s', '42 min', '3 h', '5 days' — the unit a person would pick."""
    s = abs(seconds)
    if s < 90:
        return f"{int(round(s))} s"
    if s < 90 * 60:
        return f"{int(round(s / 60))} min"
    if s < 72 * 3600:
        return f"{int(round(s / 3600))} h"
    return f"{int(round(s / 86400))} days"


def utc(ts: float, now: float | None = None) -> str:
    """'10:02 UTC' when close to ``now``, else '2027-01-15 10:02 UTC'."""
    try:
        when = datetime.fromtimestamp(ts, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return "an impossible date"
    if now is not None and abs(ts - now) < 20 * 3600:
        return f"{when:%H:%M} UTC"
    return f"{when:%Y-%m-%d %H:%M} UTC"


def exact_utc(value: datetime) -> str:
    """'2027-01-15 10:02:07 UTC': to the second, for a revocation refuses tokens by
    ``iat``, which has seconds."""
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def relative(ts: float, now: float) -> str:
    """'in 42 min', '3 min ago' or 'just now'."""
    delta = ts - now
    if abs(delta) < 1:
        return "just now"
    return f"in {human_duration(delta)}" if delta > 0 else f"{human_duration(delta)} ago"


def countdown(seconds: float) -> str:
    """'45 s', '2 h 13 min', '3 days 4 h' — the time left, in two units at most."""
    s = max(int(seconds), 0)
    days, hours, minutes = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if days:
        return f"{days} day{'s' if days > 1 else ''}" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    return f"{minutes} min" if minutes else f"{s} s"
