"""Cloud windows: signing in and out, pausing, the matters served, tidal windows, and the boards."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from server.errors import Conflict, Forbidden, ValidationFailed
from server.services.principal import Principal, Role
from server.services.queue.base import QueueBase
from server.services.queue.model import (
    Board,
    Outbox,
    TidalOpen,
    WindowMatters,
    WindowState,
    window_event,
)
from server.storage.matters import MatterRepository
from server.storage.models import (
    Department,
    Window,
)
from server.storage.queue import (
    DuplicateActive,
    TicketRepository,
    WindowRepository,
)


class QueueWindows(QueueBase):
    """Windows and what they show."""

    async def window_state(self, s: AsyncSession, window: Window) -> WindowState:
        return (await self.window_states(s, [window]))[0]

    async def get_window(self, s: AsyncSession, principal: Principal, window_id: int) -> WindowState:
        self._may_watch(principal)
        return await self.window_state(s, await self._window(s, window_id, for_update=False))

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
