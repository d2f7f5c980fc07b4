"""Integrations (SPEC §13): which one a token is judged by.

An integration is a named set of keys with its own rules (issuer, audience,
switch, paths, user space); the rows are ``models.Integration`` and the
keyring parses them into ``keyring.IntegrationEntry``. This module holds the
rules that pick one: by path (HTTP), by name (a WebSocket middleware, the
tag, the endpoint, the CLI) and, on a path several serve, by the token's
``iss``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from .exceptions import KeyStateError, TokenError

#: The integration every site has (SPEC §13): it serves ``PROTECTED_PATHS``.
DEFAULT_INTEGRATION = "default"
#: The user space integrations share unless they have their own.
DEFAULT_USER_SPACE = "default"

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,49}")
MAX_PATHS = 20


class _Selectable(Protocol):
    name: str
    issuers: tuple[str, ...] | None


E = TypeVar("E", bound=_Selectable)


def check_new(name: str, issuer: str, audience: str, paths: Iterable[str]) -> tuple[str, ...]:
    """Refuse a bad new integration (KeyStateError, one line); returns its paths."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise KeyStateError(
            "an integration name is 1-50 lower-case letters, digits and hyphens (e.g. ios)"
        )
    return check_rules(issuer, audience, paths)


def check_rules(issuer: str, audience: str, paths: Iterable[str]) -> tuple[str, ...]:
    """Refuse a bad issuer, audience or path list (KeyStateError, one line); returns the
    paths without repeats. Adding and changing an integration both answer through it."""
    for label, value in (("issuer", issuer), ("audience", audience)):
        if not isinstance(value, str) or len(value) > 255 or not value.isprintable():
            raise KeyStateError(f"the {label} must be printable text of at most 255 characters")
    checked = []
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/") or not path.isprintable():
            raise KeyStateError(f"a path prefix starts with '/' (got {str(path)[:40]!r})")
        if len(path) > 200:
            raise KeyStateError("a path prefix is at most 200 characters")
        if path not in checked:
            checked.append(path)
    if len(checked) > MAX_PATHS:
        raise KeyStateError(f"an integration serves at most {MAX_PATHS} path prefixes")
    return tuple(checked)


def accepted(expected: Any) -> tuple[str, ...] | None:
    """``ISSUER``/``AUDIENCE``-style value as a tuple; None disables the check.

    A value ``manage.py check`` (E009) refuses accepts nothing (fail closed).
    """
    if expected is None or expected == "":
        return None
    if isinstance(expected, str):
        return (expected,)
    if isinstance(expected, list | tuple):
        return tuple(v for v in expected if isinstance(v, str)) if expected else ()
    return ()


def select(integrations: Mapping[str, E], names: Sequence[str], claims: dict[str, Any] | None) -> E:
    """The integration that judges a token on a path or socket ``names`` serve.

    One name: that one. Several: the one whose issuer is the token's ``iss``
    (read before verification, trusted for nothing else); no ``iss`` or one
    none of them has → ``unknown_issuer``, unless exactly one of them has no
    issuer, which takes it. ``claims`` is None when no token came.
    """
    if len(names) == 1:
        entry = integrations.get(names[0])
        if entry is None:
            raise TokenError(
                "security_not_configured", f"no integration named {names[0][:50]!r} exists"
            )
        return entry
    candidates = [integrations[n] for n in names if n in integrations]
    iss = claims.get("iss") if claims is not None else None
    if isinstance(iss, str):
        for entry in candidates:
            if entry.issuers and iss in entry.issuers:
                return entry
    open_ = [e for e in candidates if e.issuers is None]
    if len(open_) == 1:
        return open_[0]
    if not candidates:
        raise TokenError("security_not_configured", "no integration serves this path")
    raise TokenError(
        "unknown_issuer",
        "the token's iss names none of the integrations here"
        if isinstance(iss, str)
        else "the token has no iss, and several integrations serve here",
        iss=iss if isinstance(iss, str) else None,
    )


DEFAULT = (DEFAULT_INTEGRATION,)
