"""Queue and appointment storage: windows, tickets, counters, policies, status, alerts, slots, bookings, bans.

Engine differences stay here (DESIGN.md §5.5):

* call-next takes the head of a line with ``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL, so concurrent clerks take different rows without waiting;
  SQLite renders no ``FOR UPDATE`` and relies on ``BEGIN IMMEDIATE``
  (``server.storage.database``), which serialises writers;
* the daily ticket counter and the exactly-once alert are single atomic
  ``INSERT ... ON CONFLICT`` statements, which both engines support;
* the scanner takes a transaction-scoped advisory lock on PostgreSQL, so
  several server processes do not scan at once (SQLite: one writer anyway).

Repositories never commit; the caller's unit of work does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    Update,
    and_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from server.storage.models import (
    ACTIVE_TICKET_STATES,
    Alert,
    Appointment,
    AppointmentSlot,
    BookingBan,
    Case,
    Department,
    Matter,
    OrgUnit,
    QueuePolicy,
    QueueStatus,
    QueueStatusChange,
    Ticket,
    TicketCounter,
    User,
    Window,
    WindowMatter,
)

#: Key of the scanner's advisory lock (PostgreSQL); any constant unique to this use.
SCANNER_LOCK_KEY = 0x_C10D_0006


class DuplicateActive(Exception):
    """An insert hit a real-name partial unique index (an active ticket or booking for the person exists)."""


def _is_violation(exc: IntegrityError, index: str, columns: str) -> bool:
    message = str(exc.orig)
    return index in message or columns in message


def _insert(session: AsyncSession, table: Any) -> Any:
    """A dialect ``INSERT`` that knows ``ON CONFLICT`` (both engines spell it the same)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


@dataclass(frozen=True)
class LineTicket:
    """What a board shows of a waiting ticket (read as plain columns: boards list whole lines several times a
    second, and loading each ticket as an ORM object cost the event loop tens of milliseconds per board)."""

    id: int
    number: str
    unit_id: int
    priority: int
    waiting_since: datetime


@dataclass(frozen=True)
class TicketInHand:
    """A ticket with what an action on it checks next, read in the ticket's one statement."""

    ticket: Ticket
    #: Path of the ticket's service point, and of the centre its department belongs to (who may see it).
    unit_path: str
    department_path: str
    #: The case, locked with the ticket (None unless asked for).
    case: Case | None
    #: Whether the window the ticket is at (if any) was a tidal one when the ticket was read.
    window_tidal: bool


@dataclass(frozen=True)
class WaitingStats:
    waiting: int
    oldest: datetime | None


# -- the hot path's statements, built once (building a statement costs more Python than executing a cached one) -----


@cache
def _lock_for_call_stmt() -> Select[Window, int, QueuePolicy, Department]:
    current = (
        select(Ticket.id)
        .where(Ticket.window_id == Window.id, Ticket.state.in_(("called", "serving")))
        .limit(1)
        .scalar_subquery()
    )
    scope = literal("department:", String) + cast(Window.department_id, String)
    # The department rides along (into the session's identity map): the ring names it, at no extra round trip.
    return (
        select(Window, current, QueuePolicy, Department)
        .join(Department, Department.id == Window.department_id)
        .outerjoin(QueuePolicy, QueuePolicy.scope == scope)
        .where(Window.id == bindparam("window_id"))
        .with_for_update(of=Window)
    )


@cache
def _in_hand_stmt(for_update: bool) -> Select[*tuple[Any, ...]]:
    point, centre = aliased(OrgUnit, name="point"), aliased(OrgUnit, name="centre")
    stmt: Select[*tuple[Any, ...]] = (
        select(Ticket, point.path, centre.path, Window.tidal)
        .join(point, point.id == Ticket.unit_id)
        .join(Department, Department.id == Ticket.department_id)
        .join(centre, centre.id == Department.unit_id)
        .outerjoin(Window, Window.id == Ticket.window_id)
        .where(Ticket.id == bindparam("ticket_id"))
    )
    if for_update:
        stmt = stmt.add_columns(Case).join(Case, Case.id == Ticket.case_id).with_for_update(of=(Ticket, Case))
    return stmt


