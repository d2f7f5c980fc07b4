"""Guards Django Channels WebSockets with the same engine, rules and codes as HTTP (SPEC §10).

Wrap the application that serves chat sockets, typically a ``URLRouter``::

    "websocket": AllowedHostsOriginValidator(
        ChatSecurityWebSocketMiddleware(URLRouter(websocket_urlpatterns))
    ),

How one connection runs. The socket is identified before the inner
application starts: by the token that follows ``chat-security`` in the
subprotocol list, or — the handshake accepted first, since the client needs
an open socket to send it — by a first ``{"type": "identify", "token": ...}``
message. The inner application then gets a ``websocket.connect`` of its own;
its ``websocket.accept`` goes out (selecting ``chat-security`` when offered)
unless the handshake was accepted already, followed by ``identified``. Every
refusal accepts before it closes: a close before accept reaches a browser as
1006 and says nothing. From then on the inner application's ``receive`` pulls
frames from the server through one check — no extra task or queue, per
connection or per message: ``identify`` frames are renewals handled here,
other JSON objects pass through untouched, anything else closes with 4400.
Verification runs once per token; messages never re-verify. The engine runs
in the event loop when the keyring can answer from memory, and in the
database thread (``database_sync_to_async``) whenever it may query.

How an open connection learns of a change made anywhere (STYLE habit 10):
one watcher task per event loop, started with the first identified
connection and ended when none remain, ticks every
``min(KEY_CACHE_SECONDS, 1 s) / 2``. Each tick asks
:func:`keyring.get_snapshot` once (which reads the database at most once per
``KEY_CACHE_SECONDS`` per process, whatever the number of sockets); when the
snapshot object changed it re-verifies every connection's current token in
one thread hop (a dict hit per token while nothing changed) and closes those
that now fail, so a change is in force within ``KEY_CACHE_SECONDS`` + one
tick. Each tick also applies the token deadlines (``token_expiring`` at
``refresh_at``, the close at ``exp + LEEWAY``), with ``clock.now()``.

Close codes: 4401 + the §4 code, 4503 ``unavailable`` (key store unreadable),
4400 + a short protocol reason. Every close the middleware makes is preceded
by ``{"type": "error", "error": <reason>, "detail": <one line>}``: some ASGI
servers (daphne) drop the close reason. Neither ever carries token material.

Only this module needs Channels; nothing else in the package imports it. Like
every module that reaches the models (and Channels' own ``AuthMiddlewareStack``),
import it in ``asgi.py`` after ``get_asgi_application()``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import timedelta
from typing import Any
from urllib.parse import unquote_plus

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.core.exceptions import SynchronousOnlyOperation
from django.http.cookie import parse_cookie

from . import clock, keyring, tokens, usage
from .conf import app_settings
from .exceptions import ERROR_CODES, KeyStoreUnavailable, TokenError
from .identity_types import ChatIdentity
from .middleware import ANONYMOUS_ID_RE
from .session import SUBJECT_SESSION_KEY

logger = logging.getLogger("chat_security.websocket")

Message = dict[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SUBPROTOCOL = "chat-security"
#: Query parameters that would put a token in access logs; their presence is refused.
QUERY_TOKEN_NAMES = frozenset({"token", "access_token", "jwt"})
QUERY_DETAIL = "send the token as a subprotocol or in an identify message, never in the URL"
UNAVAILABLE_DETAIL = "The chat key store cannot be read; try again."
MAX_FRAME_BYTES = 64 * 1024
DEFAULT_IDENTIFY_TIMEOUT = 10.0
REFRESH_FRACTION = 0.75
CLOSE_PROTOCOL_ERROR = 4400
CLOSE_REFUSED = 4401
CLOSE_UNAVAILABLE = 4503


_QUERY_SPLIT = re.compile(r"[&;]")
_FAILED: Any = object()
_THREAD: Any = object()


# -- settings -----------------------------------------------------------------------


def _seconds(value: Any, default: float) -> float:
    try:
        value = value.total_seconds() if isinstance(value, timedelta) else float(value)
    except (TypeError, ValueError):
        return default
    return value if value >= 0 else default


def identify_timeout() -> float:
    """``WEBSOCKET_IDENTIFY_TIMEOUT`` in seconds (default 10; E017 keeps it in 0–600)."""
    return _seconds(app_settings.WEBSOCKET_IDENTIFY_TIMEOUT, DEFAULT_IDENTIFY_TIMEOUT)


def tick_seconds() -> float:
    """The watcher's period: a change is seen within ``KEY_CACHE_SECONDS`` + one tick."""
    return max(0.05, min(app_settings.KEY_CACHE_SECONDS, 1.0) / 2)


