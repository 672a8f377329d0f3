"""The remote queue (取号/叫号): cloud windows, tickets, calls into a case's session, warnings, the scanner.

A ticket is taken for a case at a service point and waits in the queue of the
case's department; a clerk signed in to an open window of that department
calls the next one (checked-in appointments first, by slot time, then
walk-ins in order of arrival), which opens the case's media session and rings
the point.  States: ``waiting → called → serving → done``, or ``no_show``
(skipped, or rings unanswered too often), ``transferred`` (a new ticket in
another department keeps the original waiting time) and ``cancelled``.

Time is durable: every deadline (ring timeouts, the wait-timeout alert, a
tidal window's closing time, appointment no-shows) is a column, and one
scanner (:meth:`QueueService.tick`) does all due work in one transaction.
Nothing is kept in memory timers, so a restart loses nothing; unique
constraints make each wait-timeout alert exactly-once however many scanners
or restarts there are.  Real-time notices are collected in an
:class:`Outbox` during the transaction and sent after it commits
(:meth:`QueueService.publish`), so nobody is told about a change that was
rolled back.  The stored alert list is the record; the push is a courtesy
(a crash between commit and send loses that one push, never the alert).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import Clock, UtcInstant
from server.errors import ApiError, Conflict, Forbidden, NotFound, ValidationFailed
from server.services import audit, callflow
from server.services.appointments import (
    QUEUEABLE_CASE_STATES,
    STAFF_ROLES,
    AppointmentService,
)
from server.services.callflow import TicketEffect
from server.services.cases import OPEN_STATES, CaseService, CaseView, Transition
from server.services.policy import Action, CaseScope, may
from server.services.principal import Principal, Role
from server.services.sessions import SessionService
from server.settings import QueueSettings
from server.storage.cases import CaseRepository, transaction_memo
from server.storage.database import Database
from server.storage.matters import MatterRepository
from server.storage.models import (
    Alert,
    Case,
    Department,
    QueuePolicy,
    QueueStatus,
    QueueStatusChange,
    Ticket,
    Window,
)
from server.storage.orgs import OrgRepository
from server.storage.queue import (
    DuplicateActive,
    LineTicket,
    QueuePolicyRepository,
    TicketRepository,
    WaitingStats,
    WindowRepository,
)
from server.storage.sessions import SessionRepository
from server.storage.users import UserRepository

log = logging.getLogger("server.queue")

COLOURS = ("green", "yellow", "red")
_RANK = {c: i for i, c in enumerate(COLOURS)}


class Notifier(Protocol):
    """Where real-time notices go (``signalling.server.SignallingServer`` satisfies it)."""

    async def notify(self, room: str, event: str, data: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Notice:
    room: str
    event: str
    data: dict[str, Any]


@dataclass
class Outbox:
    """Notices collected inside a unit of work, sent by :meth:`QueueService.publish` after it commits."""

    notices: list[Notice] = field(default_factory=list)
    #: Departments whose boards changed: ``queue.changed`` and ``queue.position`` are computed at publish time.
    departments: set[int] = field(default_factory=set)
    #: What the scanner did (counts per kind), for logs and tests.
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, room: str, event: str, data: dict[str, Any]) -> None:
        self.notices.append(Notice(room, event, data))

    def changed(self, department_id: int) -> None:
        self.departments.add(department_id)

    def count(self, kind: str, n: int = 1) -> None:
        if n:
            self.counts[kind] = self.counts.get(kind, 0) + n


@dataclass(frozen=True)
class Thresholds:
    wait_limit: int
    ring_timeout: int
    yellow_length: int
    red_length: int
    yellow_wait: int
    red_wait: int


THRESHOLD_FIELDS = ("yellow_length", "red_length", "yellow_wait", "red_wait")
DEPARTMENT_FIELDS = ("wait_limit", "ring_timeout", *THRESHOLD_FIELDS)


def colour(waiting: int, longest_wait: int, t: Thresholds) -> str:
    """Green, yellow or red for a queue of ``waiting`` tickets whose oldest waited ``longest_wait`` seconds."""

    def reached(value: int, limit: int) -> bool:
        return limit > 0 and value >= limit

    if reached(waiting, t.red_length) or reached(longest_wait, t.red_wait):
        return "red"
    if reached(waiting, t.yellow_length) or reached(longest_wait, t.yellow_wait):
        return "yellow"
    return "green"


def ticket_letters(rank: int) -> str:
    """A, B, ... Z, AA, AB, ... for the 0-based ``rank`` of a department in its centre."""
    letters = ""
    rank += 1
    while rank:
        rank, rest = divmod(rank - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


class PolicyBook:
    """The policies in force: window row → department row → configuration, field by field."""

    def __init__(self, settings: QueueSettings, rows: Sequence[QueuePolicy]) -> None:
        self.settings = settings
        self.rows = {r.scope: r for r in rows}

    def thresholds(self, department_id: int, window_id: int | None = None) -> Thresholds:
        values: dict[str, int] = {f: int(getattr(self.settings, f)) for f in DEPARTMENT_FIELDS}
        scopes = [f"department:{department_id}"] + ([f"window:{window_id}"] if window_id is not None else [])
        for scope in scopes:
            row = self.rows.get(scope)
            if row is not None:
                for f in DEPARTMENT_FIELDS:
                    value = getattr(row, f)
                    if value is not None:
                        values[f] = int(value)
        return Thresholds(**values)

    def window_scopes(self) -> list[QueuePolicy]:
        """Window rows that set a threshold of their own (their windows get a colour of their own)."""
        return [
            r
            for r in self.rows.values()
            if r.window_id is not None and any(getattr(r, f) is not None for f in THRESHOLD_FIELDS)
        ]


class TicketAct(StrEnum):
    READ = "read"
    #: The service point's part: answer the ring, cancel.
    POINT = "point"
    #: The clerk's part: recall, skip, complete, transfer.
    CLERK = "clerk"


@dataclass
class TicketCall:
    ticket: Ticket
    session_id: int
    window: Window


@dataclass
class RingInfo:
    """What a point needs to answer a ringing ticket."""

    session_id: int | None
    window: Window
    department: Department


@dataclass
class BoardEntry:
    ticket: LineTicket
    position: int
    estimated_wait: int


@dataclass
class WindowState:
    window: Window
    current: Ticket | None
    #: Matters the window serves (empty: all of its department's).
    matter_codes: list[str]


@dataclass
class Board:
    department_id: int
    window_id: int | None
    colour: str
    waiting: int
    longest_wait: int
    mean_service_time: float
    open_windows: int
    entries: list[BoardEntry]
    windows: list[WindowState]
    thresholds: Thresholds


@dataclass
class TicketPosition:
    ticket: Ticket
    position: int | None
    estimated_wait: int | None


# -- request bodies ---------------------------------------------------------------------------------------------------


class TidalOpen(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The window closes itself at this time, after finishing its current ticket.
    until: UtcInstant
    #: Matters it serves; omitted: keep the window's (empty: all of the department's).
    matter_codes: list[str] | None = Field(default=None, max_length=500)


class WindowMatters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Matters the window serves; empty: all of its department's matters.
    matter_codes: list[str] = Field(max_length=500)


class TransferBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    department_id: int = Field(ge=1, le=2**31 - 1)
    reason: str | None = Field(default=None, max_length=500)


class AbsentBody(BaseModel):
    """The applicant never came into the call: back to the line, or a no-show with a reason."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["requeue", "no_show"]
    reason: str | None = Field(default=None, min_length=1, max_length=500)


class PolicyUpdate(BaseModel):
    """Fields sent override; ``null`` returns a field to the inherited value; omitted fields are kept."""

    model_config = ConfigDict(extra="forbid")

    wait_limit: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    ring_timeout: int | None = Field(default=None, ge=1, le=3600)
    yellow_length: int | None = Field(default=None, ge=0, le=1_000_000)
    red_length: int | None = Field(default=None, ge=0, le=1_000_000)
    yellow_wait: int | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    red_wait: int | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    ticket_prefix: str | None = Field(default=None, pattern=r"^[A-Z]{1,3}$")


