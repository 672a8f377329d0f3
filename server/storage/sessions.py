"""Media sessions and their chat."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from sqlalchemy import Select, bindparam, func, select
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

    async def chat_page(
        self, case_id: int, *, session_id: int | None, limit: int, offset: int
    ) -> tuple[Sequence[ChatMessage], int]:
        """The case's (or one of its sessions') messages in the order they were said, and their count."""
        where = [ChatMessage.case_id == case_id]
        if session_id is not None:
            where.append(ChatMessage.session_id == session_id)
        total = int(await self.s.scalar(select(func.count()).select_from(ChatMessage).where(*where)) or 0)
        stmt = select(ChatMessage).where(*where).order_by(ChatMessage.id).limit(limit).offset(offset)
        return (await self.s.execute(stmt)).scalars().all(), total

    async def page_for_case(self, case_id: int, *, limit: int, offset: int) -> tuple[Sequence[MediaSession], int]:
        where = MediaSession.case_id == case_id
        total = int(await self.s.scalar(select(func.count()).select_from(MediaSession).where(where)) or 0)
        stmt = select(MediaSession).where(where).order_by(MediaSession.id).limit(limit).offset(offset)
        return (await self.s.execute(stmt)).scalars().all(), total