# -- the handshake ------------------------------------------------------------------


def subprotocol_token(subprotocols: list[str]) -> str | None:
    """The element after ``chat-security`` (``new WebSocket(url, ["chat-security", token])``)."""
    try:
        at = subprotocols.index(SUBPROTOCOL)
    except ValueError:
        return None
    return subprotocols[at + 1] if at + 1 < len(subprotocols) else None


def query_has_token(query_string: bytes | str) -> bool:
    if not query_string:
        return False
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    for part in _QUERY_SPLIT.split(query_string):
        name = unquote_plus(part.split("=", 1)[0]).strip().lower()
        if name in QUERY_TOKEN_NAMES:
            return True
    return False


def _app_scope(scope: Scope, offered: bool) -> dict[str, Any]:
    """The inner application's scope: the token is removed from subprotocols and headers."""
    app_scope = dict(scope)
    if offered:
        app_scope["subprotocols"] = [SUBPROTOCOL]
        headers = [
            (name, value)
            for name, value in scope.get("headers", ())
            if bytes(name).lower() != b"sec-websocket-protocol"
        ]
        app_scope["headers"] = [*headers, (b"sec-websocket-protocol", SUBPROTOCOL.encode())]
    return app_scope


def _anonymous_id(scope: Scope) -> str | None:
    """The anonymous-id cookie that came with the handshake (it is HttpOnly), if valid."""
    if not app_settings.ANONYMOUS_IDS:
        return None
    cookies = scope.get("cookies")
    if not isinstance(cookies, dict):
        raw = "; ".join(
            bytes(value).decode("latin-1")
            for name, value in scope.get("headers", ())
            if bytes(name).lower() == b"cookie"
        )
        cookies = parse_cookie(raw) if raw else {}
    value = cookies.get(app_settings.ANONYMOUS_COOKIE_NAME, "")
    return value if isinstance(value, str) and ANONYMOUS_ID_RE.fullmatch(value) else None


# -- frames -------------------------------------------------------------------------


