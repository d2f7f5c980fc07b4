"""The one seam for "now": tests replace :func:`now` to control time."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now() -> float:
    """Current time as a POSIX timestamp."""
    return time.time()


def now_dt() -> datetime:
    """Current time as an aware UTC datetime (from :func:`now`)."""
    return datetime.fromtimestamp(now(), tz=UTC)


def timestamp(value: datetime | None) -> float | None:
    """An aware datetime (or None) as a POSIX timestamp (or None)."""
    return value.timestamp() if value is not None else None