@cache
def _head_for_window_stmt() -> Select[int, str, int]:
    served = select(WindowMatter.matter_id).where(WindowMatter.window_id == bindparam("window_id"))
    return (
        select(Ticket.id, Case.state, Case.department_id)
        .join(Case, Case.id == Ticket.case_id)
        .where(
            Ticket.department_id == bindparam("department_id"),
            Ticket.state == "waiting",
            or_(~exists(served), Ticket.matter_id.in_(served)),
        )
        .order_by(Ticket.priority, Ticket.order_key, Ticket.id)
        .limit(1)
        .with_for_update(skip_locked=True, of=Ticket)
    )


@cache
def _mark_called_stmt() -> Update:
    return (
        update(Ticket)
        .where(Ticket.id == bindparam("ticket_id"), Ticket.state == "waiting")
        .values(
            state="called",
            window_id=bindparam("p_window_id"),
            clerk_user_id=bindparam("p_clerk_user_id"),
            called_at=bindparam("p_called_at"),
            ring_deadline=bindparam("p_ring_deadline"),
        )
        .returning(Ticket)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


class WindowRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def get(self, window_id: int, *, for_update: bool = False) -> Window | None:
        if for_update:
            stmt = select(Window).where(Window.id == window_id).with_for_update()
            return (await self.s.execute(stmt)).scalar_one_or_none()
        return await self.s.get(Window, window_id)

    async def lock_for_call(self, window_id: int) -> tuple[Window, int | None, QueuePolicy | None, Department] | None:
        """The window, locked, the id of the ticket it has in hand (called or serving), its department's
        queue policy (None: the defaults) and the department, in one statement."""
        row = (await self.s.execute(_lock_for_call_stmt(), {"window_id": window_id})).one_or_none()
        if row is None:
            return None
        return row[0], int(row[1]) if row[1] is not None else None, row[2], row[3]

    async def of_clerk(self, user_id: int) -> Window | None:
        return (await self.s.execute(select(Window).where(Window.clerk_user_id == user_id))).scalar_one_or_none()

    async def assign_clerk(self, window: Window, user_id: int, now: datetime) -> None:
        """Sign ``user_id`` in; raises :class:`DuplicateActive` if the clerk is signed in elsewhere (a race)."""
        window.clerk_user_id = user_id
        window.signed_in_at = now
        try:
            await self.s.flush()
        except IntegrityError as exc:
            if _is_violation(exc, "uq_windows_clerk_user_id", "windows.clerk_user_id"):
                raise DuplicateActive from None
            raise

    async def of_department(self, department_id: int) -> Sequence[Window]:
        stmt = select(Window).where(Window.department_id == department_id).order_by(Window.code)
        return (await self.s.execute(stmt)).scalars().all()

    async def served_matter_ids(self, window_id: int) -> list[int]:
        stmt = (
            select(WindowMatter.matter_id).where(WindowMatter.window_id == window_id).order_by(WindowMatter.matter_id)
        )
        return list((await self.s.execute(stmt)).scalars().all())

    async def served_matter_codes(self, window_ids: Sequence[int]) -> dict[int, list[str]]:
        """Matter codes each window serves (windows serving all matters are absent)."""
        if not window_ids:
            return {}
        stmt = (
            select(WindowMatter.window_id, Matter.code)
            .join(Matter, WindowMatter.matter_id == Matter.id)
            .where(WindowMatter.window_id.in_(window_ids))
            .order_by(WindowMatter.window_id, Matter.code)
        )
        codes: dict[int, list[str]] = {}
        for window_id, code in (await self.s.execute(stmt)).all():
            codes.setdefault(window_id, []).append(code)
        return codes

    async def set_served_matters(self, window_id: int, matter_ids: Sequence[int]) -> None:
        await self.s.execute(delete(WindowMatter).where(WindowMatter.window_id == window_id))
        for matter_id in sorted(set(matter_ids)):
            self.s.add(WindowMatter(window_id=window_id, matter_id=matter_id))
        await self.s.flush()

    async def tidal_due(self, now: datetime, limit: int) -> Sequence[Window]:
        stmt = (
            select(Window)
            .where(Window.tidal.is_(True), Window.state != "closed", Window.closes_at <= now)
            .order_by(Window.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.s.execute(stmt)).scalars().all()


class TicketRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def next_number(self, department_id: int, day: str) -> int:
        """The department's next ticket number of ``day``: one atomic upsert, safe under concurrency."""
        stmt = _insert(self.s, TicketCounter).values(department_id=department_id, day=day, last=1)
        stmt = stmt.on_conflict_do_update(
            index_elements=[TicketCounter.department_id, TicketCounter.day],
            set_={"last": TicketCounter.last + 1},
        ).returning(TicketCounter.last)
        return int((await self.s.execute(stmt)).scalar_one())

    async def department_rank(self, department: Department) -> int:
        """0-based position of the department among its centre's departments (by id): its default letter."""
        stmt = select(func.count()).where(Department.unit_id == department.unit_id, Department.id < department.id)
        return int((await self.s.execute(stmt)).scalar_one())

    async def add(self, ticket: Ticket) -> Ticket:
        """Insert; raises :class:`DuplicateActive` when the person already holds an active ticket for the matter."""
        self.s.add(ticket)
        try:
            await self.s.flush()
        except IntegrityError as exc:
            if _is_violation(exc, "uq_tickets_active_person", "tickets.matter_id, tickets.id_hash"):
                raise DuplicateActive from None
            raise
        return ticket

    async def get(self, ticket_id: int, *, for_update: bool = False) -> Ticket | None:
        if for_update:
            stmt = select(Ticket).where(Ticket.id == ticket_id).with_for_update()
            return (await self.s.execute(stmt)).scalar_one_or_none()
        return await self.s.get(Ticket, ticket_id)

    async def in_hand(self, ticket_id: int, *, for_update: bool) -> TicketInHand | None:
        """The ticket with its paths and its window's tidal flag; ``for_update`` locks the ticket and its case."""
        row = (await self.s.execute(_in_hand_stmt(for_update), {"ticket_id": ticket_id})).one_or_none()
        if row is None:
            return None
        values: tuple[Any, ...] = tuple(row)
        return TicketInHand(
            values[0], str(values[1]), str(values[2]), values[4] if for_update else None, bool(values[3])
        )

    async def active_for_person(self, matter_id: int, id_hash: str) -> Ticket | None:
        stmt = select(Ticket).where(
            Ticket.matter_id == matter_id, Ticket.id_hash == id_hash, Ticket.state.in_(ACTIVE_TICKET_STATES)
        )
        return (await self.s.execute(stmt)).scalars().first()

    async def active_for_case(self, case_id: int, *, for_update: bool = False) -> Ticket | None:
        """The case's ticket that holds a place (waiting, called or serving), if any (at most one by design)."""
        stmt = (
            select(Ticket)
            .where(Ticket.case_id == case_id, Ticket.state.in_(ACTIVE_TICKET_STATES))
            .order_by(Ticket.id.desc())
        )
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.s.execute(stmt)).scalars().first()

    async def current_at_window(self, window_id: int) -> Ticket | None:
        stmt = select(Ticket).where(Ticket.window_id == window_id, Ticket.state.in_(("called", "serving")))
        return (await self.s.execute(stmt)).scalars().first()

    async def current_at_windows(self, window_ids: Sequence[int]) -> dict[int, Ticket]:
        if not window_ids:
            return {}
        stmt = select(Ticket).where(Ticket.window_id.in_(window_ids), Ticket.state.in_(("called", "serving")))
        return {t.window_id: t for t in (await self.s.execute(stmt)).scalars().all() if t.window_id is not None}

    @staticmethod
    def _line(department_id: int, matter_ids: Sequence[int] | None) -> Select[Ticket]:
        stmt = select(Ticket).where(Ticket.department_id == department_id, Ticket.state == "waiting")
        if matter_ids:
            stmt = stmt.where(Ticket.matter_id.in_(matter_ids))
        return stmt.order_by(Ticket.priority, Ticket.order_key, Ticket.id)

    async def head(self, department_id: int, matter_ids: Sequence[int] | None) -> Ticket | None:
        """The first waiting ticket, locked; rows other transactions hold are skipped (PostgreSQL)."""
        stmt = self._line(department_id, matter_ids).limit(1).with_for_update(skip_locked=True)
        return (await self.s.execute(stmt)).scalar_one_or_none()

    async def head_for_window(self, department_id: int, window_id: int) -> tuple[int, str, int] | None:
        """``(ticket id, case state, case department)`` of the first waiting ticket ``window_id`` may call, locked.

        One statement for call-next: the window's served matters (none: all)
        are a subquery, and the ticket's case comes along so the caller can
        tell a ticket whose case was closed or moved meanwhile.  Only the
        ticket row is locked; rows other transactions hold are skipped
        (PostgreSQL), so concurrent clerks take different tickets.
        """
        params = {"department_id": department_id, "window_id": window_id}
        row = (await self.s.execute(_head_for_window_stmt(), params)).one_or_none()
        return (int(row[0]), str(row[1]), int(row[2])) if row is not None else None

    async def mark_called(
        self, ticket_id: int, *, window_id: int, clerk_user_id: int, now: datetime, ring_deadline: datetime
    ) -> Ticket:
        """Move a waiting ticket the caller has locked to ``called``: one ``UPDATE ... RETURNING``."""
        params = {
            "ticket_id": ticket_id,
            "p_window_id": window_id,
            "p_clerk_user_id": clerk_user_id,
            "p_called_at": now,
            "p_ring_deadline": ring_deadline,
        }
        ticket: Ticket = (await self.s.execute(_mark_called_stmt(), params)).scalar_one()
        return ticket

    async def waiting(self, department_id: int, matter_ids: Sequence[int] | None = None) -> Sequence[Ticket]:
        """The department's waiting line in call order."""
        return (await self.s.execute(self._line(department_id, matter_ids))).scalars().all()

    async def line(self, department_id: int, matter_ids: Sequence[int] | None = None) -> list[LineTicket]:
        """The department's waiting line in call order, as :class:`LineTicket` rows."""
        stmt = select(Ticket.id, Ticket.number, Ticket.unit_id, Ticket.priority, Ticket.waiting_since).where(
            Ticket.department_id == department_id, Ticket.state == "waiting"
        )
        if matter_ids:
            stmt = stmt.where(Ticket.matter_id.in_(matter_ids))
        stmt = stmt.order_by(Ticket.priority, Ticket.order_key, Ticket.id)
        return [LineTicket(*row) for row in (await self.s.execute(stmt)).all()]

    async def waiting_stats(self) -> dict[int, WaitingStats]:
        stmt = (
            select(Ticket.department_id, func.count(), func.min(Ticket.waiting_since))
            .where(Ticket.state == "waiting")
            .group_by(Ticket.department_id)
        )
        return {d: WaitingStats(int(n), oldest) for d, n, oldest in (await self.s.execute(stmt)).all()}

    async def waiting_stats_for(self, department_id: int, matter_ids: Sequence[int] | None) -> WaitingStats:
        stmt = select(func.count(), func.min(Ticket.waiting_since)).where(
            Ticket.department_id == department_id, Ticket.state == "waiting"
        )
        if matter_ids:
            stmt = stmt.where(Ticket.matter_id.in_(matter_ids))
        n, oldest = (await self.s.execute(stmt)).one()
        return WaitingStats(int(n), oldest)

    async def recent_service_times(self, department_id: int, limit: int) -> list[float]:
        """Seconds from call to finish of the department's last ``limit`` done tickets."""
        stmt = (
            select(Ticket.called_at, Ticket.finished_at)
            .where(Ticket.department_id == department_id, Ticket.state == "done")
            .order_by(Ticket.finished_at.desc())
            .limit(limit)
        )
        return [
            (finished - called).total_seconds()
            for called, finished in (await self.s.execute(stmt)).all()
            if called is not None and finished is not None
        ]

    async def ring_due(self, now: datetime, limit: int) -> Sequence[Ticket]:
        stmt = (
            select(Ticket)
            .where(Ticket.state == "called", Ticket.ring_deadline <= now)
            .order_by(Ticket.ring_deadline, Ticket.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.s.execute(stmt)).scalars().all()

    async def waiting_for_closed_cases(self, open_states: Sequence[str], limit: int) -> Sequence[Ticket]:
        stmt = (
            select(Ticket)
            .join(Case, Ticket.case_id == Case.id)
            .where(Ticket.state == "waiting", Case.state.not_in(open_states))
            .order_by(Ticket.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=Ticket)
        )
        return (await self.s.execute(stmt)).scalars().all()

    async def alert_due(self, now: datetime, limit: int) -> Sequence[Ticket]:
        stmt = (
            select(Ticket)
            .where(Ticket.state == "waiting", Ticket.alert_at <= now, Ticket.alerted.is_(False))
            .order_by(Ticket.alert_at, Ticket.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.s.execute(stmt)).scalars().all()

    async def mark_alerted(self, ticket_ids: Sequence[int]) -> None:
        if ticket_ids:
            await self.s.execute(update(Ticket).where(Ticket.id.in_(ticket_ids)).values(alerted=True))

    async def waiting_unalerted(self, department_id: int) -> Sequence[Ticket]:
        stmt = select(Ticket).where(
            Ticket.department_id == department_id, Ticket.state == "waiting", Ticket.alerted.is_(False)
        )
        return (await self.s.execute(stmt)).scalars().all()

    async def search(
        self,
        *,
        unit_id: int | None = None,
        department_id: int | None = None,
        department_ids: Sequence[int] | None = None,
        subtree_path: str | None = None,
        states: Sequence[str] | None = None,
        case_id: int | None = None,
        limit: int,
        offset: int,
    ) -> tuple[Sequence[Ticket], int]:
        stmt = select(Ticket)
        if unit_id is not None:
            stmt = stmt.where(Ticket.unit_id == unit_id)
        if department_id is not None:
            stmt = stmt.where(Ticket.department_id == department_id)
        if department_ids is not None:
            stmt = stmt.where(Ticket.department_id.in_(department_ids))
        if subtree_path is not None:
            in_subtree = select(OrgUnit.id).where(OrgUnit.path.startswith(subtree_path))
            routed_here = select(Department.id).where(Department.unit_id.in_(in_subtree))
            stmt = stmt.where(or_(Ticket.unit_id.in_(in_subtree), Ticket.department_id.in_(routed_here)))
        if states:
            stmt = stmt.where(Ticket.state.in_(states))
        if case_id is not None:
            stmt = stmt.where(Ticket.case_id == case_id)
        total = (await self.s.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
        rows = (await self.s.execute(stmt.order_by(Ticket.id.desc()).limit(limit).offset(offset))).scalars().all()
        return rows, int(total)


class QueuePolicyRepository:
    """Per-department and per-window thresholds, current colours, colour changes and alerts."""

    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def try_scanner_lock(self) -> bool:
        """True if this transaction may scan now (PostgreSQL: nobody else holds the advisory lock)."""
        if self.s.get_bind().dialect.name != "postgresql":
            return True
        got = await self.s.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": SCANNER_LOCK_KEY})
        return bool(got.scalar_one())

    async def policies(self) -> Sequence[QueuePolicy]:
        return (await self.s.execute(select(QueuePolicy).order_by(QueuePolicy.id))).scalars().all()

    async def policy(self, scope: str) -> QueuePolicy | None:
        return (await self.s.execute(select(QueuePolicy).where(QueuePolicy.scope == scope))).scalar_one_or_none()

    async def add_policy(self, row: QueuePolicy) -> QueuePolicy:
        self.s.add(row)
        await self.s.flush()
        return row

    async def statuses(self) -> dict[str, QueueStatus]:
        return {r.scope: r for r in (await self.s.execute(select(QueueStatus))).scalars().all()}

    async def status(self, scope: str) -> QueueStatus | None:
        return await self.s.get(QueueStatus, scope)

    async def set_status(self, row: QueueStatus) -> None:
        self.s.add(row)
        await self.s.flush()

    async def add_change(self, row: QueueStatusChange) -> None:
        self.s.add(row)
        await self.s.flush()

    async def changes(
        self, department_ids: Sequence[int] | None, since: datetime, until: datetime
    ) -> Sequence[QueueStatusChange]:
        stmt = select(QueueStatusChange).where(QueueStatusChange.at >= since, QueueStatusChange.at < until)
        if department_ids is not None:
            stmt = stmt.where(QueueStatusChange.department_id.in_(department_ids))
        return (await self.s.execute(stmt.order_by(QueueStatusChange.at, QueueStatusChange.id))).scalars().all()

    # -- alerts ---------------------------------------------------------

    async def add_alert(self, row: Alert) -> Alert:
        self.s.add(row)
        await self.s.flush()
        return row

    async def add_ticket_alerts(self, rows: Sequence[dict[str, Any]]) -> list[int]:
        """Insert per-ticket alerts, skipping any (ticket, kind) that already has one; the ids inserted."""
        if not rows:
            return []
        stmt = (
            _insert(self.s, Alert)
            .values(list(rows))
            .on_conflict_do_nothing(index_elements=[Alert.ticket_id, Alert.kind])
            .returning(Alert.id)
        )
        return [int(i) for i in (await self.s.execute(stmt)).scalars().all()]

    async def alerts_by_id(self, ids: Sequence[int]) -> Sequence[Alert]:
        if not ids:
            return []
        return (await self.s.execute(select(Alert).where(Alert.id.in_(ids)).order_by(Alert.id))).scalars().all()

    async def alert(self, alert_id: int, *, for_update: bool = False) -> Alert | None:
        if for_update:
            stmt = select(Alert).where(Alert.id == alert_id).with_for_update()
            return (await self.s.execute(stmt)).scalar_one_or_none()
        return await self.s.get(Alert, alert_id)

    async def alerts(
        self,
        *,
        department_ids: Sequence[int] | None,
        open_only: bool,
        kind: str | None,
        limit: int,
        offset: int,
    ) -> tuple[Sequence[Alert], int]:
        stmt = select(Alert)
        if department_ids is not None:
            stmt = stmt.where(Alert.department_id.in_(department_ids))
        if open_only:
            stmt = stmt.where(Alert.acknowledged_at.is_(None))
        if kind:
            stmt = stmt.where(Alert.kind == kind)
        total = (await self.s.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
        rows = (await self.s.execute(stmt.order_by(Alert.id.desc()).limit(limit).offset(offset))).scalars().all()
        return rows, int(total)

    async def alerts_between(
        self, department_ids: Sequence[int] | None, since: datetime, until: datetime
    ) -> Sequence[Alert]:
        conds: list[ColumnElement[bool]] = [Alert.created_at >= since, Alert.created_at < until]
        if department_ids is not None:
            conds.append(Alert.department_id.in_(department_ids))
        return (await self.s.execute(select(Alert).where(and_(*conds)).order_by(Alert.id))).scalars().all()

    # -- organisation lookups the queue needs ----------------------------

    async def unit_path(self, unit_id: int) -> str:
        return str((await self.s.execute(select(OrgUnit.path).where(OrgUnit.id == unit_id))).scalar_one())

    async def department_paths(self) -> dict[int, str]:
        """Every department's centre path (``/1/4/``), for subtree checks without a query per row."""
        stmt = select(Department.id, OrgUnit.path).join(OrgUnit, Department.unit_id == OrgUnit.id)
        return {d: p for d, p in (await self.s.execute(stmt)).all()}

    async def supervisor_ids(self, unit_ids: Sequence[int]) -> list[int]:
        """Active supervisors whose unit is one of ``unit_ids`` (a department's centre and the centres above)."""
        stmt = (
            select(User.id)
            .where(User.role == "supervisor", User.active.is_(True), User.unit_id.in_(unit_ids))
            .order_by(User.id)
        )
        return [int(i) for i in (await self.s.execute(stmt)).scalars().all()]


class AppointmentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add_slot(self, slot: AppointmentSlot) -> AppointmentSlot:
        self.s.add(slot)
        await self.s.flush()
        return slot

    async def slot(self, slot_id: int) -> AppointmentSlot | None:
        return await self.s.get(AppointmentSlot, slot_id)

    async def slots(self, department_id: int, since: datetime, until: datetime) -> Sequence[AppointmentSlot]:
        stmt = (
            select(AppointmentSlot)
            .where(
                AppointmentSlot.department_id == department_id,
                AppointmentSlot.starts_at >= since,
                AppointmentSlot.starts_at <= until,
            )
            .order_by(AppointmentSlot.starts_at, AppointmentSlot.id)
        )
        return (await self.s.execute(stmt)).scalars().all()

    async def take_place(self, slot_id: int) -> bool:
        """Count one more booking if the slot has room: a guarded single-row UPDATE, atomic on both engines."""
        stmt = (
            update(AppointmentSlot)
            .where(AppointmentSlot.id == slot_id, AppointmentSlot.booked < AppointmentSlot.capacity)
            .values(booked=AppointmentSlot.booked + 1)
            .returning(AppointmentSlot.booked)
        )
        return (await self.s.execute(stmt)).scalar_one_or_none() is not None

    async def release_place(self, slot_id: int) -> None:
        stmt = (
            update(AppointmentSlot)
            .where(AppointmentSlot.id == slot_id, AppointmentSlot.booked > 0)
            .values(booked=AppointmentSlot.booked - 1)
        )
        await self.s.execute(stmt)

    async def add(self, row: Appointment) -> Appointment:
        """Insert; raises :class:`DuplicateActive` when the person already has a booking for the matter."""
        self.s.add(row)
        try:
            await self.s.flush()
        except IntegrityError as exc:
            if _is_violation(exc, "uq_appointments_booked_person", "appointments.matter_id, appointments.id_hash"):
                raise DuplicateActive from None
            raise
        return row

    async def get(self, appointment_id: int, *, for_update: bool = False) -> Appointment | None:
        if for_update:
            stmt = select(Appointment).where(Appointment.id == appointment_id).with_for_update()
            return (await self.s.execute(stmt)).scalar_one_or_none()
        return await self.s.get(Appointment, appointment_id)

    async def booked_for_person(self, matter_id: int, id_hash: str) -> Appointment | None:
        stmt = select(Appointment).where(
            Appointment.matter_id == matter_id, Appointment.id_hash == id_hash, Appointment.state == "booked"
        )
        return (await self.s.execute(stmt)).scalars().first()

    async def search(
        self,
        *,
        unit_id: int | None = None,
        department_id: int | None = None,
        subtree_path: str | None = None,
        state: str | None = None,
        case_id: int | None = None,
        limit: int,
        offset: int,
    ) -> tuple[Sequence[Appointment], int]:
        stmt = select(Appointment)
        if unit_id is not None:
            stmt = stmt.where(Appointment.unit_id == unit_id)
        if department_id is not None:
            stmt = stmt.where(Appointment.department_id == department_id)
        if subtree_path is not None:
            in_subtree = select(OrgUnit.id).where(OrgUnit.path.startswith(subtree_path))
            routed_here = select(Department.id).where(Department.unit_id.in_(in_subtree))
            stmt = stmt.where(or_(Appointment.unit_id.in_(in_subtree), Appointment.department_id.in_(routed_here)))
        if state:
            stmt = stmt.where(Appointment.state == state)
        if case_id is not None:
            stmt = stmt.where(Appointment.case_id == case_id)
        total = (await self.s.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one()
        rows = (await self.s.execute(stmt.order_by(Appointment.id.desc()).limit(limit).offset(offset))).scalars().all()
        return rows, int(total)

    async def no_show_due(self, ended_before: datetime, limit: int) -> Sequence[Appointment]:
        """Bookings still ``booked`` whose slot ended before ``ended_before``, locked."""
        stmt = (
            select(Appointment)
            .join(AppointmentSlot, Appointment.slot_id == AppointmentSlot.id)
            .where(Appointment.state == "booked", AppointmentSlot.ends_at <= ended_before)
            .order_by(Appointment.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=Appointment)
        )
        return (await self.s.execute(stmt)).scalars().all()

    async def ban(self, id_hash: str) -> BookingBan | None:
        return await self.s.get(BookingBan, id_hash)

    async def extend_ban(self, id_hash: str, until: datetime, reason: str, appointment_id: int, now: datetime) -> None:
        """Bar ``id_hash`` until ``until`` (or keep a longer ban already there)."""
        row = await self.s.get(BookingBan, id_hash, with_for_update=True)
        if row is None:
            self.s.add(
                BookingBan(id_hash=id_hash, until=until, reason=reason, appointment_id=appointment_id, created_at=now)
            )
        elif row.until < until:
            row.until, row.reason, row.appointment_id, row.created_at = until, reason, appointment_id, now
        await self.s.flush()
