"""One chat WebSocket: identified before the application starts, re-identified in band.

See the package's docstring for the whole story; :class:`Connection` is it,
one instance per socket, driven by the ASGI server's ``receive``/``send``.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.core.exceptions import SynchronousOnlyOperation

from .. import clock, keyring, metrics, refusals, tokens, usage
from ..conf import app_settings
from ..exceptions import KeyStoreUnavailable, KeyUnreadable, TokenError
from ..identity_types import ChatIdentity
from ..integrations import DEFAULT, DEFAULT_USER_SPACE
from ..log import get_logger, where
from ..placement import query_has_token
from ..session import bind_subject, bound_subjects, existing_session
from .protocol import (
    CLOSE_PROTOCOL_ERROR,
    CLOSE_REFUSED,
    CLOSE_UNAVAILABLE,
    QUERY_DETAIL,
    SUBPROTOCOL,
    UNAVAILABLE_DETAIL,
    ASGIApp,
    Message,
    ProtocolError,
    Receive,
    Scope,
    Send,
    anonymous_id,
    app_scope,
    identify_timeout,
    identify_token,
    parse_frame,
    subprotocol_token,
    token_times,
)
from .watcher import Watcher

logger = get_logger("chat_security.websocket")

_FAILED: Any = object()
_THREAD: Any = object()


def _bind(session: Any, user_id: str, user_space: str) -> None:
    """Bind the chat session to its first verified user, as the HTTP middleware does."""
    if not bind_subject(session, user_id, user_space):
        return
    try:
        session.save()  # Channels saves nothing by itself
    except UpdateError:
        logger.debug("chat session ended before its subject could be bound")


def _session_may_query(scope: Scope) -> bool:
    """A session that came with a cookie must be loaded (and maybe bound) in the thread."""
    if scope.get("session") is None:
        return False
    cookies = scope.get("cookies")
    return not isinstance(cookies, dict) or bool(cookies.get(settings.SESSION_COOKIE_NAME))


def _replace_identity(target: ChatIdentity, source: ChatIdentity) -> None:
    """Update the identity the application holds in place (renewal, anonymous → verified)."""
    slots = getattr(type(source), "__slots__", ())
    for name in (slots,) if isinstance(slots, str) else slots:
        setattr(target, name, getattr(source, name))
    if hasattr(source, "__dict__"):
        target.__dict__.update(vars(source))


# -- one connection -------------------------------------------------------------------


class Connection:
    def __init__(
        self,
        inner: ASGIApp,
        frame_limit: int,
        scope: Scope,
        receive: Receive,
        send: Send,
        integrations: tuple[str, ...] = DEFAULT,
    ) -> None:
        self.inner, self.frame_limit = inner, frame_limit
        #: the integrations this socket's middleware serves (SPEC §13)
        self.integrations = integrations
        self.receive, self.send = receive, send
        subprotocols = list(scope.get("subprotocols") or ())
        self.offered = SUBPROTOCOL in subprotocols
        self.first_token = subprotocol_token(subprotocols)
        self.query_token = query_has_token(scope.get("query_string", b""))
        self.scope = app_scope(scope, self.offered)
        self.identity: ChatIdentity | None = None
        self.token: str | None = None
        self.subject: str | None = None  # the first verified user id binds the connection
        self.subject_space = DEFAULT_USER_SPACE  # ... in its user space
        self.expires_at: float | None = None
        self.refresh_at: int | None = None
        self.expiring_sent = False
        self.accepted = False  # the handshake was accepted (by us or for the application)
        self.app_accepted = False
        self.closed = False  # a close was sent (by us or by the application)
        self.disconnected = False
        self.pending: deque[Message] = deque()
        #: the key snapshot this socket was last verified against (see watcher)
        self.checked_against: Any = None
        self._checking: Any = None

    async def run(self) -> None:
        event = await self.receive()
        if event["type"] != "websocket.connect":
            return
        if self.query_token:
            await self.refuse_unchecked(TokenError("malformed", QUERY_DETAIL))
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
        # Read before verifying: if the engine then uses a newer one, the watcher
        # merely checks this socket once more.
        snapshot = self._checking = keyring.get_snapshot()
        now = clock.now()
        try:
            # SPEC §5: security_not_configured is the one thing to fix, token or not
            required = tokens.token_required(snapshot, self.integrations, now)
        except TokenError as exc:
            self.refused(exc.code, token, snapshot)
            raise
        if token is None:
            if required:
                return None
            identity = ChatIdentity.anonymous_visitor(
                anonymous_id(self.scope), tokens.letting_in(snapshot, self.integrations, now)
            )
            usage.count_request("unsigned", integration=identity.integration)
            return identity
        session = existing_session(self.scope.get("session"))
        bound = bound_subjects(session) or {}
        if self.subject is not None:
            bound[self.subject_space] = self.subject
        try:
            # The use is counted below, with the request (as the middleware does).
            result, now = tokens.verify_at(token, bound, integration=self.integrations)
            if self.subject is not None and result.user_space != self.subject_space:
                # A user of another user space is another user, whatever the id.
                raise TokenError("subject_changed", bound=self.subject)
        except TokenError as exc:
            self.refused(exc.code, token, snapshot)
            raise
        _bind(session, result.user_id, result.user_space)
        usage.count_verified(result, now)  # the key's use counted with it
        return ChatIdentity.verified(result)

    def refused(self, code: str, token: str | None, snapshot: Any, count: bool = True) -> None:
        """Count the refusal (unless ``count`` is False) and keep its sample for the
        panel (SPEC §15)."""
        try:
            headers = dict(self.scope.get("headers") or ())
            agent = headers.get(b"user-agent", b"").decode("latin-1")
            client = self.scope.get("client")
        except (TypeError, ValueError, AttributeError):  # a server outside the ASGI spec
            agent, client = "", None
        refusals.record(
            code,
            token=token,
            names=self.integrations,
            snapshot=snapshot,
            channel="websocket",
            path=str(self.scope.get("path", "")),
            user_agent=agent,
            client=str(client[0]) if client else None,
            count=count,
        )

    def check_in_loop(self, token: str | None) -> Any:
        """:meth:`check_sync` right here when it cannot touch the database, else ``_THREAD``.

        STYLE: ``database_sync_to_async`` only where the database is touched. A
        thread hop costs more than verifying a remembered token, so a socket
        whose identification needs no query does not pay for one.
        """
        if _session_may_query(self.scope) or not keyring.can_verify_in_loop(len(token or "")):
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
        except KeyUnreadable as exc:
            logger.error("chat websocket refused: %s", exc.detail)
            await self.unavailable(log=False, detail=exc.detail)  # names the key and the fix
            return _FAILED
        except KeyStoreUnavailable:
            await self.unavailable()
            return _FAILED
        except Exception as exc:  # noqa: BLE001 — fail closed; say where, never what
            at = where(exc)
            logger.error("chat websocket refused: unexpected %s at %s", type(exc).__name__, at)
            await self.unavailable()
            return _FAILED
        if self.closed:
            return _FAILED
        if identity is not None:
            self.adopt(identity, token)
            self.checked_against = self._checking
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
            self.subject_space = identity.user_space
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
            await self.refuse_unchecked(
                TokenError("missing_token", f"no identify message within {timeout:g} s")
            )
        return outcome not in (None, _FAILED)

    # -- the application ------------------------------------------------------------

    async def serve(self) -> None:
        watcher = Watcher.join(self)
        self.pending.append({"type": "websocket.connect"})
        # counted under the integration that first identified it, until it ends
        gauge = metrics.open_sockets(self.identity.integration) if self.identity else None
        if gauge is not None:
            gauge.inc()
        try:
            await self.inner(self.scope, self.app_receive, self.app_send)
        except Exception:
            await self.close_quietly(1011)
            raise
        finally:
            watcher.connections.discard(self)
            if gauge is not None:
                gauge.dec()
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
            await self.cut(TokenError("expired", "the token expired; identify with a new one"))
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
        await self.close(CLOSE_REFUSED, exc.code, exc.one_line)

    async def cut(self, exc: TokenError) -> None:
        """End an open socket whose token no longer holds (the watcher's re-check, its
        expiry). Its sample is kept for the panel like a refusal at identification
        (SPEC §15); it was counted when it identified, so it is not counted again, and
        nothing here touches the database (it runs on the event loop)."""
        self.refused(exc.code, self.token, self.checked_against, count=False)
        await self.refuse(exc)

    async def refuse_unchecked(self, exc: TokenError) -> None:
        """Refuse a socket the engine never judged (a token in the URL, no identify
        message): counted and kept like the others (SPEC §15). In the database thread:
        the count may fall on a flush."""
        await database_sync_to_async(self.refused)(exc.code, None, None)
        await self.refuse(exc)

    async def unavailable(self, log: bool = True, detail: str = UNAVAILABLE_DETAIL) -> None:
        if log:
            logger.warning("chat websocket refused: the key store cannot be read")
        await self.close(CLOSE_UNAVAILABLE, "unavailable", detail)

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
