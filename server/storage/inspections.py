"""Inspection tasks, their location track, evidence photos and checklist results."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.storage.models import InspectionEvidence, InspectionLocation, InspectionResult, InspectionTask


class InspectionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, row: InspectionTask) -> InspectionTask:
        self.s.add(row)
        await self.s.flush()
        return row

    async def get(self, task_id: int, *, for_update: bool = False) -> InspectionTask | None:
        if for_update:
            stmt = select(InspectionTask).where(InspectionTask.id == task_id).with_for_update()
            return (await self.s.execute(stmt)).scalar_one_or_none()
        return await self.s.get(InspectionTask, task_id)

    async def for_case(self, case_id: int) -> Sequence[InspectionTask]:
        stmt = select(InspectionTask).where(InspectionTask.case_id == case_id).order_by(InspectionTask.id)
        return (await self.s.execute(stmt)).scalars().all()

    async def open_for_case(self, case_id: int) -> InspectionTask | None:
        stmt = select(InspectionTask).where(InspectionTask.case_id == case_id, InspectionTask.state == "open")
        return (await self.s.execute(stmt)).scalars().first()

    async def add_location(self, row: InspectionLocation) -> InspectionLocation:
        self.s.add(row)
        await self.s.flush()
        return row

    async def locations(self, task_id: int, *, limit: int) -> Sequence[InspectionLocation]:
        stmt = (
            select(InspectionLocation)
            .where(InspectionLocation.task_id == task_id)
            .order_by(InspectionLocation.id.desc())
            .limit(limit)
        )
        return list(reversed((await self.s.execute(stmt)).scalars().all()))

    async def add_evidence(self, row: InspectionEvidence) -> InspectionEvidence:
        self.s.add(row)
        await self.s.flush()
        return row

    async def evidence(self, task_id: int) -> Sequence[InspectionEvidence]:
        stmt = (
            select(InspectionEvidence)
            .where(InspectionEvidence.task_id == task_id)
            .order_by(InspectionEvidence.client_seq, InspectionEvidence.id)
        )
        return (await self.s.execute(stmt)).scalars().all()

    async def evidence_of_case(self, case_id: int) -> Sequence[InspectionEvidence]:
        stmt = select(InspectionEvidence).where(InspectionEvidence.case_id == case_id).order_by(InspectionEvidence.id)
        return (await self.s.execute(stmt)).scalars().all()

    async def all_evidence(self) -> Sequence[InspectionEvidence]:
        return (await self.s.execute(select(InspectionEvidence).order_by(InspectionEvidence.id))).scalars().all()

    async def one_evidence(self, task_id: int, evidence_id: int) -> InspectionEvidence | None:
        row = await self.s.get(InspectionEvidence, evidence_id)
        return row if row is not None and row.task_id == task_id else None

    async def evidence_by_key(self, task_id: int, client_key: str) -> InspectionEvidence | None:
        stmt = select(InspectionEvidence).where(
            InspectionEvidence.task_id == task_id, InspectionEvidence.client_key == client_key
        )
        return (await self.s.execute(stmt)).scalar_one_or_none()

    async def results(self, task_id: int) -> Sequence[InspectionResult]:
        stmt = select(InspectionResult).where(InspectionResult.task_id == task_id).order_by(InspectionResult.id)
        return (await self.s.execute(stmt)).scalars().all()

    async def result(self, task_id: int, item_code: str) -> InspectionResult | None:
        stmt = select(InspectionResult).where(
            InspectionResult.task_id == task_id, InspectionResult.item_code == item_code
        )
        return (await self.s.execute(stmt)).scalar_one_or_none()

    async def add_result(self, row: InspectionResult) -> InspectionResult:
        self.s.add(row)
        await self.s.flush()
        return row
