"""What every part of the queue service shares: its collaborators, authorisation checks, and the helpers more than
one part uses (the board, a tidal window's closing, a ring's end, the case following its ticket)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import Clock
from server.errors import ApiError, Conflict, Forbidden, NotFound
from server.services import callflow
from server.services.appointments import (
    STAFF_ROLES,
    AppointmentService,
)
from server.services.cases import CaseService, Transition
from server.services.policy import Action, CaseScope, may
from server.services.principal import Principal, Role
from server.services.queue.model import (
    Board,
    BoardEntry,
    Notifier,
    Outbox,
    PolicyBook,
    Thresholds,
    TicketAct,
    WindowState,
    colour,
    log,
    ticket_event,
    window_event,
)
from server.services.sessions import SessionService
from server.settings import QueueSettings
from server.storage.cases import CaseRepository, transaction_memo
from server.storage.database import Database
from server.storage.models import (
    Department,
    Ticket,
    Window,
)
from server.storage.orgs import OrgRepository
from server.storage.queue import (
    QueuePolicyRepository,
    TicketRepository,
    WindowRepository,
)
from server.storage.users import UserRepository


class QueueBase:
    """The queue service's state and shared helpers; :mod:`.tickets`, :mod:`.windows`, :mod:`.reports` and
    :mod:`.scanner` each add one concern."""

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

    @staticmethod
    def _ring_ended(t: Ticket, was: str, reason: str, out: Outbox, **extra: Any) -> None:
        """Withdraw a ring everywhere: every way a ``called`` ticket stops ringing ends here."""
        if was == "called":
            out.add(f"unit:{t.unit_id}", "queue.ring_ended", {"ticket": ticket_event(t), "reason": reason, **extra})

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

    async def window_states(self, s: AsyncSession, windows: Sequence[Window]) -> list[WindowState]:
        ids = [w.id for w in windows]
        current = await TicketRepository(s).current_at_windows(ids)
        codes = await WindowRepository(s).served_matter_codes(ids)
        return [WindowState(w, current.get(w.id), codes.get(w.id, [])) for w in windows]

    def _window_changed(self, window: Window, out: Outbox) -> None:
        out.add(f"department:{window.department_id}", "queue.window", window_event(window))
        out.changed(window.department_id)

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
