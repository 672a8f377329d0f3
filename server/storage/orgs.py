"""Organisation tree, departments and windows."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.storage.models import Department, OrgUnit, Window


class OrgRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add_unit(self, unit: OrgUnit, parent: OrgUnit | None) -> OrgUnit:
        """Insert ``unit`` under ``parent`` and fill in its materialised path."""
        unit.parent_id = parent.id if parent else None
        self.s.add(unit)
        await self.s.flush()
        unit.path = f"{parent.path if parent else '/'}{unit.id}/"
        await self.s.flush()
        return unit

    async def unit(self, unit_id: int) -> OrgUnit | None:
        return await self.s.get(OrgUnit, unit_id)

    async def unit_by_code(self, code: str) -> OrgUnit | None:
        return (await self.s.execute(select(OrgUnit).where(OrgUnit.code == code))).scalar_one_or_none()

    async def units(self) -> Sequence[OrgUnit]:
        return (await self.s.execute(select(OrgUnit).order_by(OrgUnit.path))).scalars().all()

    async def ancestors(self, unit: OrgUnit) -> list[OrgUnit]:
        """The unit's ancestors, nearest first (not the unit itself)."""
        ids = [int(p) for p in unit.path.strip("/").split("/") if p][:-1]
        if not ids:
            return []
        rows = (await self.s.execute(select(OrgUnit).where(OrgUnit.id.in_(ids)))).scalars().all()
        by_id = {u.id: u for u in rows}
        return [by_id[i] for i in reversed(ids) if i in by_id]

    async def add_department(self, department: Department) -> Department:
        self.s.add(department)
        await self.s.flush()
        return department

    async def department(self, department_id: int) -> Department | None:
        return await self.s.get(Department, department_id)

    async def department_by_code(self, unit_id: int, code: str) -> Department | None:
        stmt = select(Department).where(Department.unit_id == unit_id, Department.code == code)
        return (await self.s.execute(stmt)).scalar_one_or_none()

    async def departments(self) -> Sequence[Department]:
        stmt = select(Department).order_by(Department.unit_id, Department.code)
        return (await self.s.execute(stmt)).scalars().all()

    async def add_window(self, window: Window) -> Window:
        self.s.add(window)
        await self.s.flush()
        return window

    async def windows(self) -> Sequence[Window]:
        return (await self.s.execute(select(Window).order_by(Window.code))).scalars().all()
