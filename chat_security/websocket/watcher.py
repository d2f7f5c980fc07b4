"""Live revocation (STYLE habit 10): one watcher per event loop re-checks open sockets.

It ticks every :func:`~.protocol.tick_seconds`; each tick asks
:func:`keyring.get_snapshot` once, then re-verifies, in one thread hop, every
connection that was last verified against another snapshot, closes those that
now fail, and applies each token's deadlines.

Each connection records the snapshot it was last verified against
(``Connection.checked_against``), and the connections to re-check are listed
*after* the snapshot is read. So a socket that identified or renewed while a
tick was waiting for the store, against the snapshot of just before a change,
is re-checked by that tick or the next: none can slip between two ticks.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.core.exceptions import SynchronousOnlyOperation

from .. import clock, keyring, tokens
from ..exceptions import KeyStoreUnavailable, TokenError
from ..log import get_logger, where
from .protocol import tick_seconds

logger = get_logger("chat_security.websocket")


async def _read_snapshot() -> Any:
    """The key snapshot; through the database thread only when a query is due."""
    if keyring.can_verify_in_loop():
        try:
            return keyring.get_snapshot()
        except SynchronousOnlyOperation:
            pass
    return await database_sync_to_async(keyring.get_snapshot)()


def recheck_tokens(
    entries: list[tuple[str | None, str | None, str | None, tuple[str, ...]]],
) -> tuple[Any, list[TokenError | KeyStoreUnavailable | None]]:
    """Re-verify open connections' ``(token, bound subject, kid that verified it,
    integrations served)``.

    Returns the snapshot they were checked against and, per connection,
    ``None`` (still fine) or the error to close it with. A token unchanged
    since its last check is a dict hit in the engine. A connection whose key
    was revoked or left its grace period is ``key_retired`` (SPEC §10), also
    when its token names no kid (the engine alone would say
    ``invalid_signature`` or ``security_not_configured`` for such a token).
    Raises KeyStoreUnavailable when the store itself cannot be read.
    """
    snapshot = keyring.get_snapshot()
    now = clock.now()
    verdicts: list[TokenError | KeyStoreUnavailable | None] = []
    for token, subject, kid, names in entries:
        try:
            if token is not None:
                _check_key(snapshot, kid, now)
                tokens.verify(token, session_subject=subject, count_use=False, integration=names)
            elif tokens.token_required(snapshot, names, now):  # or security_not_configured
                raise TokenError("missing_token", "web chat security was switched on; identify")
            verdicts.append(None)
        except (TokenError, KeyStoreUnavailable) as exc:  # the latter: its service key
            verdicts.append(exc)
    return snapshot, verdicts


def _check_key(snapshot: Any, kid: str | None, now: float) -> None:
    """``key_retired`` when the key that verified the connection's token no longer can."""
    entry = snapshot.by_kid.get(kid) if kid is not None else None
    if entry is not None and not entry.usable(now):
        raise tokens.key_retired(entry, now)


class Watched(Protocol):
    """What the watcher needs of an open socket (``connection.Connection`` is one).

    Named here, so that the watcher depends on no connection class: the
    connection joins the watcher, never the other way round.
    """

    closed: bool
    token: str | None  # the token it was last verified with (None: anonymous)
    subject: str | None  # the user id bound to the socket
    identity: Any  # its ChatIdentity (``kid``), None until identified
    checked_against: Any  # the key snapshot it was last verified against
    integrations: tuple[str, ...]  # the integrations its middleware serves

    async def refuse(self, exc: TokenError) -> None: ...

    async def cut(self, exc: TokenError) -> None: ...

    async def unavailable(self, log: bool = True) -> None: ...

    async def on_tick(self, now: float) -> None: ...


class Watcher:
    """One per event loop: re-checks every open connection when the key store changes."""

    running: dict[Any, Watcher] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connections: set[Watched] = set()
        self.task: asyncio.Task[None] | None = None

    @classmethod
    def join(cls, connection: Watched) -> Watcher:
        loop = asyncio.get_running_loop()
        watcher = cls.running.get(loop)
        if watcher is None:
            watcher = cls.running[loop] = cls(loop)
            watcher.task = loop.create_task(watcher.run(), name="chat_security websocket watcher")
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
                    at = where(exc)
                    logger.error("chat websocket watcher: %s at %s", type(exc).__name__, at)
        finally:
            if self.running.get(self.loop) is self:
                del self.running[self.loop]

    async def tick(self) -> None:
        try:
            snapshot = await _read_snapshot()
            # Listed after the await: a socket that identified meanwhile is in the list.
            stale = [c for c in self.live() if c.checked_against is not snapshot]
            if stale:
                await self.recheck(stale)
        except KeyStoreUnavailable:
            # Fail closed: a revocation made elsewhere could not be seen.
            logger.warning("chat websockets closed: the key store cannot be read")
            for connection in self.live():
                await connection.unavailable(log=False)
            return
        now = clock.now()
        for connection in self.live():
            await connection.on_tick(now)

    def live(self) -> list[Watched]:
        return [c for c in self.connections if not c.closed]

    async def recheck(self, stale: list[Watched]) -> None:
        identified = [(c, c.token, i) for c in stale if (i := c.identity) is not None]
        checked = [(c, token) for c, token, _ in identified]
        entries = [(token, c.subject, i.kid, c.integrations) for c, token, i in identified]
        snapshot, verdicts = await database_sync_to_async(recheck_tokens)(entries)
        for (connection, token), error in zip(checked, verdicts, strict=True):
            if connection.token != token:
                # Renewed meanwhile: that check recorded the snapshot it used; if it
                # is not the current one, the next tick checks this socket again.
                continue
            if error is None:
                connection.checked_against = snapshot
            elif isinstance(error, TokenError):
                await connection.cut(error)
            else:
                await connection.unavailable()


# -- the middleware -------------------------------------------------------------------
