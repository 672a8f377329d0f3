"""Media sessions and their chat."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.storage.models import CaseAuditEntry, ChatMessage, MediaSession


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

    async def open_with_joins(self, *, limit: int = 500) -> list[int]:
        """Open sessions somebody has joined (a ``session.joined`` audit entry naming them), oldest first.

        A session nobody ever joined is not among them: an inspection or a called ticket may open one well before
        anyone comes, and only the empty-session rule ends a session that had people in it.
        """
        stmt = (
            select(MediaSession.id, CaseAuditEntry.details)
            .join(CaseAuditEntry, CaseAuditEntry.case_id == MediaSession.case_id)
            .where(
                MediaSession.state == "open",
                CaseAuditEntry.action == "session.joined",
                CaseAuditEntry.at >= MediaSession.created_at,
            )
            .order_by(MediaSession.id)
        )
        found: list[int] = []
        for session_id, details in (await self.s.execute(stmt)).all():
            if isinstance(details, dict) and details.get("session_id") == session_id and session_id not in found:
                found.append(session_id)
                if len(found) >= limit:
                    break
        return found

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
