"""The expert library and consultation notes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from server.storage.models import CaseNote, Expert, ExpertField


class ExpertRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, row: Expert, fields: Sequence[str]) -> Expert:
        self.s.add(row)
        await self.s.flush()
        await self.set_fields(row.id, fields)
        return row

    async def get(self, expert_id: int) -> Expert | None:
        return await self.s.get(Expert, expert_id)

    async def by_user(self, user_id: int) -> Expert | None:
        return (await self.s.execute(select(Expert).where(Expert.user_id == user_id))).scalar_one_or_none()

    async def set_fields(self, expert_id: int, fields: Sequence[str]) -> None:
        await self.s.execute(delete(ExpertField).where(ExpertField.expert_id == expert_id))
        for f in sorted(set(fields)):
            self.s.add(ExpertField(expert_id=expert_id, field=f))
        await self.s.flush()

    async def fields(self, expert_ids: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {i: [] for i in expert_ids}
        if expert_ids:
            stmt = (
                select(ExpertField)
                .where(ExpertField.expert_id.in_(expert_ids))
                .order_by(ExpertField.expert_id, ExpertField.field)
            )
            for row in (await self.s.execute(stmt)).scalars():
                out[row.expert_id].append(row.field)
        return out

    async def search(
        self,
        *,
        field: str | None,
        department_code: str | None,
        availability: str | None,
        query: str | None,
        limit: int,
        offset: int,
    ) -> tuple[Sequence[Expert], int]:
        conditions: list[ColumnElement[bool]] = [Expert.active.is_(True)]
        if field is not None:
            conditions.append(Expert.id.in_(select(ExpertField.expert_id).where(ExpertField.field == field)))
        if department_code is not None:
            conditions.append(Expert.department_code == department_code)
        if availability is not None:
            conditions.append(Expert.availability == availability)
        if query:
            escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            like = f"%{escaped}%"
            conditions.append(or_(Expert.name.like(like, escape="\\"), Expert.organisation.like(like, escape="\\")))
        total = (await self.s.execute(select(func.count()).select_from(Expert).where(*conditions))).scalar_one()
        stmt = select(Expert).where(*conditions).order_by(Expert.id).limit(limit).offset(offset)
        return (await self.s.execute(stmt)).scalars().all(), int(total)


class NoteRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, row: CaseNote) -> CaseNote:
        self.s.add(row)
        await self.s.flush()
        return row

    async def for_case(self, case_id: int) -> Sequence[CaseNote]:
        stmt = select(CaseNote).where(CaseNote.case_id == case_id).order_by(CaseNote.id)
        return (await self.s.execute(stmt)).scalars().all()
