"""Cases (办件), their audit trail and documents."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.storage.models import Case, CaseAuditEntry, Department, Document, InspectionTask, Matter, OrgUnit


@dataclass(frozen=True)
class CaseFilter:
    """Visibility and search for case lists; ``None`` fields do not filter."""

    unit_id: int | None = None
    department_id: int | None = None
    #: Cases opened in, or routed to a department in, this subtree.
    subtree_path: str | None = None
    #: Only this one case (an invite's scope).
    case_id: int | None = None
    state: str | None = None
    matter_id: int | None = None
    query: str | None = None
    #: When set, the filter matches nothing (a role that sees no lists).
    nothing: bool = False


def transaction_memo(session: AsyncSession) -> dict[str, Any]:
    """A dict that lives as long as the session's current transaction (a new transaction starts empty).

    Holds what a unit of work already knows from the database and may not
    learn again: the case rows it has locked and each such case's audit head.
    Both stay true until the transaction ends because the row lock is held
    to the end (no savepoints are rolled back in this code base).
    """
    txn = session.sync_session.get_transaction()
    held = session.info.get("cloudwindow.memo")
    if held is None or held[0] is not txn:
        held = (txn, {})
        session.info["cloudwindow.memo"] = held
    memo: dict[str, Any] = held[1]
    return memo


@cache
def _lock_stmt() -> Select[Case, str, Matter]:
    """A case locked, with its centre path and matter (built once: see ``server.storage.queue``)."""
    return (
        select(Case, OrgUnit.path, Matter)
        .join(Department, Department.id == Case.department_id)
        .join(OrgUnit, OrgUnit.id == Department.unit_id)
        .join(Matter, Matter.id == Case.matter_id)
        .where(Case.id == bindparam("case_id"))
        .with_for_update(of=Case)
    )


@cache
def _audit_head_stmt() -> Select[int, str]:
    return (
        select(CaseAuditEntry.seq, CaseAuditEntry.hash)
        .where(CaseAuditEntry.case_id == bindparam("case_id"))
        .order_by(CaseAuditEntry.seq.desc())
        .limit(1)
    )


class CaseRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, case: Case) -> Case:
        self.s.add(case)
        await self.s.flush()
        return case

    async def get(self, case_id: int, *, for_update: bool = False) -> Case | None:
        """The case; ``for_update`` locks its row to the end of the transaction (asked once: a held lock is kept).

        The locking read brings the case's centre path and its matter along
        (what :meth:`CaseService.load` asks next), so they cost no statement
        of their own.
        """
        if for_update:
            locked: dict[int, Case] = transaction_memo(self.s).setdefault("locked_cases", {})
            if case_id in locked:
                return locked[case_id]
            row = (await self.s.execute(_lock_stmt(), {"case_id": case_id})).one_or_none()
            if row is None:
                return None
            self.remember_locked(row[0], row[1], row[2])
            return row[0]
        return await self.s.get(Case, case_id)

    def remember_locked(self, case: Case, department_path: str | None = None, *loaded: object) -> None:
        """Record a case row the caller has locked, for the rest of the transaction (see :func:`transaction_memo`).

        ``department_path``: the centre path of the case's department, if the
        same statement read it; ``loaded``: ORM rows that came along (kept
        here, so the session's identity map, which holds unchanged rows only
        weakly, still answers ``session.get`` for them).
        """
        memo = transaction_memo(self.s)
        memo.setdefault("locked_cases", {})[case.id] = case
        if department_path is not None:
            memo.setdefault("department_paths", {})[case.department_id] = department_path
        memo.setdefault("kept", []).extend(loaded)

    def remember_department_path(self, department_id: int, path: str) -> None:
        """The centre path of a department, read by the caller in this transaction."""
        transaction_memo(self.s).setdefault("department_paths", {})[department_id] = path

    async def department_unit_path(self, department_id: int) -> str:
        """The path of the centre the department belongs to (asked once per transaction and department)."""
        paths: dict[int, str] = transaction_memo(self.s).setdefault("department_paths", {})
        if department_id not in paths:
            stmt = (
                select(OrgUnit.path)
                .join(Department, Department.unit_id == OrgUnit.id)
                .where(Department.id == department_id)
            )
            paths[department_id] = str((await self.s.execute(stmt)).scalar_one())
        return paths[department_id]

    def _filtered(self, f: CaseFilter) -> Select[Case]:
        stmt = select(Case)
        if f.nothing:
            return stmt.where(Case.id.is_(None))
        if f.unit_id is not None:
            stmt = stmt.where(Case.unit_id == f.unit_id)
        if f.department_id is not None:
            stmt = stmt.where(Case.department_id == f.department_id)
        if f.case_id is not None:
            stmt = stmt.where(Case.id == f.case_id)
        if f.subtree_path is not None:
            routed_here = (
                select(Department.id)
                .join(OrgUnit, Department.unit_id == OrgUnit.id)
                .where(OrgUnit.path.startswith(f.subtree_path))
            )
            stmt = stmt.where(or_(Case.unit_path.startswith(f.subtree_path), Case.department_id.in_(routed_here)))
        if f.state:
            stmt = stmt.where(Case.state == f.state)
        if f.matter_id is not None:
            stmt = stmt.where(Case.matter_id == f.matter_id)
        if f.query:
            q = f.query.strip()
            conds: list[ColumnElement[bool]] = [Case.applicant_name.like(f"%{q}%")]
            if q.isascii() and q.isdigit() and len(q) <= 10 and int(q) <= 2**31 - 1:
                conds.append(Case.id == int(q))
            stmt = stmt.where(or_(*conds))
        return stmt

    async def search(self, f: CaseFilter, *, limit: int, offset: int) -> tuple[Sequence[Case], int]:
        stmt = self._filtered(f)
        total = (await self.s.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
        rows = (await self.s.execute(stmt.order_by(Case.id.desc()).limit(limit).offset(offset))).scalars().all()
        return rows, total

    # -- audit ----------------------------------------------------------

    async def audit_head(self, case_id: int) -> tuple[int, str] | None:
        """``(seq, hash)`` of the case's last audit entry (None: no entry yet), with the case row locked.

        The lock serialises appends to one case across transactions and server
        processes, so the head read under it stays the head until this
        transaction ends: it is read once per transaction and then kept up
        to date by :meth:`add_audit`.
        """
        heads: dict[int, tuple[int, str] | None] = transaction_memo(self.s).setdefault("audit_heads", {})
        if case_id not in heads:
            await self.get(case_id, for_update=True)
            row = (await self.s.execute(_audit_head_stmt(), {"case_id": case_id})).one_or_none()
            heads[case_id] = (int(row[0]), str(row[1])) if row is not None else None
        return heads[case_id]

    async def add_audit(self, entry: CaseAuditEntry) -> CaseAuditEntry:
        """Queue the entry for insertion (the next flush or the commit writes it; entries of one unit of work
        go in one batch); the head must have been read with :meth:`audit_head` in this transaction."""
        self.s.add(entry)
        heads: dict[int, tuple[int, str] | None] = transaction_memo(self.s).setdefault("audit_heads", {})
        heads[entry.case_id] = (entry.seq, entry.hash)
        return entry

    async def audit(self, case_id: int) -> Sequence[CaseAuditEntry]:
        stmt = select(CaseAuditEntry).where(CaseAuditEntry.case_id == case_id).order_by(CaseAuditEntry.seq)
        return (await self.s.execute(stmt)).scalars().all()

    async def joined_since(self, case_id: int, since: datetime, roles: Sequence[str]) -> bool:
        """Whether someone in one of ``roles`` joined a media session of the case at or after ``since``.

        Joins are written to the audit by the signalling callback (``session.joined``); the audit is the
        durable record the call state machine reads (``server.services.callflow``).
        """
        stmt = (
            select(CaseAuditEntry.id)
            .where(
                CaseAuditEntry.case_id == case_id,
                CaseAuditEntry.action == "session.joined",
                CaseAuditEntry.actor_role.in_(list(roles)),
                CaseAuditEntry.at >= since,
            )
            .limit(1)
        )
        return (await self.s.execute(stmt)).first() is not None

    async def audited_case_ids(self) -> Sequence[int]:
        stmt = select(CaseAuditEntry.case_id).distinct().order_by(CaseAuditEntry.case_id)
        return (await self.s.execute(stmt)).scalars().all()

    # -- documents ------------------------------------------------------

    async def add_document(self, doc: Document) -> Document:
        self.s.add(doc)
        await self.s.flush()
        return doc

    async def document(self, case_id: int, document_id: int) -> Document | None:
        stmt = select(Document).where(and_(Document.id == document_id, Document.case_id == case_id))
        return (await self.s.execute(stmt)).scalar_one_or_none()

    async def documents(self, case_id: int) -> Sequence[Document]:
        stmt = select(Document).where(Document.case_id == case_id).order_by(Document.id)
        return (await self.s.execute(stmt)).scalars().all()

    async def delete_document(self, doc: Document) -> None:
        """Delete the row, first dropping what points at it (an inspection task's report: a new one can be made).

        Every foreign key to ``documents.id`` is cleared here, in the same transaction, so a removal never fails
        on a reference (it used to, with 500, for the inspection report the task pointed to).
        """
        await self.s.execute(
            update(InspectionTask).where(InspectionTask.report_document_id == doc.id).values(report_document_id=None)
        )
        await self.s.delete(doc)
        await self.s.flush()