ReportBucket = Literal["day", "month", "all"]


@dataclass
class ReportRow:
    department_id: int
    period: str
    yellow: int = 0
    red: int = 0
    wait_timeouts: int = 0


# -- event payloads ---------------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def ticket_event(t: Ticket) -> dict[str, Any]:
    return {
        "id": t.id,
        "number": t.number,
        "state": t.state,
        "department_id": t.department_id,
        "case_id": t.case_id,
        "unit_id": t.unit_id,
        "window_id": t.window_id,
        "priority": t.priority,
        "waiting_since": _iso(t.waiting_since),
        "called_at": _iso(t.called_at),
        "ring_deadline": _iso(t.ring_deadline),
    }


def window_event(w: Window) -> dict[str, Any]:
    return {
        "id": w.id,
        "code": w.code,
        "name_zh": w.name_zh,
        "name_en": w.name_en,
        "department_id": w.department_id,
        "state": w.state,
        "clerk_user_id": w.clerk_user_id,
        "tidal": w.tidal,
        "closes_at": _iso(w.closes_at),
    }


def department_event(d: Department) -> dict[str, Any]:
    return {"id": d.id, "code": d.code, "name_zh": d.name_zh, "name_en": d.name_en}


def ring_event(t: Ticket, session_id: int, window: Window, department: Department) -> dict[str, Any]:
    return {
        "ticket": ticket_event(t),
        "session_id": session_id,
        "window": window_event(window),
        "department": department_event(department),
    }


def alert_event(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id,
        "department_id": a.department_id,
        "window_id": a.window_id,
        "ticket_id": a.ticket_id,
        "kind": a.kind,
        "level": a.level,
        "details": a.details,
        "created_at": _iso(a.created_at),
    }


def board_event(b: Board, limit: int | None = None) -> dict[str, Any]:
    entries = b.entries if limit is None else b.entries[:limit]
    return {
        "department_id": b.department_id,
        "window_id": b.window_id,
        "colour": b.colour,
        "waiting": b.waiting,
        "longest_wait": b.longest_wait,
        "open_windows": b.open_windows,
        "tickets": [
            {"id": e.ticket.id, "number": e.ticket.number, "position": e.position, "estimated_wait": e.estimated_wait}
            for e in entries
        ],
        "windows": [{**window_event(w.window), "current": w.current.number if w.current else None} for w in b.windows],
    }


