"""The matter catalogue (事项清单) and its checklists."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.storage.models import ChecklistItem, Document, Matter


class MatterRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def get(self, matter_id: int) -> Matter | None:
        return await self.s.get(Matter, matter_id)

    async def by_code(self, code: str) -> Matter | None:
        return (await self.s.execute(select(Matter).where(Matter.code == code))).scalar_one_or_none()

    async def search(
        self, *, query: str | None, department_code: str | None, limit: int, offset: int
    ) -> tuple[Sequence[Matter], int]:
        stmt = select(Matter).where(Matter.active.is_(True))
        if query:
            pattern = f"%{query.lower()}%"
            stmt = stmt.where(
                or_(
                    func.lower(Matter.code).like(pattern),
                    Matter.name_zh.like(f"%{query}%"),
                    func.lower(Matter.name_en).like(pattern),
                )
            )
        if department_code:
            stmt = stmt.where(Matter.department_code == department_code)
        total = (await self.s.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
        rows = (await self.s.execute(stmt.order_by(Matter.code).limit(limit).offset(offset))).scalars().all()
        return rows, total

    async def all(self) -> Sequence[Matter]:
        return (await self.s.execute(select(Matter).order_by(Matter.code))).scalars().all()

    async def add(self, matter: Matter) -> Matter:
        self.s.add(matter)
        await self.s.flush()
        return matter

    async def checklist(self, matter_id: int) -> Sequence[ChecklistItem]:
        stmt = select(ChecklistItem).where(ChecklistItem.matter_id == matter_id).order_by(ChecklistItem.position)
        return (await self.s.execute(stmt)).scalars().all()

    async def checklists(self, matter_ids: Sequence[int]) -> dict[int, list[ChecklistItem]]:
        out: dict[int, list[ChecklistItem]] = {i: [] for i in matter_ids}
        if not matter_ids:
            return out
        stmt = (
            select(ChecklistItem)
            .where(ChecklistItem.matter_id.in_(matter_ids))
            .order_by(ChecklistItem.matter_id, ChecklistItem.position)
        )
        for item in (await self.s.execute(stmt)).scalars():
            out[item.matter_id].append(item)
        return out

    async def checklist_item(self, matter_id: int, code: str) -> ChecklistItem | None:
        stmt = select(ChecklistItem).where(ChecklistItem.matter_id == matter_id, ChecklistItem.code == code)
        return (await self.s.execute(stmt)).scalar_one_or_none()

    async def items_with_documents(self, matter_id: int) -> set[str]:
        """Codes of the matter's checklist items that documents are filed against."""
        stmt = (
            select(ChecklistItem.code)
            .join(Document, Document.checklist_item_id == ChecklistItem.id)
            .where(ChecklistItem.matter_id == matter_id)
            .distinct()
        )
        return set((await self.s.execute(stmt)).scalars().all())

    async def replace_checklist(self, matter_id: int, items: Sequence[ChecklistItem]) -> None:
        """Replace a matter's checklist, keeping rows (and their ids) whose code survives."""
        existing = {i.code: i for i in await self.checklist(matter_id)}
        keep = {i.code for i in items}
        for code, old in existing.items():
            if code not in keep:
                await self.s.execute(delete(ChecklistItem).where(ChecklistItem.id == old.id))
        await self.s.flush()
        for position, item in enumerate(items):
            row = existing.get(item.code)
            if row is None:
                item.matter_id = matter_id
                item.position = position
                self.s.add(item)
            else:
                row.name_zh, row.name_en = item.name_zh, item.name_en
                row.required, row.accepted_types = item.required, list(item.accepted_types)
                row.max_size, row.position = item.max_size, position
        await self.s.flush()
