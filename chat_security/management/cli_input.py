"""What ``manage.py chat_security`` reads and checks before it acts: a token or a
file (or stdin) within a size cap, option values, integration names. Every
refusal is one line with exit code 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.management.base import CommandError

from chat_security.conf import MAX_GRACE_HOURS
from chat_security.integrations import DEFAULT_INTEGRATION
from chat_security.models import Integration

MAX_INPUT = 1 << 20

#: Claims ``issue`` sets itself, and the option that sets each.
SET_BY_OPTIONS = {
    "sub": "--sub",
    "userId": "--sub",
    "iat": "--ttl (iat is the time of issue)",
    "exp": "--ttl",
}


def fail(message: str) -> CommandError:
    return CommandError(message.splitlines()[0] if message else "error", returncode=2)


def _grace_hours(value: str) -> float:
    try:
        hours = float(value)
    except ValueError:
        hours = -1.0
    if not 0 <= hours <= MAX_GRACE_HOURS:
        raise fail(f"--grace must be a number of hours from 0 to {MAX_GRACE_HOURS}")
    return hours


def grace_seconds(options: dict[str, Any]) -> float | None:
    if options.get("grace") is None:
        return None
    return _grace_hours(options["grace"]) * 3600


def moment(value: str) -> datetime:
    """``--at``: an ISO 8601 time with an offset (or Z); a naive one is refused."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise fail(
            f"--at {value[:40]!r} is not an ISO 8601 time (e.g. 2026-12-08T09:00:00+00:00)"
        ) from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise fail(f"--at {value[:40]!r} has no time zone: add an offset such as +00:00, or Z")
    return at


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not standard JSON")


def extra_claims(text: str) -> dict[str, Any]:
    """``--claims``: a JSON object that sets none of the claims ``issue`` sets itself."""
    try:
        claims = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        claims = None
    if not isinstance(claims, dict):
        raise fail("--claims must be a JSON object")
    for name, option in SET_BY_OPTIONS.items():
        if name in claims:
            raise fail(f"--claims must not set {name!r}; use {option}")
    return claims


def read_stdin() -> str | bytes:
    """Raw bytes when possible, so undecodable input is refused by the engine, not here."""
    stream = getattr(sys.stdin, "buffer", sys.stdin)
    # One more than the cap: oversized input stays oversized (token_too_large,
    # "too large") instead of being cut to a size that would be parsed.
    return stream.read(MAX_INPUT + 1)


def token_or_stdin(arg: str) -> str | bytes:
    """A token argument as given, or stdin for ``-``."""
    if arg != "-":
        return arg
    return read_stdin()


def file_or_stdin(path: str) -> str | bytes:
    """A file's bytes (one more than the cap, as stdin), or stdin for ``-``."""
    if path == "-":
        return read_stdin()
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_INPUT + 1)
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}") from exc


def check_known(names: Iterable[str]) -> None:
    """Refuse (exit 2) an integration name that names none, before anything is done."""
    names = list(names)
    known = set(Integration.objects.filter(name__in=names).values_list("name", flat=True))
    for name in names:
        if name != DEFAULT_INTEGRATION and name not in known:
            raise fail(f"no integration named {name[:60]!r} (see 'integration list')")
