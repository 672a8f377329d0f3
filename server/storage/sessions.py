"""Media sessions and their chat."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.storage.models import ChatMessage, MediaSession


@cache
def _open_for_case_stmt() -> Select[MediaSession]:
    """Built once: call-next asks it on every call (see ``server.storage.queue``)."""
    return select(MediaSession).where(MediaSession.case_id == bindparam("case_id"), MediaSession.state == "open")


class SessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, row: MediaSession) -> MediaSession:
        self.s.add(row)
        await self.s.flush()
        return row

    async def get(self, session_id: int, *, for_update: bool = False) -> MediaSession | None:
        if for_update:
            stmt = select(MediaSession).where(MediaSession.id == session_id).with_for_update()
            return (await self.s.execute(stmt)).scalar_one_or_none()
        return await self.s.get(MediaSession, session_id)

    async def open_for_case(self, case_id: int) -> MediaSession | None:
        return (await self.s.execute(_open_for_case_stmt(), {"case_id": case_id})).scalars().first()

    async def for_case(self, case_id: int) -> Sequence[MediaSession]:
        stmt = select(MediaSession).where(MediaSession.case_id == case_id).order_by(MediaSession.id)
        return (await self.s.execute(stmt)).scalars().all()

    async def add_chat(self, row: ChatMessage) -> ChatMessage:
        self.s.add(row)
        await self.s.flush()
        return row

    async def chat(self, session_id: int, *, limit: int = 200) -> Sequence[ChatMessage]:
        stmt = select(ChatMessage).where(ChatMessage.session_id == session_id).order_by(ChatMessage.id).limit(limit)
        return (await self.s.execute(stmt)).scalars().all()