class QueueService:
    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        cases: CaseService,
        sessions: SessionService,
        appointments: AppointmentService,
        notifier: Notifier,
        settings: QueueSettings,
    ) -> None:
        self.db = db
        self.clock = clock
        self.cases = cases
        self.sessions = sessions
        self.appointments = appointments
        self.notifier = notifier
        self.settings = settings
        self.zone = ZoneInfo(settings.timezone)
        #: Departments whose boards are due to be sent, and the task that sends them.
        self._dirty: set[int] = set()
        self._boards: asyncio.Task[None] | None = None

    # -- authorisation helpers --------------------------------------------------------------------------------------

    async def _department(self, s: AsyncSession, department_id: int) -> Department:
        department = await OrgRepository(s).department(department_id)
        if department is None:
            raise NotFound("no such department", code="department_not_found")
        return department

    async def _window(self, s: AsyncSession, window_id: int, *, for_update: bool = True) -> Window:
        window = await WindowRepository(s).get(window_id, for_update=for_update)
        if window is None:
            raise NotFound("no such window", code="window_not_found")
        return window

    async def _manages(self, s: AsyncSession, principal: Principal, department_id: int) -> bool:
        """Admins, and supervisors of the centre subtree the department sits in."""
        if principal.role is Role.ADMIN:
            return True
        if principal.role is not Role.SUPERVISOR:
            return False
        path = await CaseRepository(s).department_unit_path(department_id)
        return path.startswith(principal.unit_path)

    async def _require_manager(self, s: AsyncSession, principal: Principal, department_id: int) -> None:
        if not await self._manages(s, principal, department_id):
            raise Forbidden("only the centre's supervisors and admins manage this", code="forbidden")

    async def supervised_departments(self, s: AsyncSession, principal: Principal) -> list[int] | None:
        """Departments whose alerts and reports ``principal`` sees; ``None`` means all (admin)."""
        if principal.role is Role.ADMIN:
            return None
        if principal.role is not Role.SUPERVISOR:
            raise Forbidden("alerts and reports are for supervisors and admins", code="forbidden")
        paths = await QueuePolicyRepository(s).department_paths()
        return sorted(d for d, path in paths.items() if path.startswith(principal.unit_path))

    @staticmethod
    def _may_watch(principal: Principal) -> None:
        """Queue boards are for the network's own staff (not invite guests, experts or inspectors)."""
        if principal.invite_case_id is not None or principal.role not in STAFF_ROLES:
            raise Forbidden("queue boards are for staff", code="forbidden")

    async def _may_read(self, s: AsyncSession, principal: Principal, t: Ticket) -> bool:
        scope = CaseScope(
            t.case_id,
            t.unit_id,
            await QueuePolicyRepository(s).unit_path(t.unit_id),
            t.department_id,
            await CaseRepository(s).department_unit_path(t.department_id),
        )
        return may(principal, Action.READ, scope)

    async def _ticket(
        self, s: AsyncSession, principal: Principal, ticket_id: int, act: TicketAct, *, for_update: bool = True
    ) -> Ticket:
        """The ticket if ``principal`` may do ``act`` on it: one it may not see is 404, like cases.

        One statement: the ticket with the paths the check needs and its
        window's tidal flag; ``for_update`` locks the ticket and its case (every
        action on a ticket is audited on the case, which takes that lock).
        """
        found = await TicketRepository(s).in_hand(ticket_id, for_update=for_update)
        if found is None:
            raise NotFound("no such ticket", code="ticket_not_found")
        t, cases = found.ticket, CaseRepository(s)
        cases.remember_department_path(t.department_id, found.department_path)
        if found.case is not None:
            cases.remember_locked(found.case)
        if t.window_id is not None and not found.window_tidal:
            transaction_memo(s).setdefault("untidal_windows", set()).add(t.window_id)
        scope = CaseScope(t.case_id, t.unit_id, found.unit_path, t.department_id, found.department_path)
        if not may(principal, Action.READ, scope):
            raise NotFound("no such ticket", code="ticket_not_found")
        if act is TicketAct.POINT:
            if not (
                principal.role is Role.ADMIN
                or (principal.role is Role.COMMUNITY_STAFF and principal.unit_id == t.unit_id)
            ):
                raise Forbidden("only the ticket's service point does this", code="forbidden")
        elif act is TicketAct.CLERK:
            if principal.role is Role.ADMIN:
                return t
            if principal.role is not Role.CLERK or principal.department_id != t.department_id:
                raise Forbidden("only a clerk of the ticket's department does this", code="forbidden")
            if t.state in ("called", "serving") and t.clerk_user_id != principal.user_id:
                raise Forbidden("another clerk is serving this ticket", code="not_your_ticket")
        return t

    @staticmethod
    def _require_state(t: Ticket, *states: str) -> None:
        if t.state not in states:
            raise Conflict(
                f"not possible on a {t.state} ticket",
                code="illegal_ticket_state",
                details={"state": t.state, "allowed_from": list(states)},
            )

    async def _book(self, s: AsyncSession) -> PolicyBook:
        return PolicyBook(self.settings, await QueuePolicyRepository(s).policies())

    async def _thresholds(self, s: AsyncSession, department_id: int, window_id: int | None = None) -> Thresholds:
        repo = QueuePolicyRepository(s)
        rows = [r for r in [await repo.policy(f"department:{department_id}")] if r is not None]
        if window_id is not None:
            rows += [r for r in [await repo.policy(f"window:{window_id}")] if r is not None]
        return PolicyBook(self.settings, rows).thresholds(department_id, window_id)

    # -- tickets ----------------------------------------------------------------------------------------------------

    async def _number(self, s: AsyncSession, department_id: int, now: datetime) -> str:
        day = now.astimezone(self.zone).date().isoformat()
        repo = TicketRepository(s)
        n = await repo.next_number(department_id, day)
        policy = await QueuePolicyRepository(s).policy(f"department:{department_id}")
        if policy is not None and policy.ticket_prefix:
            prefix = policy.ticket_prefix
        else:
            prefix = ticket_letters(await repo.department_rank(await self._department(s, department_id)))
        return f"{prefix}{n:03d}"

    async def _issue(
        self,
        s: AsyncSession,
        principal: Principal,
        case: Case,
        *,
        department_id: int,
        priority: int,
        order_key: datetime,
        waiting_since: datetime,
        appointment_id: int | None = None,
        transferred_from_id: int | None = None,
    ) -> Ticket:
        repo = TicketRepository(s)
        refusal = Conflict("this person already holds an active ticket for the matter", code="ticket_already_active")
        existing = await repo.active_for_person(case.matter_id, case.applicant_id_hash)
        if existing is not None:
            refusal.details = {"number": existing.number, "state": existing.state}
            raise refusal
        now = self.clock.now()
        limits = await self._thresholds(s, department_id)
        ticket = Ticket(
            number=await self._number(s, department_id, now),
            department_id=department_id,
            case_id=case.id,
            matter_id=case.matter_id,
            unit_id=case.unit_id,
            id_hash=case.applicant_id_hash,
            state="waiting",
            priority=priority,
            order_key=order_key,
            waiting_since=waiting_since,
            created_at=now,
            created_by=principal.user_id,
            window_id=None,
            clerk_user_id=None,
            called_at=None,
            ring_deadline=None,
            served_at=None,
            finished_at=None,
            unanswered=0,
            alert_at=waiting_since + timedelta(seconds=limits.wait_limit),
            alerted=False,
            appointment_id=appointment_id,
            transferred_from_id=transferred_from_id,
            end_reason=None,
        )
        try:
            return await repo.add(ticket)
        except DuplicateActive:
            raise refusal from None

    async def _queueable_case(self, s: AsyncSession, principal: Principal, case_id: int) -> Case:
        view = await self.cases.load(s, principal, case_id, Action.WRITE, for_update=True)
        if principal.role not in (Role.COMMUNITY_STAFF, Role.ADMIN):
            raise Forbidden("only service-point staff take tickets", code="forbidden")
        if view.case.state not in QUEUEABLE_CASE_STATES:
            raise Conflict(
                "only a draft or submitted case can be booked or queued",
                code="case_not_queueable",
                details={"state": view.case.state},
            )
        return view.case

    async def take(self, s: AsyncSession, principal: Principal, case_id: int, out: Outbox) -> Ticket:
        """A walk-in ticket for the case, in the queue of the department the case is routed to."""
        case = await self._queueable_case(s, principal, case_id)
        now = self.clock.now()
        t = await self._issue(
            s, principal, case, department_id=case.department_id, priority=1, order_key=now, waiting_since=now
        )
        await audit.append(
            s,
            self.clock,
            case.id,
            principal,
            "ticket.taken",
            {"ticket_id": t.id, "number": t.number, "department_id": t.department_id},
        )
        out.changed(t.department_id)
        return t

    async def check_in(self, s: AsyncSession, principal: Principal, appointment_id: int, out: Outbox) -> Ticket:
        """Turn a booking into a priority ticket, ordered by its slot's start."""
        view = await self.appointments.for_check_in(s, principal, appointment_id)
        case = await self._queueable_case(s, principal, view.appointment.case_id)
        t = await self._issue(
            s,
            principal,
            case,
            department_id=case.department_id,
            priority=0,
            order_key=view.slot.starts_at,
            waiting_since=self.clock.now(),
            appointment_id=view.appointment.id,
        )
        await self.appointments.mark_checked_in(s, principal, view.appointment, t.id)
        await audit.append(
            s,
            self.clock,
            case.id,
            principal,
            "ticket.taken",
            {"ticket_id": t.id, "number": t.number, "department_id": t.department_id, "appointment_id": appointment_id},
        )
        out.changed(t.department_id)
        return t

    async def call_next(self, s: AsyncSession, principal: Principal, window_id: int, out: Outbox) -> TicketCall | None:
        """Call the head of the window's line into the case's session and ring the point; None if nobody waits."""
        locked = await WindowRepository(s).lock_for_call(window_id)
        if locked is None:
            raise NotFound("no such window", code="window_not_found")
        window, current_id, policy, department = locked
        if window.state == "closed":
            raise Conflict("the window is closed", code="window_not_open", details={"state": window.state})
        if principal.user_id is None or window.clerk_user_id != principal.user_id:
            raise Conflict("sign in to this window first", code="not_signed_in")
        now = self.clock.now()
        if window.tidal and window.closes_at is not None and window.closes_at <= now:
            raise Conflict("the tidal window is closing", code="window_not_open", details={"state": "closing"})
        if window.state != "open":
            raise Conflict("the window is not open", code="window_not_open", details={"state": window.state})
        tickets = TicketRepository(s)
        current = await tickets.get(current_id) if current_id is not None else None
        if current is not None:
            raise Conflict(
                "finish the current ticket first",
                code="window_busy",
                details={"ticket_id": current.id, "number": current.number, "state": current.state},
            )
        while True:
            head = await tickets.head_for_window(window.department_id, window.id)
            if head is None:
                return None
            ticket_id, case_state, case_department = head
            if case_state in OPEN_STATES and case_department == window.department_id:
                break
            # The case was closed (or moved) while its ticket waited: end the ticket and call the next one.
            ended = await tickets.get(ticket_id)
            assert ended is not None
            ended.state, ended.end_reason, ended.finished_at = "cancelled", "case_closed", now
            await s.flush()
            notice = {"ticket": ticket_event(ended), "reason": "case_closed"}
            out.add(f"unit:{ended.unit_id}", "queue.cancelled", notice)
            out.changed(ended.department_id)
        limits = PolicyBook(self.settings, [policy] if policy is not None else []).thresholds(window.department_id)
        t = await tickets.mark_called(
            ticket_id,
            window_id=window.id,
            clerk_user_id=principal.user_id,
            now=now,
            ring_deadline=now + timedelta(seconds=limits.ring_timeout),
        )
        session, _ = await self.sessions.open(s, principal, t.case_id, "call")
        case = await CaseRepository(s).get(t.case_id, for_update=True)  # locked by the session's opening: no query
        assert case is not None
        follow = callflow.case_after_ticket("waiting", "called", case.state)
        if follow is not None:
            await self.cases.transition(s, principal, t.case_id, Transition(to=follow))
        await audit.append(
            s,
            self.clock,
            t.case_id,
            principal,
            "ticket.called",
            {"ticket_id": t.id, "number": t.number, "window_id": window.id, "session_id": session.id},
        )
        out.add(f"unit:{t.unit_id}", "queue.ring", ring_event(t, session.id, window, department))
        out.changed(t.department_id)
        return TicketCall(t, session.id, window)

    @staticmethod
    def _ring_ended(t: Ticket, was: str, reason: str, out: Outbox, **extra: Any) -> None:
        """Withdraw a ring everywhere: every way a ``called`` ticket stops ringing ends here."""
        if was == "called":
            out.add(f"unit:{t.unit_id}", "queue.ring_ended", {"ticket": ticket_event(t), "reason": reason, **extra})

    async def ring_info(self, s: AsyncSession, tickets: Sequence[Ticket]) -> dict[int, RingInfo]:
        """For ringing (``called``) tickets: the session to join, the window and department calling."""
        found: dict[int, RingInfo] = {}
        for t in tickets:
            if t.state != "called" or t.window_id is None:
                continue
            window = await self._window(s, t.window_id, for_update=False)
            department = await self._department(s, t.department_id)
            session = await SessionRepository(s).open_for_case(t.case_id)
            found[t.id] = RingInfo(session.id if session is not None else None, window, department)
        return found

    async def joined_info(self, s: AsyncSession, tickets: Sequence[Ticket]) -> dict[int, bool]:
        """For tickets in a call (``called``/``serving``): whether the applicant side has joined it."""
        found: dict[int, bool] = {}
        cases = CaseRepository(s)
        for t in tickets:
            if t.state in callflow.IN_CALL and t.called_at is not None:
                found[t.id] = await cases.joined_since(t.case_id, t.called_at, callflow.APPLICANT_ROLES)
        return found

    async def answer(self, s: AsyncSession, principal: Principal, ticket_id: int, out: Outbox) -> tuple[Ticket, int]:
        """The point answers the ring: the ticket is being served; ``(ticket, call session to join)``.

        The clerk may have left the call before the point answered (the session
        then ends once empty): a serving ticket always has an open call to join.
        """
        t = await self._ticket(s, principal, ticket_id, TicketAct.POINT)
        self._require_state(t, "called")
        session = await SessionRepository(s).open_for_case(t.case_id)
        if session is None or session.kind != "call":
            session, _ = await self.sessions.open(s, principal, t.case_id, "call")
        t.state, t.served_at, t.ring_deadline = "serving", self.clock.now(), None
        await s.flush()
        await audit.append(
            s, self.clock, t.case_id, principal, "ticket.answered", {"ticket_id": t.id, "session_id": session.id}
        )
        data = {"ticket": ticket_event(t), "session_id": session.id}
        out.add(f"user:{t.clerk_user_id}", "queue.answered", data)
        self._ring_ended(t, "called", "answered", out)
        out.changed(t.department_id)
        return t, session.id

    async def recall(self, s: AsyncSession, principal: Principal, ticket_id: int, out: Outbox) -> TicketCall:
        """Ring the point again (a fresh ring timeout)."""
        t = await self._ticket(s, principal, ticket_id, TicketAct.CLERK)
        self._require_state(t, "called")
        assert t.window_id is not None
        window = await self._window(s, t.window_id, for_update=False)
        session, _ = await self.sessions.open(s, principal, t.case_id, "call")
        limits = await self._thresholds(s, t.department_id)
        t.ring_deadline = self.clock.now() + timedelta(seconds=limits.ring_timeout)
        await s.flush()
        await audit.append(s, self.clock, t.case_id, principal, "ticket.recalled", {"ticket_id": t.id})
        department = await self._department(s, t.department_id)
        out.add(f"unit:{t.unit_id}", "queue.ring", ring_event(t, session.id, window, department))
        return TicketCall(t, session.id, window)

    async def _finish(self, s: AsyncSession, t: Ticket, state: str, reason: str, out: Outbox) -> None:
        window_id = t.window_id
        t.state, t.end_reason, t.finished_at, t.ring_deadline = state, reason, self.clock.now(), None
        await s.flush()
        out.changed(t.department_id)
        # A window read as not tidal with the ticket is not looked at again: one that became tidal since has
        # its end in the future (open_tidal), and the scanner closes tidal windows past their end anyway.
        if window_id is not None and window_id not in transaction_memo(s).get("untidal_windows", ()):
            await self._close_tidal_if_due(s, await self._window(s, window_id), out)

    async def skip(self, s: AsyncSession, principal: Principal, ticket_id: int, out: Outbox) -> Ticket:
        """Nobody came: the called ticket becomes a no-show (过号)."""
        t = await self._ticket(s, principal, ticket_id, TicketAct.CLERK)
        self._require_state(t, "called")
        await self._case_follows(s, principal, t, "no_show", f"ticket {t.number} skipped")
        await self._finish(s, t, "no_show", "skipped", out)
        await audit.append(s, self.clock, t.case_id, principal, "ticket.skipped", {"ticket_id": t.id})
        out.add(f"unit:{t.unit_id}", "queue.skipped", {"ticket": ticket_event(t)})
        self._ring_ended(t, "called", "skipped", out)
        return t

    async def absent(
        self, s: AsyncSession, principal: Principal, ticket_id: int, body: AbsentBody, out: Outbox
    ) -> Ticket:
        """The applicant side never came into the call (申请人未到): back to the line at its place, or a no-show.

        Allowed on a ``called`` or ``serving`` ticket (answered, but nobody from
        the point joined); the case leaves the session (``submitted``) as for
        any call that ends without a decision.  A no-show needs a reason; both
        outcomes are audited with it.
        """
        t = await self._ticket(s, principal, ticket_id, TicketAct.CLERK)
        self._require_state(t, "called", "serving")
        if body.outcome == "no_show" and not body.reason:
            raise ValidationFailed("a no-show needs a reason", code="reason_required")
        was, clerk = t.state, t.clerk_user_id
        to = "waiting" if body.outcome == "requeue" else "no_show"
        await self._case_follows(s, principal, t, to, body.reason or f"ticket {t.number}: applicant absent")
        if body.outcome == "requeue":
            self._requeue(t)
            await s.flush()
            out.changed(t.department_id)
        else:
            await self._finish(s, t, "no_show", "absent", out)
        details: dict[str, Any] = {"ticket_id": t.id, "number": t.number, "outcome": body.outcome, "from": was}
        if body.reason:
            details["reason"] = body.reason
        await audit.append(s, self.clock, t.case_id, principal, "ticket.absent", details)
        data = {"ticket": ticket_event(t), "outcome": body.outcome, "reason": body.reason}
        out.add(f"unit:{t.unit_id}", "queue.absent", data)
        if clerk is not None and clerk != principal.user_id:
            out.add(f"user:{clerk}", "queue.absent", data)
        self._ring_ended(t, was, "absent", out)
        return t

    @staticmethod
    def _requeue(t: Ticket) -> None:
        """Back to the line: ``order_key`` and ``waiting_since`` are kept, so it is at the head again."""
        t.state = "waiting"
        t.window_id = t.clerk_user_id = t.called_at = t.ring_deadline = t.served_at = None

    async def complete(self, s: AsyncSession, principal: Principal, ticket_id: int, out: Outbox) -> Ticket:
        """The ticket has been served (the case's own decision is made through the case API)."""
        t = await self._ticket(s, principal, ticket_id, TicketAct.CLERK)
        self._require_state(t, "serving")
        await self._case_follows(s, principal, t, "done", f"ticket {t.number} served without a decision")
        await self._finish(s, t, "done", "completed", out)
        await audit.append(s, self.clock, t.case_id, principal, "ticket.completed", {"ticket_id": t.id})
        out.add(f"unit:{t.unit_id}", "queue.done", {"ticket": ticket_event(t)})
        return t

    async def cancel(self, s: AsyncSession, principal: Principal, ticket_id: int, out: Outbox) -> Ticket:
        """The point gives up its place."""
        t = await self._ticket(s, principal, ticket_id, TicketAct.POINT)
        self._require_state(t, "waiting", "called")
        clerk, was = t.clerk_user_id, t.state
        await self._case_follows(s, None, t, "cancelled", f"ticket {t.number} cancelled by the service point")
        await self._finish(s, t, "cancelled", "cancelled", out)
        await audit.append(s, self.clock, t.case_id, principal, "ticket.cancelled", {"ticket_id": t.id})
        if clerk is not None:
            out.add(f"user:{clerk}", "queue.cancelled", {"ticket": ticket_event(t), "reason": "cancelled"})
        self._ring_ended(t, was, "cancelled", out)
        return t

    async def transfer(
        self, s: AsyncSession, principal: Principal, ticket_id: int, body: TransferBody, out: Outbox
    ) -> Ticket:
        """Move the ticket to another department's queue; the new ticket keeps the original waiting time."""
        t = await self._ticket(s, principal, ticket_id, TicketAct.CLERK)
        self._require_state(t, "waiting", "called", "serving")
        target = await OrgRepository(s).department(body.department_id)
        if target is None:
            raise ValidationFailed("no such department", code="department_not_found")
        if target.id == t.department_id:
            raise ValidationFailed("the ticket is already in this department", code="transfer_same_department")
        reason = body.reason or f"ticket {t.number} transferred"
        was = t.state
        await self._case_follows(s, principal, t, "transferred", reason)
        old_department = t.department_id
        await self._finish(s, t, "transferred", "transferred", out)
        view = await self.cases.load(s, principal, t.case_id, Action.WRITE, for_update=True)
        view.case.department_id = target.id
        view.case.updated_at = self.clock.now()
        await s.flush()
        await audit.append(
            s,
            self.clock,
            t.case_id,
            principal,
            "case.rerouted",
            {"from_department_id": old_department, "to_department_id": target.id, "reason": reason},
        )
        new = await self._issue(
            s,
            principal,
            view.case,
            department_id=target.id,
            priority=t.priority,
            order_key=t.order_key,
            waiting_since=t.waiting_since,
            appointment_id=t.appointment_id,
            transferred_from_id=t.id,
        )
        await audit.append(
            s,
            self.clock,
            t.case_id,
            principal,
            "ticket.transferred",
            {"ticket_id": t.id, "new_ticket_id": new.id, "number": new.number, "department_id": target.id},
        )
        out.add(f"unit:{t.unit_id}", "queue.transferred", {"ticket": ticket_event(t), "new_ticket": ticket_event(new)})
        self._ring_ended(t, was, "transferred", out)
        out.changed(target.id)
        return new

    async def move_case(
        self,
        s: AsyncSession,
        principal: Principal,
        case_id: int,
        body: Transition,
        out: Outbox,
        *,
        checklist_complete: bool | None = None,
        missing: list[str] | None = None,
    ) -> CaseView:
        """A case move through the API, checked against the case's ticket and call (``server.services.callflow``).

        The ticket follows in the same transaction: a decided or closed case
        ends its ticket (``done`` if it was being served, else ``cancelled``),
        a case sent back from the session puts its ticket back in line; a
        ringing ticket's ring is withdrawn everywhere.
        """
        effect = TicketEffect.KEEP
        # Ticket before case, the order every ticket action and the scanner take their locks in (no deadlock).
        ticket = await TicketRepository(s).active_for_case(case_id, for_update=True)

        async def guard(case: Case) -> None:
            nonlocal effect, ticket
            state = await callflow.call_state(s, case)
            effect = callflow.case_move(case.state, body.to, state)
            ticket = state.ticket

        view = await self.cases.transition(
            s, principal, case_id, body, checklist_complete=checklist_complete, missing=missing, guard=guard
        )
        if ticket is not None and effect is not TicketEffect.KEEP:
            await self._ticket_follows(s, principal, ticket, effect, body.to, out)
        return view

    async def _ticket_follows(
        self, s: AsyncSession, principal: Principal, t: Ticket, effect: TicketEffect, case_to: str, out: Outbox
    ) -> None:
        was, clerk = t.state, t.clerk_user_id
        reason = f"case_{case_to}"
        if effect is TicketEffect.REQUEUE:
            self._requeue(t)
            await s.flush()
            out.changed(t.department_id)
            action, event = "ticket.requeued", "queue.requeued"
        else:
            state = "done" if effect is TicketEffect.DONE else "cancelled"
            await self._finish(s, t, state, "completed" if state == "done" else "case_closed", out)
            action, event = (
                ("ticket.completed", "queue.done") if state == "done" else ("ticket.cancelled", "queue.cancelled")
            )
        await audit.append(
            s, self.clock, t.case_id, principal, action, {"ticket_id": t.id, "from": was, "reason": reason}
        )
        data = {"ticket": ticket_event(t), "reason": reason}
        out.add(f"unit:{t.unit_id}", event, data)
        if clerk is not None and clerk != principal.user_id:
            out.add(f"user:{clerk}", event, data)
        self._ring_ended(t, was, reason, out)

    async def _clerk_principal(self, s: AsyncSession, user_id: int | None) -> Principal | None:
        """The clerk who called a ticket, to undo that call's case move when no request is behind the change."""
        user = await UserRepository(s).get(user_id) if user_id is not None else None
        if user is None:
            return None
        unit_path = await QueuePolicyRepository(s).unit_path(user.unit_id)
        return Principal(
            user_id=user.id,
            username=user.username,
            display_name=user.display_name,
            role=Role(user.role),
            unit_id=user.unit_id,
            unit_path=unit_path,
            department_id=user.department_id,
            session_id="queue",
        )

    async def _case_follows(self, s: AsyncSession, actor: Principal | None, t: Ticket, to: str, reason: str) -> None:
        """Move the case as the state machine says for the ticket's move from its current state to ``to``.

        A call moved the case into ``in_session``; a call that ends without a
        decision moves it back to ``submitted`` (``callflow.case_after_ticket``).
        """
        # Locked now: the ticket's end is audited on the case anyway, which takes this lock.
        case = await CaseRepository(s).get(t.case_id, for_update=True)
        if case is None or callflow.case_after_ticket(t.state, to, case.state) != "submitted":
            return
        principal = actor if actor is not None and actor.role in (Role.CLERK, Role.ADMIN) else None
        principal = principal or await self._clerk_principal(s, t.clerk_user_id)
        if principal is None:
            return
        try:
            await self.cases.transition(s, principal, case.id, Transition(to="submitted", reason=reason))
        except ApiError as exc:  # refused before any write: the case keeps its state
            log.warning("case %s left in_session after ticket %s: %s", case.id, t.id, exc.code)

    async def ticket_view(self, s: AsyncSession, principal: Principal, ticket_id: int) -> TicketPosition:
        t = await self._ticket(s, principal, ticket_id, TicketAct.READ, for_update=False)
        if t.state != "waiting":
            return TicketPosition(t, None, None)
        board = await self._board(s, t.department_id, None)
        for entry in board.entries:
            if entry.ticket.id == t.id:
                return TicketPosition(t, entry.position, entry.estimated_wait)
        return TicketPosition(t, None, None)

    async def search(
        self, s: AsyncSession, principal: Principal, *, states: Sequence[str] | None, limit: int, offset: int
    ) -> tuple[Sequence[Ticket], int]:
        repo = TicketRepository(s)
        match principal.role:
            case Role.ADMIN:
                return await repo.search(states=states, limit=limit, offset=offset)
            case Role.COMMUNITY_STAFF:
                return await repo.search(unit_id=principal.unit_id, states=states, limit=limit, offset=offset)
            case Role.CLERK if principal.department_id is not None:
                return await repo.search(
                    department_id=principal.department_id, states=states, limit=limit, offset=offset
                )
            case Role.SUPERVISOR:
                return await repo.search(subtree_path=principal.unit_path, states=states, limit=limit, offset=offset)
            case _:
                return [], 0

    # -- windows ----------------------------------------------------------------------------------------------------

    async def window_state(self, s: AsyncSession, window: Window) -> WindowState:
        return (await self.window_states(s, [window]))[0]

    async def window_states(self, s: AsyncSession, windows: Sequence[Window]) -> list[WindowState]:
        ids = [w.id for w in windows]
        current = await TicketRepository(s).current_at_windows(ids)
        codes = await WindowRepository(s).served_matter_codes(ids)
        return [WindowState(w, current.get(w.id), codes.get(w.id, [])) for w in windows]

    async def get_window(self, s: AsyncSession, principal: Principal, window_id: int) -> WindowState:
        self._may_watch(principal)
        return await self.window_state(s, await self._window(s, window_id, for_update=False))

    def _window_changed(self, window: Window, out: Outbox) -> None:
        out.add(f"department:{window.department_id}", "queue.window", window_event(window))
        out.changed(window.department_id)

    async def sign_in(self, s: AsyncSession, principal: Principal, window_id: int, out: Outbox) -> WindowState:
        """A clerk takes the window (one window per clerk); a closed window opens."""
        if principal.role is not Role.CLERK or principal.user_id is None:
            raise Forbidden("only clerks sign in to windows", code="forbidden")
        window = await self._window(s, window_id)
        if window.department_id != principal.department_id:
            raise Forbidden("the window belongs to another department", code="forbidden")
        if window.clerk_user_id == principal.user_id:
            return await self.window_state(s, window)
        if window.clerk_user_id is not None:
            raise Conflict("another clerk is signed in to this window", code="window_taken")
        repo = WindowRepository(s)
        other = await repo.of_clerk(principal.user_id)
        already = Conflict("sign out of your other window first", code="already_signed_in")
        if other is not None:
            already.details = {"window_id": other.id}
            raise already
        try:
            await repo.assign_clerk(window, principal.user_id, self.clock.now())
        except DuplicateActive:
            raise already from None
        if window.state == "closed":
            window.state = "open"
        await s.flush()
        self._window_changed(window, out)
        return await self.window_state(s, window)

    def _may_operate(self, window: Window, principal: Principal, manager: bool) -> None:
        if window.clerk_user_id is not None and window.clerk_user_id == principal.user_id:
            return
        if manager:
            return
        if principal.role is Role.CLERK and principal.department_id == window.department_id:
            raise Conflict("you are not signed in to this window", code="not_signed_in")
        raise Forbidden("only the window's clerk or a supervisor does this", code="forbidden")

    async def sign_out(self, s: AsyncSession, principal: Principal, window_id: int, out: Outbox) -> WindowState:
        """The clerk leaves (or a supervisor signs them out); a regular window closes, a tidal one stays open."""
        window = await self._window(s, window_id)
        self._may_operate(window, principal, await self._manages(s, principal, window.department_id))
        current = await TicketRepository(s).current_at_window(window.id)
        if current is not None:
            raise Conflict(
                "finish the current ticket first",
                code="window_busy",
                details={"ticket_id": current.id, "number": current.number, "state": current.state},
            )
        clerk = window.clerk_user_id
        window.clerk_user_id = None
        window.signed_in_at = None
        if not window.tidal:
            window.state = "closed"
        await s.flush()
        if clerk is not None and clerk != principal.user_id:
            out.add(f"user:{clerk}", "queue.signed_out", window_event(window))
        self._window_changed(window, out)
        return await self.window_state(s, window)

    async def pause(self, s: AsyncSession, principal: Principal, window_id: int, out: Outbox) -> WindowState:
        """Stop calling (the current ticket is finished as usual)."""
        window = await self._window(s, window_id)
        self._may_operate(window, principal, await self._manages(s, principal, window.department_id))
        if window.state != "open":
            raise Conflict("the window is not open", code="window_not_open", details={"state": window.state})
        window.state = "paused"
        await s.flush()
        self._window_changed(window, out)
        return await self.window_state(s, window)

    async def resume(self, s: AsyncSession, principal: Principal, window_id: int, out: Outbox) -> WindowState:
        window = await self._window(s, window_id)
        self._may_operate(window, principal, await self._manages(s, principal, window.department_id))
        if window.state != "paused":
            raise Conflict("the window is not paused", code="window_not_paused", details={"state": window.state})
        window.state = "open"
        await s.flush()
        self._window_changed(window, out)
        return await self.window_state(s, window)

    async def _matter_ids(self, s: AsyncSession, department: Department, codes: Sequence[str]) -> list[int]:
        matters = MatterRepository(s)
        ids = []
        for code in codes:
            matter = await matters.by_code(code)
            if matter is None:
                raise ValidationFailed("no such matter", code="matter_not_found", details={"matter_code": code})
            if matter.department_code != department.code:
                raise ValidationFailed(
                    "the matter is handled by another department",
                    code="matter_not_in_department",
                    details={"matter_code": code, "department_code": matter.department_code},
                )
            ids.append(matter.id)
        return ids

    async def set_matters(
        self, s: AsyncSession, principal: Principal, window_id: int, body: WindowMatters, out: Outbox
    ) -> WindowState:
        window = await self._window(s, window_id)
        await self._require_manager(s, principal, window.department_id)
        ids = await self._matter_ids(s, await self._department(s, window.department_id), body.matter_codes)
        await WindowRepository(s).set_served_matters(window.id, ids)
        self._window_changed(window, out)
        return await self.window_state(s, window)

    async def open_tidal(
        self, s: AsyncSession, principal: Principal, window_id: int, body: TidalOpen, out: Outbox
    ) -> WindowState:
        """Open a tidal window (潮汐窗口) until ``body.until`` (or move the end of an open one)."""
        window = await self._window(s, window_id)
        await self._require_manager(s, principal, window.department_id)
        now = self.clock.now()
        latest = now + timedelta(seconds=self.settings.max_tidal_period)
        if not now < body.until <= latest:
            raise ValidationFailed(
                "the period must end in the future and within the longest tidal period",
                code="invalid_tidal_period",
                details={"latest": latest.isoformat()},
            )
        if window.state != "closed" and not window.tidal:
            raise Conflict("the window is already open as a regular window", code="window_already_open")
        if body.matter_codes is not None:
            ids = await self._matter_ids(s, await self._department(s, window.department_id), body.matter_codes)
            await WindowRepository(s).set_served_matters(window.id, ids)
        window.tidal = True
        window.closes_at = body.until
        if window.state == "closed":
            window.state = "open"
        await s.flush()
        self._window_changed(window, out)
        return await self.window_state(s, window)

    async def _close_tidal_if_due(self, s: AsyncSession, window: Window, out: Outbox) -> bool:
        """Close a tidal window past its end once it has no ticket in hand."""
        if not window.tidal or window.closes_at is None or window.closes_at > self.clock.now():
            return False
        if await TicketRepository(s).current_at_window(window.id) is not None:
            return False
        clerk = window.clerk_user_id
        window.state, window.tidal, window.closes_at = "closed", False, None
        window.clerk_user_id, window.signed_in_at = None, None
        await s.flush()
        if clerk is not None:
            out.add(f"user:{clerk}", "queue.window_closed", window_event(window))
        self._window_changed(window, out)
        out.count("tidal_closed")
        return True

    # -- boards -----------------------------------------------------------------------------------------------------

    async def board(
        self, s: AsyncSession, principal: Principal, department_id: int | None, window_id: int | None = None
    ) -> Board:
        """A department's board, or (``window_id``) the line one window calls from."""
        self._may_watch(principal)
        window = None
        if window_id is not None:
            window = await self._window(s, window_id, for_update=False)
            department_id = window.department_id
        assert department_id is not None
        await self._department(s, department_id)
        return await self._board(s, department_id, window)

    async def _board(self, s: AsyncSession, department_id: int, window: Window | None) -> Board:
        now = self.clock.now()
        tickets = TicketRepository(s)
        windows = WindowRepository(s)
        matters = (await windows.served_matter_ids(window.id) or None) if window is not None else None
        line = await tickets.line(department_id, matters)
        states = await self.window_states(
            s, [window] if window is not None else await windows.of_department(department_id)
        )
        open_windows = sum(1 for w in states if w.window.state == "open" and w.window.clerk_user_id is not None)
        samples = await tickets.recent_service_times(department_id, self.settings.service_sample)
        mean = sum(samples) / len(samples) if samples else float(self.settings.default_service_time)
        per_position = mean / max(1, open_windows)
        oldest = min((t.waiting_since for t in line), default=None)
        longest = max(0, int((now - oldest).total_seconds())) if oldest is not None else 0
        limits = await self._thresholds(s, department_id, window.id if window is not None else None)
        return Board(
            department_id=department_id,
            window_id=window.id if window is not None else None,
            colour=colour(len(line), longest, limits),
            waiting=len(line),
            longest_wait=longest,
            mean_service_time=round(mean, 1),
            open_windows=open_windows,
            entries=[BoardEntry(t, i, math.ceil(i * per_position)) for i, t in enumerate(line, start=1)],
            windows=states,
            thresholds=limits,
        )

    # -- alerts, policies, reports ----------------------------------------------------------------------------------

    async def alerts(
        self,
        s: AsyncSession,
        principal: Principal,
        *,
        department_id: int | None,
        open_only: bool,
        kind: str | None,
        limit: int,
        offset: int,
    ) -> tuple[Sequence[Alert], int]:
        ids = await self.supervised_departments(s, principal)
        if department_id is not None:
            ids = [department_id] if ids is None or department_id in ids else []
        return await QueuePolicyRepository(s).alerts(
            department_ids=ids, open_only=open_only, kind=kind, limit=limit, offset=offset
        )

    async def acknowledge(self, s: AsyncSession, principal: Principal, alert_id: int) -> Alert:
        """Acknowledge an alert (idempotent: the first acknowledgement is kept)."""
        ids = await self.supervised_departments(s, principal)
        alert = await QueuePolicyRepository(s).alert(alert_id, for_update=True)
        if alert is None or (ids is not None and alert.department_id not in ids):
            raise NotFound("no such alert", code="alert_not_found")
        if alert.acknowledged_at is None:
            alert.acknowledged_at = self.clock.now()
            alert.acknowledged_by = principal.user_id
            await s.flush()
        return alert

    async def policy(
        self, s: AsyncSession, principal: Principal, department_id: int, window_id: int | None = None
    ) -> tuple[QueuePolicy | None, Thresholds]:
        self._may_watch(principal)
        await self._department(s, department_id)
        scope = f"window:{window_id}" if window_id is not None else f"department:{department_id}"
        return await QueuePolicyRepository(s).policy(scope), await self._thresholds(s, department_id, window_id)

    async def set_policy(
        self,
        s: AsyncSession,
        principal: Principal,
        department_id: int | None,
        body: PolicyUpdate,
        window_id: int | None = None,
    ) -> tuple[QueuePolicy, Thresholds]:
        """Override thresholds of a department (or of one window: colours only)."""
        if window_id is not None:
            department_id = (await self._window(s, window_id, for_update=False)).department_id
        assert department_id is not None
        await self._department(s, department_id)
        await self._require_manager(s, principal, department_id)
        changes = {k: getattr(body, k) for k in body.model_fields_set}
        if window_id is not None and set(changes) - set(THRESHOLD_FIELDS):
            raise ValidationFailed(
                "a window sets only its colour thresholds",
                code="invalid_policy",
                details={"allowed": list(THRESHOLD_FIELDS)},
            )
        repo = QueuePolicyRepository(s)
        scope = f"window:{window_id}" if window_id is not None else f"department:{department_id}"
        row = await repo.policy(scope)
        now = self.clock.now()
        if row is None:
            row = await repo.add_policy(
                QueuePolicy(scope=scope, department_id=department_id, window_id=window_id, updated_at=now)
            )
        for key, value in changes.items():
            setattr(row, key, value)
        row.updated_at, row.updated_by = now, principal.user_id
        await s.flush()
        limits = await self._thresholds(s, department_id, window_id)
        if "wait_limit" in changes:
            for t in await TicketRepository(s).waiting_unalerted(department_id):
                t.alert_at = t.waiting_since + timedelta(seconds=limits.wait_limit)
            await s.flush()
        return row, limits

    def _period(self, at: datetime, bucket: ReportBucket) -> str:
        local = at.astimezone(self.zone)
        if bucket == "day":
            return local.date().isoformat()
        if bucket == "month":
            return f"{local:%Y-%m}"
        return "all"

    async def report(
        self, s: AsyncSession, principal: Principal, since: datetime, until: datetime, bucket: ReportBucket
    ) -> list[ReportRow]:
        """Yellow and red warnings (turns of a department's queue to that colour) and wait timeouts per period."""
        ids = await self.supervised_departments(s, principal)
        rows: dict[tuple[int, str], ReportRow] = {}
        for alert in await QueuePolicyRepository(s).alerts_between(ids, since, until):
            if alert.kind == "status" and alert.window_id is not None:
                continue
            key = (alert.department_id, self._period(alert.created_at, bucket))
            row = rows.setdefault(key, ReportRow(*key))
            if alert.kind == "wait_timeout":
                row.wait_timeouts += 1
            elif alert.level == "red":
                row.red += 1
            else:
                row.yellow += 1
        return [rows[k] for k in sorted(rows)]

    # -- the scanner ------------------------------------------------------------------------------------------------

    async def tick(self, s: AsyncSession) -> Outbox:
        """Do all due work in the caller's transaction; the notices to send after it commits.

        Safe to run from several processes at once: on PostgreSQL only the
        holder of the scanner's advisory lock works (the others return at
        once), on SQLite writers are serialised anyway; each step also locks
        the rows it changes and re-reads their state.
        """
        out = Outbox()
        if not await QueuePolicyRepository(s).try_scanner_lock():
            return out
        now = self.clock.now()
        book = await self._book(s)
        supervisors: dict[int, list[int]] = {}
        await self._ring_timeouts(s, now, out)
        await self._closed_cases(s, now, out)
        await self._wait_alerts(s, now, book, supervisors, out)
        for window in await WindowRepository(s).tidal_due(now, self.settings.scan_batch):
            await self._close_tidal_if_due(s, window, out)
        lapsed = await self.appointments.expire(s, now, self.settings.scan_batch)
        for appointment in lapsed:
            out.add(
                f"unit:{appointment.unit_id}",
                "appointment.no_show",
                {"appointment_id": appointment.id, "case_id": appointment.case_id},
            )
        out.count("no_shows", len(lapsed))
        await self._colours(s, now, book, supervisors, out)
        return out

    async def _ring_timeouts(self, s: AsyncSession, now: datetime, out: Outbox) -> None:
        limit = self.settings.max_unanswered
        for t in await TicketRepository(s).ring_due(now, self.settings.scan_batch):
            clerk, window_id = t.clerk_user_id, t.window_id
            give_up = limit > 0 and t.unanswered + 1 >= limit
            await self._case_follows(
                s, None, t, "no_show" if give_up else "waiting", f"ticket {t.number}: nobody answered"
            )
            t.unanswered += 1
            t.window_id = t.clerk_user_id = t.called_at = t.ring_deadline = None
            if give_up:
                t.state, t.end_reason, t.finished_at = "no_show", "unanswered", now
            else:
                t.state = "waiting"  # order_key and waiting_since are kept: back at the head of the line
            await s.flush()
            await audit.append(
                s,
                self.clock,
                t.case_id,
                None,
                "ticket.unanswered",
                {"ticket_id": t.id, "number": t.number, "unanswered": t.unanswered, "no_show": give_up},
            )
            data = {"ticket": ticket_event(t), "window_id": window_id, "no_show": give_up}
            if clerk is not None:
                out.add(f"user:{clerk}", "queue.unanswered", data)
            self._ring_ended(
                t, "called", "no_show" if give_up else "unanswered", out, window_id=window_id, no_show=give_up
            )
            out.changed(t.department_id)
            out.count("unanswered")
            if window_id is not None:
                await self._close_tidal_if_due(s, await self._window(s, window_id), out)

    async def _closed_cases(self, s: AsyncSession, now: datetime, out: Outbox) -> None:
        """Waiting tickets whose case was closed (cancelled, decided) leave the line."""
        for t in await TicketRepository(s).waiting_for_closed_cases(sorted(OPEN_STATES), self.settings.scan_batch):
            t.state, t.end_reason, t.finished_at = "cancelled", "case_closed", now
            await s.flush()
            out.add(f"unit:{t.unit_id}", "queue.cancelled", {"ticket": ticket_event(t), "reason": "case_closed"})
            out.changed(t.department_id)
            out.count("case_closed")

    async def _alert_notices(
        self, s: AsyncSession, alert: Alert, supervisors: dict[int, list[int]], out: Outbox
    ) -> None:
        """An alert goes to the department's room and to each supervisor of its centre and the centres above."""
        ids = supervisors.get(alert.department_id)
        if ids is None:
            path = await CaseRepository(s).department_unit_path(alert.department_id)
            units = [int(p) for p in path.strip("/").split("/") if p]
            ids = supervisors[alert.department_id] = await QueuePolicyRepository(s).supervisor_ids(units)
        data = alert_event(alert)
        out.add(f"department:{alert.department_id}", "queue.alert", data)
        for user_id in ids:
            out.add(f"user:{user_id}", "queue.alert", data)

    async def _wait_alerts(
        self, s: AsyncSession, now: datetime, book: PolicyBook, supervisors: dict[int, list[int]], out: Outbox
    ) -> None:
        tickets = TicketRepository(s)
        due = await tickets.alert_due(now, self.settings.scan_batch)
        if not due:
            return
        repo = QueuePolicyRepository(s)
        ids = await repo.add_ticket_alerts(
            [
                {
                    "department_id": t.department_id,
                    "window_id": None,
                    "ticket_id": t.id,
                    "kind": "wait_timeout",
                    "level": "red",
                    "details": {
                        "number": t.number,
                        "unit_id": t.unit_id,
                        "waited": int((now - t.waiting_since).total_seconds()),
                        "limit": book.thresholds(t.department_id).wait_limit,
                    },
                    "created_at": now,
                    "acknowledged_at": None,
                    "acknowledged_by": None,
                }
                for t in due
            ]
        )
        await tickets.mark_alerted([t.id for t in due])
        for alert in await repo.alerts_by_id(ids):
            await self._alert_notices(s, alert, supervisors, out)
        out.count("wait_alerts", len(ids))

    async def _colours(
        self, s: AsyncSession, now: datetime, book: PolicyBook, supervisors: dict[int, list[int]], out: Outbox
    ) -> None:
        repo = QueuePolicyRepository(s)
        tickets = TicketRepository(s)
        stats = await tickets.waiting_stats()
        current = await repo.statuses()
        departments = set(stats) | {
            r.department_id for r in current.values() if r.window_id is None and r.colour != "green"
        }
        for d in sorted(departments):
            await self._evaluate(
                s,
                now,
                d,
                None,
                stats.get(d, WaitingStats(0, None)),
                book.thresholds(d),
                current,
                supervisors,
                out,
            )
        for row in book.window_scopes():
            assert row.window_id is not None
            matters = await WindowRepository(s).served_matter_ids(row.window_id) or None
            st = await tickets.waiting_stats_for(row.department_id, matters)
            limits = book.thresholds(row.department_id, row.window_id)
            await self._evaluate(s, now, row.department_id, row.window_id, st, limits, current, supervisors, out)

    async def _evaluate(
        self,
        s: AsyncSession,
        now: datetime,
        department_id: int,
        window_id: int | None,
        stats: WaitingStats,
        limits: Thresholds,
        current: dict[str, QueueStatus],
        supervisors: dict[int, list[int]],
        out: Outbox,
    ) -> None:
        scope = f"window:{window_id}" if window_id is not None else f"department:{department_id}"
        longest = max(0, int((now - stats.oldest).total_seconds())) if stats.oldest is not None else 0
        new = colour(stats.waiting, longest, limits)
        row = current.get(scope)
        old = row.colour if row is not None else "green"
        if new == old:
            return
        repo = QueuePolicyRepository(s)
        if row is None:
            await repo.set_status(
                QueueStatus(scope=scope, department_id=department_id, window_id=window_id, colour=new, since=now)
            )
        else:
            row.colour, row.since = new, now
        await repo.add_change(
            QueueStatusChange(
                scope=scope,
                department_id=department_id,
                window_id=window_id,
                from_colour=old,
                to_colour=new,
                at=now,
                waiting=stats.waiting,
                longest_wait=longest,
            )
        )
        details = {"from": old, "to": new, "waiting": stats.waiting, "longest_wait": longest}
        out.add(f"department:{department_id}", "queue.status", {**details, "window_id": window_id})
        out.changed(department_id)
        out.count("status_changes")
        if _RANK[new] > _RANK[old]:
            alert = await repo.add_alert(
                Alert(
                    department_id=department_id,
                    window_id=window_id,
                    ticket_id=None,
                    kind="status",
                    level=new,
                    details=details,
                    created_at=now,
                    acknowledged_at=None,
                    acknowledged_by=None,
                )
            )
            await self._alert_notices(s, alert, supervisors, out)
            out.count("status_alerts")

    # -- after commit -----------------------------------------------------------------------------------------------

    async def publish(self, out: Outbox) -> None:
        """Send the notices of a committed unit of work; the boards of the departments it changed follow shortly.

        Failures are logged, never raised: the database is the record, and
        clients re-read boards and alert lists when they (re)connect.
        """
        await self._send(out.notices)
        if out.departments:
            self._dirty |= out.departments
            if self._boards is None or self._boards.done():
                self._boards = asyncio.create_task(self._send_boards_soon(), name="queue-boards")

    async def _send(self, notices: Sequence[Notice]) -> None:
        for n in notices:
            try:
                await self.notifier.notify(n.room, n.event, n.data)
            except Exception:
                log.exception("queue notice %s to %s failed", n.event, n.room)

    async def _send_boards_soon(self) -> None:
        while self._dirty:
            await asyncio.sleep(self.settings.board_interval)
            await self.flush_boards()

    async def flush_boards(self) -> None:
        """Send the boards of the departments changed since the last time, now."""
        departments, self._dirty = self._dirty, set()
        if not departments:
            return
        notices: list[Notice] = []
        try:
            async with self.db.read() as s:
                for department_id in sorted(departments):
                    board = await self._board(s, department_id, None)
                    notices.append(
                        Notice(
                            f"department:{department_id}",
                            "queue.changed",
                            board_event(board, self.settings.board_notice_tickets),
                        )
                    )
                    per_unit: dict[int, list[dict[str, Any]]] = {}
                    for e in board.entries:
                        per_unit.setdefault(e.ticket.unit_id, []).append(
                            {
                                "id": e.ticket.id,
                                "number": e.ticket.number,
                                "position": e.position,
                                "estimated_wait": e.estimated_wait,
                            }
                        )
                    for unit_id, entries in sorted(per_unit.items()):
                        notices.append(
                            Notice(
                                f"unit:{unit_id}",
                                "queue.position",
                                {"department_id": department_id, "waiting": board.waiting, "tickets": entries},
                            )
                        )
        except Exception:
            log.exception("queue boards could not be computed")
        await self._send(notices)

    async def close(self) -> None:
        """Send boards still due and stop (called at shutdown, before the signalling server closes)."""
        if self._boards is not None and not self._boards.done():
            self._boards.cancel()
            await asyncio.gather(self._boards, return_exceptions=True)
        await self.flush_boards()

    async def scan(self) -> Outbox:
        """One scanner round: due work in one transaction, then its notices."""
        async with self.db.transaction() as s:
            out = await self.tick(s)
        await self.publish(out)
        if out.counts:
            log.info("queue scan: %s", out.counts)
        return out

    async def run_scanner(self) -> None:
        """Scan every ``scan_interval`` seconds until cancelled (the pace is wall time; due-ness is the clock's)."""
        while True:
            await asyncio.sleep(self.settings.scan_interval)
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("queue scan failed")
