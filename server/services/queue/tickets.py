"""Tickets: taking, checking in, calling into the session, answering, recalling, skipping, absent, completing,
cancelling, transferring, and the case moves that follow them (``server.services.callflow``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.services import audit, callflow
from server.services.appointments import (
    QUEUEABLE_CASE_STATES,
)
from server.services.callflow import TicketEffect
from server.services.cases import OPEN_STATES, CaseView, Transition
from server.services.policy import Action
from server.services.principal import Principal, Role
from server.services.queue.base import QueueBase
from server.services.queue.model import (
    AbsentBody,
    Outbox,
    PolicyBook,
    RingInfo,
    TicketAct,
    TicketCall,
    TicketPosition,
    TransferBody,
    ring_event,
    ticket_event,
    ticket_letters,
)
from server.storage.cases import CaseRepository, transaction_memo
from server.storage.models import (
    Case,
    Ticket,
)
from server.storage.orgs import OrgRepository
from server.storage.queue import (
    DuplicateActive,
    QueuePolicyRepository,
    TicketRepository,
    WindowRepository,
)
from server.storage.sessions import SessionRepository


class QueueTickets(QueueBase):
    """The life of a ticket."""

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
