"""Sessions left open by a process that is gone: ended after the empty-session timeout, like any empty one.

A session's empty timer lives in the memory of the process that holds its
room.  When that process is killed (SIGKILL, a crash, a lost node) and
nobody comes back, the timer is gone with it: the session stayed ``open``
for ever, and its recording, whose post-session job waits for the end,
never reached the case.  This sweeper looks, every few seconds, at the open
sessions somebody has joined; one whose room exists on no process
(``SignallingServer.is_live``) for ``empty_session_timeout`` seconds is
ended with reason ``empty`` (audited), and its recording job then runs.
A participant coming back within the timeout makes the room live again and
the count starts afresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from server.services.sessions import SessionService
from server.storage.database import Database
from server.storage.sessions import SessionRepository

log = logging.getLogger(__name__)

__all__ = ["SessionSweeper"]


class SessionSweeper:
    def __init__(
        self,
        *,
        db: Database,
        sessions: SessionService,
        is_live: Callable[[int], Awaitable[bool]],
        monotonic: Callable[[], float],
        empty_timeout: float,
    ) -> None:
        self.db = db
        self.sessions = sessions
        self.is_live = is_live
        self.monotonic = monotonic
        self.empty_timeout = empty_timeout
        #: session id → when it was first seen without a room anywhere (monotonic seconds).
        self.orphaned_since: dict[int, float] = {}

    @property
    def interval(self) -> float:
        """How often to look: a third of the timeout, between 1 and 30 s."""
        return max(1.0, min(30.0, self.empty_timeout / 3))

    async def sweep(self) -> list[int]:
        """One look; returns the sessions it ended."""
        async with self.db.read() as s:
            candidates = await SessionRepository(s).open_with_joins()
        now = self.monotonic()
        ended: list[int] = []
        seen = set()
        for session_id in candidates:
            if await self.is_live(session_id):
                continue
            seen.add(session_id)
            since = self.orphaned_since.setdefault(session_id, now)
            if now - since < self.empty_timeout:
                continue
            async with self.db.transaction() as s:
                await self.sessions.end(s, None, session_id, "empty")
            log.info("session %s had no room on any process for %.0f s: ended", session_id, now - since)
            ended.append(session_id)
            seen.discard(session_id)
        # Forget what came back to life or ended otherwise.
        self.orphaned_since = {k: v for k, v in self.orphaned_since.items() if k in seen}
        return ended

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("orphaned-session sweep failed")
            await asyncio.sleep(self.interval)