class ProtocolError(Exception):
    """A client frame that breaks the protocol: close 4400 with ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def parse_frame(event: Message, limit: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """A ``websocket.receive`` event as a JSON object, or :class:`ProtocolError`."""
    text = event.get("text")
    if not isinstance(text, str):
        raise ProtocolError("binary_frame", "frames must be JSON text, not binary")
    if len(text) > limit or (
        len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit
    ):
        raise ProtocolError("frame_too_large", f"frames are limited to {limit} bytes")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        message = None
    if type(message) is not dict:
        raise ProtocolError("not_json_object", "every frame must be one JSON object")
    return message


def identify_token(message: dict[str, Any], *, required: bool) -> str | None:
    """The token of an ``identify`` message; ``None`` for another message type."""
    if message.get("type") != "identify":
        if required:
            raise ProtocolError(
                "identify_expected", 'the first message must be {"type": "identify", "token": ...}'
            )
        return None
    token = message.get("token")
    if not isinstance(token, str):
        raise ProtocolError("identify_without_token", "identify needs a string token")
    return token


def token_times(claims: dict[str, Any], now: float) -> tuple[float | None, int | None]:
    """``(expires_at, refresh_at)``: refresh at 75 % between iat (or now) and exp."""
    exp = claims.get("exp")
    if type(exp) not in (int, float):
        return None, None
    iat = claims.get("iat")
    start = iat if type(iat) in (int, float) else now
    return exp, int(start + REFRESH_FRACTION * (exp - start))


# -- the engine, in the database thread -----------------------------------------------


def _count(outcome: str) -> None:
    """Traffic counters are advisory (the admin's readiness figures); never fail for them."""
    try:
        usage.record_traffic(outcome)
    except Exception:  # noqa: BLE001
        logger.debug("chat traffic counter not recorded", exc_info=True)


def _not_configured() -> TokenError:
    return TokenError(
        "security_not_configured", "no usable signing secret or public key exists yet"
    )


def _existing_session(session: Any) -> Any:
    """The scope's session if the browser brought one that exists; never creates one."""
    if session is None:
        return None
    session.get(SUBJECT_SESSION_KEY)  # loads it; a stale cookie leaves no session key
    return session if session.session_key else None


def _bind(session: Any, user_id: str) -> None:
    """Bind the chat session to its first verified user, as the HTTP middleware does."""
    if session is None or session.get(SUBJECT_SESSION_KEY) == user_id:
        return
    session[SUBJECT_SESSION_KEY] = user_id
    try:
        session.save()  # Channels saves nothing by itself
    except UpdateError:
        logger.debug("chat session ended before its subject could be bound")


def _store_is_fresh() -> bool:
    """Whether the keyring would answer now from memory: no query due, no counters to flush."""
    return keyring.can_verify_in_loop()


def _session_may_query(scope: Scope) -> bool:
    """A session that came with a cookie must be loaded (and maybe bound) in the thread."""
    if scope.get("session") is None:
        return False
    cookies = scope.get("cookies")
    return not isinstance(cookies, dict) or bool(cookies.get(settings.SESSION_COOKIE_NAME))


async def _read_snapshot() -> Any:
    """The key snapshot; through the database thread only when a query is due."""
    if _store_is_fresh():
        try:
            return keyring.get_snapshot()
        except SynchronousOnlyOperation:
            pass
    return await database_sync_to_async(keyring.get_snapshot)()


def recheck_tokens(
    entries: list[tuple[str | None, str | None]],
) -> list[TokenError | KeyStoreUnavailable | None]:
    """Re-verify open connections' ``(token, bound subject)``; one call for all of them.

    ``None`` for a connection still fine, else the error to close it with.
    A token unchanged since its last check is a dict hit in the engine.
    Raises KeyStoreUnavailable when the store itself cannot be read.
    """
    snapshot = keyring.get_snapshot()
    now = clock.now()
    verdicts: list[TokenError | KeyStoreUnavailable | None] = []
    for token, subject in entries:
        try:
            if token is not None:
                tokens.verify(token, session_subject=subject, count_use=False)
            elif snapshot.enabled and not snapshot.can_verify(now):
                raise _not_configured()
            elif snapshot.enabled:
                raise TokenError("missing_token", "web chat security was switched on; identify")
            verdicts.append(None)
        except (TokenError, KeyStoreUnavailable) as exc:  # the latter: its service key
            verdicts.append(exc)
    return verdicts


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _replace_identity(target: ChatIdentity, source: ChatIdentity) -> None:
    """Update the identity the application holds in place (renewal, anonymous → verified)."""
    slots = getattr(type(source), "__slots__", ())
    for name in (slots,) if isinstance(slots, str) else slots:
        setattr(target, name, getattr(source, name))
    if hasattr(source, "__dict__"):
        target.__dict__.update(vars(source))


# -- one connection -------------------------------------------------------------------


class _Connection:
    def __init__(
        self, owner: ChatSecurityWebSocketMiddleware, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.inner, self.frame_limit = owner.inner, owner.max_frame_bytes
        self.receive, self.send = receive, send
        subprotocols = list(scope.get("subprotocols") or ())
        self.offered = SUBPROTOCOL in subprotocols
        self.first_token = subprotocol_token(subprotocols)
        self.query_token = query_has_token(scope.get("query_string", b""))
        self.scope = _app_scope(scope, self.offered)
        self.identity: ChatIdentity | None = None
        self.token: str | None = None
        self.subject: str | None = None  # the first verified user id binds the connection
        self.expires_at: float | None = None
        self.refresh_at: int | None = None
        self.expiring_sent = False
        self.accepted = False  # the handshake was accepted (by us or for the application)
        self.app_accepted = False
        self.closed = False  # a close was sent (by us or by the application)
        self.disconnected = False
        self.pending: deque[Message] = deque()

    async def run(self) -> None:
        event = await self.receive()
        if event["type"] != "websocket.connect":
            return
        if self.query_token:
            await self.refuse(TokenError("malformed", QUERY_DETAIL))
            return
        outcome = await self.check(self.first_token)
        if outcome is None:  # the client identifies in a message: it needs an open socket
            await self.accept()
            if not await self.await_identify():
                return
        elif outcome is _FAILED:
            return
        await self.serve()

    async def accept(self, event: Message | None = None) -> None:
        """Accept the handshake once: ``chat-security`` if offered, else the application's pick."""
        if self.accepted:
            return
        self.accepted = True
        accept: Message = {"type": "websocket.accept"}
        if event is not None:
            accept.update((k, v) for k, v in event.items() if k in ("subprotocol", "headers"))
        if self.offered:
            accept["subprotocol"] = SUBPROTOCOL
        await self.send(accept)

    # -- identification -------------------------------------------------------------

    def check_sync(self, token: str | None) -> ChatIdentity | None:
        """Identify with ``token``; ``None``: wait for an identify message (security on)."""
        snapshot = keyring.get_snapshot()
        if snapshot.enabled and not snapshot.can_verify(clock.now()):
            _count("security_not_configured")
            raise _not_configured()  # SPEC §5: the one thing to fix, token or not
        if token is None:
            if snapshot.enabled:
                return None
            _count("unsigned")
            return ChatIdentity.anonymous_visitor(_anonymous_id(self.scope))
        session = _existing_session(self.scope.get("session"))
        bound = self.subject or (session.get(SUBJECT_SESSION_KEY) if session else None)
        try:
            result = tokens.verify(token, session_subject=bound if isinstance(bound, str) else None)
        except TokenError as exc:
            _count(exc.code)
            raise
        _bind(session, result.user_id)
        _count("signed")
        return ChatIdentity.verified(result)

    def check_in_loop(self, token: str | None) -> Any:
        """:meth:`check_sync` right here when it cannot touch the database, else ``_THREAD``.

        STYLE: ``database_sync_to_async`` only where the database is touched. A
        thread hop costs more than verifying a remembered token, so a socket
        whose identification needs no query does not pay for one.
        """
        if (
            (token is not None and len(token) > keyring.IN_LOOP_MAX_TOKEN)
            or _session_may_query(self.scope)
            or not _store_is_fresh()
        ):
            return _THREAD
        try:
            return self.check_sync(token)
        except SynchronousOnlyOperation:  # a deadline passed after all: nothing was changed
            return _THREAD

    async def check(self, token: str | None) -> Any:
        """Identify (:meth:`check_sync`); ``_FAILED`` once the socket is closed."""
        try:
            identity = self.check_in_loop(token)
            if identity is _THREAD:
                identity = await database_sync_to_async(self.check_sync)(token)
        except TokenError as exc:
            await self.refuse(exc)
            return _FAILED
        except KeyStoreUnavailable:
            await self.unavailable()
            return _FAILED
        except Exception as exc:  # noqa: BLE001 — fail closed; say where, never what
            where = _where(exc)
            logger.error("chat websocket refused: unexpected %s at %s", type(exc).__name__, where)
            await self.unavailable()
            return _FAILED
        if self.closed:
            return _FAILED
        if identity is not None:
            self.adopt(identity, token)
        return identity

    def adopt(self, identity: ChatIdentity, token: str | None) -> None:
        if self.identity is None:
            self.identity = self.scope["chat_identity"] = identity
        else:
            _replace_identity(self.identity, identity)
        token = None if identity.anonymous else token
        if token != self.token:  # token_expiring is sent once per token
            self.expiring_sent = False
        self.token = token
        if not identity.anonymous and self.subject is None:
            self.subject = identity.user_id
        self.expires_at, self.refresh_at = token_times(identity.claims, clock.now())

    async def await_identify(self) -> bool:
        loop = asyncio.get_running_loop()
        timeout = identify_timeout()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(self.receive(), remaining)
            except TimeoutError:
                break
            if event["type"] == "websocket.disconnect":
                self.disconnected = True
                return False
            if event["type"] != "websocket.receive":
                continue
            try:
                token = identify_token(parse_frame(event, self.frame_limit), required=True)
            except ProtocolError as exc:
                await self.protocol_error(exc)
                return False
            return await self.check(token) is not _FAILED
        outcome = await self.check(None)  # security may have been switched off meanwhile
        if outcome is None:
            await self.refuse(
                TokenError("missing_token", f"no identify message within {timeout:g} s")
            )
        return outcome not in (None, _FAILED)

    # -- the application ------------------------------------------------------------

    async def serve(self) -> None:
        watcher = _Watcher.join(self)
        self.pending.append({"type": "websocket.connect"})
        try:
            await self.inner(self.scope, self.app_receive, self.app_send)
        except Exception:
            await self.close_quietly(1011)
            raise
        finally:
            watcher.connections.discard(self)
        await self.close_quietly(1000)  # the application returned without closing

    async def app_receive(self) -> Message:
        if self.pending:
            return self.pending.popleft()
        while True:
            event = await self.receive()
            if event["type"] != "websocket.receive":
                if event["type"] == "websocket.disconnect":
                    self.disconnected = True
                return event
            if self.closed:
                continue  # only the disconnect matters now
            try:
                message = parse_frame(event, self.frame_limit)
                token = identify_token(message, required=False)
            except ProtocolError as exc:
                await self.protocol_error(exc)
                continue
            if token is None:
                return event
            if await self.check(token) is not _FAILED and self.app_accepted:
                await self.announce()

    async def app_send(self, event: Message) -> None:
        kind = event["type"]
        if kind == "websocket.send":
            if self.closed:
                return
            if not self.app_accepted:  # ASGI: a send before accept accepts
                await self.accept()
                await self.announce()
            await self.send(event)
        elif kind == "websocket.accept":
            if not self.app_accepted:
                await self.accept(event)
                await self.announce()
        elif kind == "websocket.close":
            if not self.closed:
                self.closed = True
                await self.accept()  # the client learns the application's code, not 1006
                await self.send(event)
        elif self.accepted and kind.startswith("websocket.http.response."):
            if not self.closed:  # a denial response, but the socket is open already
                self.closed = True
                await self.send({"type": "websocket.close", "code": 1008})
        else:
            await self.send(event)

    # -- messages to the client -----------------------------------------------------

    async def send_json(self, message: dict[str, Any]) -> None:
        if not self.closed:
            await self.send({"type": "websocket.send", "text": json.dumps(message)})

    async def announce(self) -> None:
        """``identified`` for the current identity (and ``token_expiring`` if already due)."""
        self.app_accepted = True
        identity = self.identity
        assert identity is not None
        await self.send_json(
            {
                "type": "identified",
                "user": {
                    "id": None if identity.anonymous else identity.user_id,
                    "verified": not identity.anonymous,
                },
                "expires_at": self.expires_at,
                "refresh_at": self.refresh_at,
            }
        )
        await self.expiring(clock.now())

    async def expiring(self, now: float) -> None:
        if (
            self.app_accepted
            and not self.expiring_sent
            and self.refresh_at is not None
            and now >= self.refresh_at
        ):
            self.expiring_sent = True
            await self.send_json({"type": "token_expiring", "expires_at": self.expires_at})

    async def on_tick(self, now: float) -> None:
        if self.closed or self.expires_at is None:
            return
        if now > self.expires_at + app_settings.LEEWAY:  # the engine's rule for "expired"
            await self.refuse(TokenError("expired", "the token expired; identify with a new one"))
        else:
            await self.expiring(now)

    # -- closing ----------------------------------------------------------------------

    async def close(self, code: int, reason: str, detail: str) -> None:
        if self.closed or self.disconnected:
            return
        self.closed = True
        error = {"type": "error", "error": reason, "detail": detail}
        try:
            await self.accept()  # a close before accept reaches a browser as 1006
            await self.send({"type": "websocket.send", "text": json.dumps(error)})
            await self.send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:  # noqa: BLE001 — the client is gone already
            logger.debug("chat websocket already gone when closing with %s", reason)

    async def refuse(self, exc: TokenError) -> None:
        logger.debug("chat websocket refused: %s", exc.code)
        await self.close(CLOSE_REFUSED, exc.code, _one_line(exc.detail) or ERROR_CODES[exc.code])

    async def unavailable(self, log: bool = True) -> None:
        if log:
            logger.warning("chat websocket refused: the key store cannot be read")
        await self.close(CLOSE_UNAVAILABLE, "unavailable", UNAVAILABLE_DETAIL)

    async def protocol_error(self, exc: ProtocolError) -> None:
        logger.debug("chat websocket protocol error: %s", exc.reason)
        await self.close(CLOSE_PROTOCOL_ERROR, exc.reason, exc.detail)

    async def close_quietly(self, code: int) -> None:
        if not (self.closed or self.disconnected):
            self.closed = True
            try:
                await self.send({"type": "websocket.close", "code": code})
            except Exception:  # noqa: BLE001
                logger.debug("chat websocket already gone")


# -- live revocation ------------------------------------------------------------------


class _Watcher:
    """One per event loop: re-checks every open connection when the key store changes."""

    running: dict[Any, _Watcher] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connections: set[_Connection] = set()
        self.snapshot: Any = None

    @classmethod
    def join(cls, connection: _Connection) -> _Watcher:
        loop = asyncio.get_running_loop()
        watcher = cls.running.get(loop)
        if watcher is None:
            watcher = cls.running[loop] = cls(loop)
            loop.create_task(watcher.run(), name="chat_security websocket watcher")
        watcher.connections.add(connection)
        return watcher

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(tick_seconds())
                if not self.connections:
                    break
                try:
                    await self.tick()
                except Exception as exc:  # noqa: BLE001 — never let the watcher die
                    where = _where(exc)
                    logger.error("chat websocket watcher: %s at %s", type(exc).__name__, where)
        finally:
            if self.running.get(self.loop) is self:
                del self.running[self.loop]

    async def tick(self) -> None:
        live = [c for c in self.connections if not c.closed]
        try:
            snapshot = await _read_snapshot()
            if snapshot is not self.snapshot:
                await self.recheck(live)
                self.snapshot = snapshot
        except KeyStoreUnavailable:
            # Fail closed: a revocation made elsewhere could not be seen.
            logger.warning("chat websockets closed: the key store cannot be read")
            for connection in live:
                await connection.unavailable(log=False)
            return
        now = clock.now()
        for connection in live:
            await connection.on_tick(now)

    async def recheck(self, live: list[_Connection]) -> None:
        checked = [(c, c.token) for c in live if c.identity is not None]
        entries = [(token, c.subject) for c, token in checked]
        verdicts = await database_sync_to_async(recheck_tokens)(entries)
        for (connection, token), error in zip(checked, verdicts, strict=True):
            if error is None or connection.token != token:  # fine, or renewed meanwhile
                continue
            if isinstance(error, TokenError):
                await connection.refuse(error)
            else:
                await connection.unavailable()


# -- the middleware -------------------------------------------------------------------


class ChatSecurityWebSocketMiddleware:
    """ASGI middleware that identifies chat WebSockets (SPEC §10).

    The inner application sees ``scope["chat_identity"]`` (a
    :class:`~chat_security.identity_types.ChatIdentity`, as HTTP's
    ``request.chat_identity``). The object is updated in place when the client
    renews its token or an anonymous socket identifies, so read it when needed
    rather than copying its fields at connect. Other scope types pass through.
    """

    def __init__(self, inner: ASGIApp, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.inner = inner
        self.max_frame_bytes = max_frame_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "websocket":
            await self.inner(scope, receive, send)
            return
        await _Connection(self, scope, receive, send).run()
