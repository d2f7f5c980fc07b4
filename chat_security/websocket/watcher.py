"""Live revocation (STYLE habit 10): one watcher per event loop re-checks open sockets.

It ticks every :func:`~.protocol.tick_seconds`; each tick asks
:func:`keyring.get_snapshot` once, re-verifies every connection's token in one
thread hop when the snapshot object changed, closes those that now fail, and
applies each token's deadlines.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.core.exceptions import SynchronousOnlyOperation

from .. import clock, keyring, tokens
from ..exceptions import KeyStoreUnavailable, TokenError
from .protocol import not_configured, tick_seconds, where

if TYPE_CHECKING:
    from .connection import Connection

logger = logging.getLogger("chat_security.websocket")


async def _read_snapshot() -> Any:
    """The key snapshot; through the database thread only when a query is due."""
    if keyring.can_verify_in_loop():
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
                raise not_configured()
            elif snapshot.enabled:
                raise TokenError("missing_token", "web chat security was switched on; identify")
            verdicts.append(None)
        except (TokenError, KeyStoreUnavailable) as exc:  # the latter: its service key
            verdicts.append(exc)
    return verdicts


class Watcher:
    """One per event loop: re-checks every open connection when the key store changes."""

    running: dict[Any, Watcher] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connections: set[Connection] = set()
        self.snapshot: Any = None

    @classmethod
    def join(cls, connection: Connection) -> Watcher:
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
                    at = where(exc)
                    logger.error("chat websocket watcher: %s at %s", type(exc).__name__, at)
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

    async def recheck(self, live: list[Connection]) -> None:
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
