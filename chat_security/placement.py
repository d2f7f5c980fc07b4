"""Where a token must not travel, and how a refusal says so (SPEC §5, §10).

A token belongs in ``Authorization: Bearer <jwt>`` (HTTP) or in the
subprotocol or identify message (WebSocket). Tokens sent in the URL's query
string, or with another ``Authorization`` scheme (``JWT``, ``Token``), are a
common integration mistake: the HTTP middleware and the WebSocket handshake
name the same mistakes from here, so their details say what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote_plus

#: Query parameters that would put a token in access logs (ASGI and WSGI servers,
#: proxies and browsers keep whole URLs); the WebSocket refuses their presence.
QUERY_TOKEN_NAMES = frozenset({"token", "access_token", "jwt"})

_QUERY_SPLIT = re.compile(r"[&;]")
_SCHEME = re.compile(r"[ \t]*([!#$%&'*+^_`|~0-9A-Za-z.-]+)[ \t]+\S")
_BEARER_HOWTO = "send it as 'Authorization: Bearer <token>'"


def query_token_name(query_string: bytes | str) -> str | None:
    """The first parameter of ``query_string`` that names a token (``access_token``), or None."""
    if not query_string:
        return None
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    for part in _QUERY_SPLIT.split(query_string):
        name = unquote_plus(part.split("=", 1)[0]).strip().lower()
        if name in QUERY_TOKEN_NAMES:
            return name
    return None


def query_has_token(query_string: bytes | str) -> bool:
    return query_token_name(query_string) is not None


def missing_token_detail(meta: Mapping[str, str]) -> str | None:
    """The HTTP ``missing_token`` detail when the token is in the wrong place, else None.

    ``meta`` is a WSGI environ (``request.META``) whose ``Authorization`` header
    carries no Bearer token.
    """
    name = query_token_name(meta.get("QUERY_STRING", ""))
    if name is not None:
        return (
            f"a token was sent in the URL (?{name}=); tokens never belong in a URL, where "
            f"servers and proxies log them: {_BEARER_HOWTO}"
        )
    scheme = _SCHEME.match(meta.get("HTTP_AUTHORIZATION", ""))
    if scheme is not None:
        word = scheme.group(1)[:20]
        return f"the Authorization header uses the {word!r} scheme, not Bearer: {_BEARER_HOWTO}"
    return None
