"""Appointments (预约): slots with a capacity, bookings for a case, cancellation, no-shows and bans.

The rules from the field (DESIGN.md §2), every duration configurable
(:class:`AppointmentSettings`):

* a slot is bookable up to ``horizon`` (10 days) ahead and not once it has started;
* a booking may be cancelled until ``cancel_deadline`` (3 hours) before its slot;
* a booking not checked in by its slot's end plus ``no_show_grace`` (15 min)
  becomes a no-show (the queue scanner calls :meth:`AppointmentService.expire`),
  and one no-show bars the ID number from booking for ``no_show_ban`` (30 days);
* real-name: one active (``booked``) booking per matter per ID number, held by
  a partial unique index as well as checked first for a friendly 409;
* a slot never holds more than its capacity: the count is taken with one
  guarded ``UPDATE ... WHERE booked < capacity``.

Checking in turns a booking into a priority ticket; that is the queue's work
(``server.services.queue``), which calls :meth:`AppointmentService.for_check_in`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import Clock, UtcInstant
from server.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.services import audit
from server.services.cases import CaseService
from server.services.policy import Action, CaseScope, may
from server.services.principal import Principal, Role
from server.settings import AppointmentSettings
from server.storage.cases import CaseRepository
from server.storage.models import Appointment, AppointmentSlot
from server.storage.orgs import OrgRepository
from server.storage.queue import AppointmentRepository, DuplicateActive, QueuePolicyRepository, WindowRepository

#: Case states a ticket or booking may be taken for (the case is not yet decided or in a session).
QUEUEABLE_CASE_STATES = frozenset({"draft", "submitted"})
#: The network's own staff: they see queue boards, windows and slots (invite guests, experts, inspectors do not).
STAFF_ROLES = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.CLERK, Role.COMMUNITY_STAFF})


class SlotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    starts_at: UtcInstant
    ends_at: UtcInstant
    capacity: int = Field(ge=1, le=100_000)
    window_id: int | None = Field(default=None, ge=1, le=2**31 - 1)

    @model_validator(mode="after")
    def _order(self) -> SlotCreate:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class BookingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slot_id: int = Field(ge=1, le=2**31 - 1)


@dataclass
class AppointmentView:
    appointment: Appointment
    slot: AppointmentSlot


def _staff(principal: Principal) -> None:
    if principal.role not in (Role.COMMUNITY_STAFF, Role.ADMIN):
        raise Forbidden("only service-point staff book, cancel and check in appointments", code="forbidden")


class AppointmentService:
    def __init__(self, *, clock: Clock, cases: CaseService, settings: AppointmentSettings) -> None:
        self.clock = clock
        self.cases = cases
        self.settings = settings

    # -- slots -------------------------------------------------------------

    async def create_slot(
        self, s: AsyncSession, principal: Principal, department_id: int, body: SlotCreate
    ) -> AppointmentSlot:
        department = await OrgRepository(s).department(department_id)
        if department is None:
            raise NotFound("no such department", code="department_not_found")
        path = await QueuePolicyRepository(s).unit_path(department.unit_id)
        if not (
            principal.role is Role.ADMIN or (principal.role is Role.SUPERVISOR and path.startswith(principal.unit_path))
        ):
            raise Forbidden("only the centre's supervisors and admins publish slots", code="forbidden")
        cfg = self.settings
        if body.capacity > cfg.max_slot_capacity:
            raise ValidationFailed(
                "capacity too large", code="invalid_slot", details={"max_capacity": cfg.max_slot_capacity}
            )
        if (body.ends_at - body.starts_at).total_seconds() > cfg.max_slot_length:
            raise ValidationFailed("slot too long", code="invalid_slot", details={"max_length": cfg.max_slot_length})
        if body.window_id is not None:
            window = await WindowRepository(s).get(body.window_id)
            if window is None or window.department_id != department_id:
                raise ValidationFailed("the window is not one of this department's", code="invalid_slot")
        return await AppointmentRepository(s).add_slot(
            AppointmentSlot(
                department_id=department_id,
                window_id=body.window_id,
                starts_at=body.starts_at,
                ends_at=body.ends_at,
                capacity=body.capacity,
                booked=0,
                created_at=self.clock.now(),
                created_by=principal.user_id,
            )
        )

    async def slots(
        self, s: AsyncSession, principal: Principal, department_id: int, since: datetime, until: datetime
    ) -> Sequence[AppointmentSlot]:
        if principal.invite_case_id is not None or principal.role not in STAFF_ROLES:
            raise Forbidden("slots are for staff", code="forbidden")
        if await OrgRepository(s).department(department_id) is None:
            raise NotFound("no such department", code="department_not_found")
        return await AppointmentRepository(s).slots(department_id, since, until)

    # -- bookings ------------------------------------------------------------

    async def book(self, s: AsyncSession, principal: Principal, case_id: int, slot_id: int) -> AppointmentView:
        view = await self.cases.load(s, principal, case_id, Action.WRITE, for_update=True)
        _staff(principal)
        case = view.case
        if case.state not in QUEUEABLE_CASE_STATES:
            raise Conflict(
                "only a draft or submitted case can be booked or queued",
                code="case_not_queueable",
                details={"state": case.state},
            )
        repo = AppointmentRepository(s)
        slot = await repo.slot(slot_id)
        if slot is None:
            raise NotFound("no such slot", code="slot_not_found")
        if slot.department_id != case.department_id:
            raise ValidationFailed(
                "the slot belongs to another department than the case's",
                code="slot_wrong_department",
                details={"slot_department_id": slot.department_id, "case_department_id": case.department_id},
            )
        now = self.clock.now()
        if slot.starts_at <= now:
            raise Conflict("the slot has already started", code="slot_started")
        horizon = now + timedelta(seconds=self.settings.horizon)
        if slot.starts_at > horizon:
            raise ValidationFailed(
                "slots can be booked at most this far ahead",
                code="booking_beyond_horizon",
                details={"horizon_seconds": self.settings.horizon, "latest_start": horizon.isoformat()},
            )
        ban = await repo.ban(case.applicant_id_hash)
        if ban is not None and ban.until > now:
            raise Forbidden(
                "this ID number may not book after a missed appointment",
                code="booking_banned",
                details={"until": ban.until.isoformat()},
            )
        if await repo.booked_for_person(case.matter_id, case.applicant_id_hash) is not None:
            raise Conflict("this person already has a booking for the matter", code="booking_already_active")
        if not await repo.take_place(slot.id):
            raise Conflict("the slot is full", code="slot_full", details={"capacity": slot.capacity})
        try:
            row = await repo.add(
                Appointment(
                    slot_id=slot.id,
                    case_id=case.id,
                    matter_id=case.matter_id,
                    unit_id=case.unit_id,
                    department_id=case.department_id,
                    id_hash=case.applicant_id_hash,
                    applicant_name=case.applicant_name,
                    state="booked",
                    created_at=now,
                    created_by=principal.user_id,
                    cancelled_at=None,
                    checked_in_at=None,
                    no_show_at=None,
                )
            )
        except DuplicateActive:
            raise Conflict("this person already has a booking for the matter", code="booking_already_active") from None
        await audit.append(
            s,
            self.clock,
            case.id,
            principal,
            "appointment.booked",
            {"appointment_id": row.id, "slot_id": slot.id, "starts_at": slot.starts_at.isoformat()},
        )
        return AppointmentView(row, slot)

    async def load(
        self, s: AsyncSession, principal: Principal, appointment_id: int, *, for_update: bool = False
    ) -> AppointmentView:
        """The booking if ``principal`` may see it (else 404, like cases)."""
        repo = AppointmentRepository(s)
        row = await repo.get(appointment_id, for_update=for_update)
        if row is None or not await self._visible(s, principal, row):
            raise NotFound("no such appointment", code="appointment_not_found")
        slot = await repo.slot(row.slot_id)
        assert slot is not None
        return AppointmentView(row, slot)

    async def _visible(self, s: AsyncSession, principal: Principal, row: Appointment) -> bool:
        scope = CaseScope(
            row.case_id,
            row.unit_id,
            await QueuePolicyRepository(s).unit_path(row.unit_id),
            row.department_id,
            await CaseRepository(s).department_unit_path(row.department_id),
        )
        return may(principal, Action.READ, scope)

    async def cancel(self, s: AsyncSession, principal: Principal, appointment_id: int) -> AppointmentView:
        view = await self.load(s, principal, appointment_id, for_update=True)
        _staff(principal)
        row, slot = view.appointment, view.slot
        if principal.role is Role.COMMUNITY_STAFF and row.unit_id != principal.unit_id:
            raise Forbidden("only the booking service point cancels", code="forbidden")
        if row.state != "booked":
            raise Conflict(
                f"a {row.state} appointment cannot be cancelled",
                code="illegal_appointment_state",
                details={"state": row.state},
            )
        now = self.clock.now()
        deadline = slot.starts_at - timedelta(seconds=self.settings.cancel_deadline)
        if now > deadline:
            raise Conflict(
                "too late to cancel this appointment",
                code="cancellation_too_late",
                details={"deadline": deadline.isoformat()},
            )
        row.state = "cancelled"
        row.cancelled_at = now
        await s.flush()
        await AppointmentRepository(s).release_place(slot.id)
        await audit.append(s, self.clock, row.case_id, principal, "appointment.cancelled", {"appointment_id": row.id})
        return view

    async def for_check_in(self, s: AsyncSession, principal: Principal, appointment_id: int) -> AppointmentView:
        """The booking, locked, if ``principal`` may check it in now; the queue then issues the ticket."""
        view = await self.load(s, principal, appointment_id, for_update=True)
        _staff(principal)
        row, slot = view.appointment, view.slot
        if principal.role is Role.COMMUNITY_STAFF and row.unit_id != principal.unit_id:
            raise Forbidden("only the booking service point checks in", code="forbidden")
        if row.state != "booked":
            raise Conflict(
                f"a {row.state} appointment cannot be checked in",
                code="illegal_appointment_state",
                details={"state": row.state},
            )
        now = self.clock.now()
        opens = slot.starts_at - timedelta(seconds=self.settings.check_in_early)
        if now < opens:
            raise Conflict(
                "check-in has not opened yet", code="check_in_too_early", details={"opens": opens.isoformat()}
            )
        if now >= slot.ends_at + timedelta(seconds=self.settings.no_show_grace):
            raise Conflict("the appointment has lapsed", code="appointment_lapsed")
        return view

    async def mark_checked_in(self, s: AsyncSession, principal: Principal, row: Appointment, ticket_id: int) -> None:
        row.state = "checked_in"
        row.checked_in_at = self.clock.now()
        await s.flush()
        await audit.append(
            s,
            self.clock,
            row.case_id,
            principal,
            "appointment.checked_in",
            {"appointment_id": row.id, "ticket_id": ticket_id},
        )

    async def search(
        self,
        s: AsyncSession,
        principal: Principal,
        *,
        state: str | None,
        case_id: int | None,
        limit: int,
        offset: int,
    ) -> tuple[list[AppointmentView], int]:
        repo = AppointmentRepository(s)
        match principal.role:
            case Role.ADMIN:
                rows, total = await repo.search(state=state, case_id=case_id, limit=limit, offset=offset)
            case Role.COMMUNITY_STAFF:
                rows, total = await repo.search(
                    unit_id=principal.unit_id, state=state, case_id=case_id, limit=limit, offset=offset
                )
            case Role.CLERK if principal.department_id is not None:
                rows, total = await repo.search(
                    department_id=principal.department_id, state=state, case_id=case_id, limit=limit, offset=offset
                )
            case Role.SUPERVISOR:
                rows, total = await repo.search(
                    subtree_path=principal.unit_path, state=state, case_id=case_id, limit=limit, offset=offset
                )
            case _:
                return [], 0
        views = []
        for row in rows:
            slot = await repo.slot(row.slot_id)
            assert slot is not None
            views.append(AppointmentView(row, slot))
        return views, total

    # -- the scanner's part -------------------------------------------------

    async def expire(self, s: AsyncSession, now: datetime, limit: int) -> list[Appointment]:
        """Turn lapsed bookings into no-shows and bar their ID numbers; the bookings changed."""
        cfg = self.settings
        repo = AppointmentRepository(s)
        lapsed = await repo.no_show_due(now - timedelta(seconds=cfg.no_show_grace), limit)
        for row in lapsed:
            row.state = "no_show"
            row.no_show_at = now
            await s.flush()
            await repo.extend_ban(row.id_hash, now + timedelta(seconds=cfg.no_show_ban), "no_show", row.id, now)
            await audit.append(s, self.clock, row.case_id, None, "appointment.no_show", {"appointment_id": row.id})
        return list(lapsed)
