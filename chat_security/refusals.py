"""What a refused chat request leaves behind (SPEC §15): a count and a sample.

The HTTP middleware and the WebSocket connection call :func:`record` when
they refuse a request. It counts the refusal under the integration it
belongs to (the traffic rows behind the panel's charts) and keeps a
:class:`~chat_security.usage.Failure` for the panel's "Recent failures":
time, code, the ``kid`` and ``iss`` the token named, path, user-agent
family and the client's network. Never token material: the token is read
(unverified, like ``select`` reads ``iss``) only for those two names, which
are shortened to printable text; a name or path segment that looks like a
token itself (someone pasted one where a name goes) is replaced by
:data:`HIDDEN`; the client address is cut to its /24 (IPv4) or /48 (IPv6)
network and the User-Agent to a family name.

Everything on the refusal path is advisory: :func:`record` never raises.
:func:`recent` and :func:`describe` are the read side the panel and the CLI share.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

from django.db.models import F, Window
from django.db.models.functions import RowNumber

from . import clock, keyring, usage
from .conf import app_settings
from .exceptions import ERROR_CODES, TokenError
from .integrations import DEFAULT_INTEGRATION, select
from .jws import parse
from .log import get_logger
from .models import FailureSample

logger = get_logger("chat_security.refusals")

#: User-agent families, first match wins: (family, marker in the header). The
#: order matters: Edge, Opera, Samsung Internet and headless Chrome also say
#: Chrome; Chrome and Firefox on iOS also say Safari.
FAMILIES = (
    ("Edge", "Edg/"),
    ("Edge", "EdgA/"),
    ("Edge", "EdgiOS/"),
    ("Edge", "Edge/"),
    ("Opera", "OPR/"),
    ("Opera", "Opera"),
    ("Samsung Internet", "SamsungBrowser/"),
    ("Headless Chrome", "HeadlessChrome/"),
    ("Electron", "Electron/"),
    ("Firefox", "Firefox/"),
    ("Firefox", "FxiOS/"),
    ("Chrome", "Chrome/"),
    ("Chrome", "CriOS/"),
    ("Safari", "Safari/"),
    ("curl", "curl/"),
    ("Python", "python-requests/"),
    ("Python", "Python-urllib/"),
    ("Python", "python-httpx/"),
    ("Python", "aiohttp/"),
    ("Python", "websockets/"),
    ("Python", "Python/"),
    ("Node.js", "node-fetch"),
    ("Node.js", "undici"),
    ("Node.js", "axios/"),
    ("Node.js", "Node.js"),
    ("okhttp", "okhttp/"),
    ("Android app", "Dalvik/"),
    ("Go", "Go-http-client/"),
    ("Java", "Java/"),
    ("iOS app", "CFNetwork/"),
    ("Postman", "PostmanRuntime/"),
)
#: Longest kid and iss kept, characters (longer ones end in "…"); the model's columns.
NAME_LIMITS = {"kid": 64, "iss": 100}
PATH_LIMIT = 200
#: What a kid, an iss or a path segment that looks like a token is shown as.
HIDDEN = "[token hidden]"
#: A JWT or a piece of one: base64url of JSON ('{"' is "eyJ"), or two long base64url
#: runs joined by a dot (a compact JWS or JWE whatever its header). The look-behind
#: starts a run only at its first character, so a long run is scanned once.
_TOKEN_LIKE = re.compile(
    r"eyJ[A-Za-z0-9_-]{8}|(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{16,}+\.[A-Za-z0-9_-]{16}"
)


def user_agent_family(header: str | None) -> str:
    """The browser or client family a User-Agent names ("Firefox", "curl", "Other");
    "" when there is none. Never the header itself: it can identify a person."""
    if not header:
        return ""
    for family, marker in FAMILIES:
        if marker in header:
            return family
    return "Other"


def network_of(address: str | None) -> str:
    """The /24 (IPv4) or /48 (IPv6) network of a client address; "" if it is not one.

    An IPv4 address mapped into IPv6 (``::ffff:203.0.113.9``, what a dual-stack
    socket reports) is the IPv4 client it is: its /24.
    """
    if not address:
        return ""
    text = address.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]  # a bracketed IPv6 literal
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # without a scope id (fe80::1%eth0)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def looks_like_token(text: str) -> bool:
    """Whether ``text`` holds what looks like a JWT or a piece of one."""
    return _TOKEN_LIKE.search(text) is not None


def shorten(value: Any, limit: int) -> str:
    """A name from a token as the panel shows it: printable, at most ``limit`` characters;
    :data:`HIDDEN` if the part that would be shown looks like a token."""
    if not isinstance(value, str):
        return ""
    # Judged a little beyond what is kept: a token cut in half is still a token.
    if looks_like_token(value[: limit + 32]):
        return HIDDEN
    text = "".join(c if c.isprintable() else "?" for c in value[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shorten_path(path: str) -> str:
    """The path as kept: each segment that looks like a token replaced by :data:`HIDDEN`,
    then :func:`shorten`-ed to ``PATH_LIMIT``."""
    segments = str(path)[: PATH_LIMIT * 4].split("/")
    return shorten("/".join(HIDDEN if looks_like_token(s) else s for s in segments), PATH_LIMIT)


def _names(token: str | bytes | None) -> tuple[Any, Any]:
    """The ``kid`` and ``iss`` a token names, unverified and as they are (None when it
    names none or cannot be read)."""
    if not token:
        return None, None
    try:
        parsed = parse(token)
    except TokenError:
        return None, None
    return parsed.header.get("kid"), parsed.claims.get("iss")


def counted_under(integrations: Mapping[str, Any] | None, names: Sequence[str], iss: Any) -> str:
    """The integration a refusal belongs to: the one serving the path, or on a path
    several serve the one the token's ``iss`` (as it is, not shortened) picks
    (SPEC §13), else the first of them."""
    if len(names) > 1 and integrations is not None:
        try:
            return str(select(integrations, names, {"iss": iss}).name)
        except TokenError:
            pass
    return names[0] if names else DEFAULT_INTEGRATION


def record(
    code: str,
    *,
    token: str | bytes | None,
    names: Sequence[str],
    snapshot: Any,
    channel: str,
    path: str,
    user_agent: str | None,
    client: str | None,
    now: float | None = None,
    count: bool = True,
) -> None:
    """Count a refusal with ``code`` and keep its sample; never raises. ``snapshot``:
    the key snapshot the request was judged with (None: this process's last one, never
    a query), for the integration it belongs to. ``count=False``: the sample only (an
    open socket cut later was counted when it identified)."""
    try:
        snapshot = snapshot or keyring.last_snapshot()
        integrations = snapshot.integrations if snapshot is not None else None
        now = clock.now() if now is None else now
        kid, iss = _names(token)
        integration = counted_under(integrations, names, iss)
        if count:
            usage.count_request(code, now=now, integration=integration)
        usage.record_failure(
            usage.Failure(
                at=now, integration=integration, code=code,
                kid=shorten(kid, NAME_LIMITS["kid"]), iss=shorten(iss, NAME_LIMITS["iss"]),
                channel=channel, path=shorten_path(path),
                user_agent=user_agent_family(user_agent), network=network_of(client),
            )
        )  # fmt: skip
    except Exception:  # noqa: BLE001 — advisory: the refusal itself must still be sent
        logger.debug("chat refusal not recorded", exc_info=True)


# -- the read side (panel and CLI) ---------------------------------------------------------


def recent(names: Sequence[str] | None = None, limit: int | None = None) -> list[FailureSample]:
    """The kept refusals, newest first: at most ``limit`` (default ``FAILURE_SAMPLES``)
    of each integration in ``names`` (every one when None). One query, whatever the
    number of integrations; bounded even before a flush has trimmed the table."""
    limit = app_settings.FAILURE_SAMPLES if limit is None else limit
    if not limit:
        return []
    rows = FailureSample.objects.all()
    if names is not None:
        rows = rows.filter(integration__in=list(names))
    ranked = rows.annotate(
        rank=Window(
            RowNumber(), partition_by=[F("integration")], order_by=[F("at").desc(), F("pk").desc()]
        )
    ).filter(rank__lte=limit)
    return list(ranked.order_by("-at", "-pk"))


def describe(sample: FailureSample) -> dict[str, str]:
    """A kept refusal as the CLI prints it (and the panel shows it): every field, the
    time in ISO 8601 UTC, the code's one-line explanation (SPEC §4)."""
    return {
        "integration": sample.integration,
        "at": sample.at.astimezone(UTC).isoformat(),
        "code": sample.code,
        "explanation": ERROR_CODES.get(sample.code, ""),
        "kid": sample.kid,
        "iss": sample.iss,
        "channel": sample.channel,
        "path": sample.path,
        "user_agent": sample.user_agent,
        "network": sample.network,
    }
