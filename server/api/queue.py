"""The remote queue and appointments: windows, tickets, boards, alerts, policies, reports, slots, bookings.

Each handler runs one unit of work with an :class:`~server.services.queue.Outbox`
and publishes the collected real-time notices after the commit.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.api.routing import Api, Call, Page
from server.clock import UtcInstant
from server.errors import ValidationFailed
from server.services.appointments import AppointmentView, BookingCreate, SlotCreate
from server.services.queue import (
    AbsentBody,
    Board,
    Outbox,
    PolicyUpdate,
    ReportBucket,
    RingInfo,
    Thresholds,
    TicketCall,
    TicketPosition,
    TidalOpen,
    TransferBody,
    WindowMatters,
    WindowState,
)
from server.storage.models import Alert, AppointmentSlot, QueuePolicy, Ticket

api = Api(invitees=False)

TICKET_STATES = ("waiting", "called", "serving", "done", "no_show", "transferred", "cancelled")


# -- models -----------------------------------------------------------------------------------------------------------


class TicketOut(BaseModel):
    id: int
    #: Readable per department and day (``B023``).
    number: str
    department_id: int
    case_id: int
    matter_id: int
    unit_id: int
    state: str
    #: 0: checked-in appointment; 1: walk-in.
    priority: int
    order_key: datetime
    waiting_since: datetime
    created_at: datetime
    window_id: int | None
    clerk_user_id: int | None
    called_at: datetime | None
    ring_deadline: datetime | None
    served_at: datetime | None
    finished_at: datetime | None
    unanswered: int
    appointment_id: int | None
    transferred_from_id: int | None
    end_reason: str | None
    #: 1-based place in the department's line while waiting.
    position: int | None = None
    #: Seconds, from the mean service time of recent tickets and the open windows.
    estimated_wait: int | None = None
    #: While ``called``: what the point needs to answer (session to join, calling window and department).
    ring: RingOut | None = None
    #: While ``called`` or ``serving``: whether the applicant side (point staff or invited citizen) has joined
    #: the call since the ticket was called; a case decision needs it (``applicant_not_joined``).
    applicant_joined: bool | None = None


class RingWindowOut(BaseModel):
    id: int
    code: str
    name_zh: str
    name_en: str


class RingDepartmentOut(BaseModel):
    id: int
    code: str
    name_zh: str
    name_en: str


class RingOut(BaseModel):
    session_id: int | None
    window: RingWindowOut
    department: RingDepartmentOut


class TicketCallOut(TicketOut):
    #: The case's media session both sides join.
    session_id: int


class WindowOut(BaseModel):
    id: int
    code: str
    department_id: int
    unit_id: int
    name_zh: str
    name_en: str
    state: str
    clerk_user_id: int | None
    signed_in_at: datetime | None
    tidal: bool
    closes_at: datetime | None
    #: Matters served; empty: all of the department's.
    matter_codes: list[str]
    current_ticket: TicketOut | None
    #: The current ticket's number: the same field the ``queue.changed`` board push carries per window.
    current: str | None = None


class ThresholdsOut(BaseModel):
    wait_limit: int
    ring_timeout: int
    yellow_length: int
    red_length: int
    yellow_wait: int
    red_wait: int


class BoardTicketOut(BaseModel):
    id: int
    number: str
    unit_id: int
    priority: int
    waiting_since: datetime
    position: int
    estimated_wait: int


class BoardOut(BaseModel):
    department_id: int
    window_id: int | None
    colour: str
    waiting: int
    #: Seconds the oldest waiting ticket has waited.
    longest_wait: int
    mean_service_time: float
    open_windows: int
    thresholds: ThresholdsOut
    tickets: list[BoardTicketOut]
    windows: list[WindowOut]


class AlertOut(BaseModel):
    id: int
    department_id: int
    window_id: int | None
    ticket_id: int | None
    kind: str
    level: str
    details: dict[str, Any]
    created_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: int | None


class PolicyOut(BaseModel):
    scope: str
    #: The values set at this scope (``null``: inherited).
    overrides: dict[str, Any]
    effective: ThresholdsOut
    ticket_prefix: str | None


class ReportRowOut(BaseModel):
    department_id: int
    period: str
    yellow: int
    red: int
    wait_timeouts: int


class ReportOut(BaseModel):
    since: datetime
    until: datetime
    bucket: str
    items: list[ReportRowOut]


class SlotOut(BaseModel):
    id: int
    department_id: int
    window_id: int | None
    starts_at: datetime
    ends_at: datetime
    capacity: int
    booked: int
    available: int


class AppointmentOut(BaseModel):
    id: int
    slot_id: int
    case_id: int
    matter_id: int
    unit_id: int
    department_id: int
    applicant_name: str
    state: str
    starts_at: datetime
    ends_at: datetime
    created_at: datetime
    cancelled_at: datetime | None
    checked_in_at: datetime | None
    no_show_at: datetime | None


class TicketQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Comma-separated states, e.g. ``waiting,called``.
    state: str | None = Field(default=None, pattern=r"^[a-z_]{1,16}(,[a-z_]{1,16}){0,6}$")
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class AlertQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    department_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    #: Only alerts nobody has acknowledged yet.
    open: bool = False
    kind: str | None = Field(default=None, pattern=r"^(wait_timeout|status)$")
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class ReportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: UtcInstant
    until: UtcInstant
    bucket: ReportBucket = "day"

    @model_validator(mode="after")
    def _order(self) -> ReportQuery:
        if self.until <= self.since:
            raise ValueError("until must be after since")
        if self.until - self.since > timedelta(days=3 * 366):
            raise ValueError("at most three years per report")
        return self


class SlotQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: UtcInstant | None = None
    until: UtcInstant | None = None


class AppointmentQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: str | None = Field(default=None, pattern=r"^(booked|checked_in|cancelled|no_show)$")
    case_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=10_000_000)


# -- serialisation ----------------------------------------------------------------------------------------------------


def ticket_out(
    t: Ticket,
    position: TicketPosition | None = None,
    ring: RingInfo | None = None,
    joined: bool | None = None,
) -> TicketOut:
    out = TicketOut.model_validate(t, from_attributes=True)
    if position is not None:
        out.position, out.estimated_wait = position.position, position.estimated_wait
    if ring is not None:
        out.ring = RingOut(
            session_id=ring.session_id,
            window=RingWindowOut.model_validate(ring.window, from_attributes=True),
            department=RingDepartmentOut.model_validate(ring.department, from_attributes=True),
        )
    out.applicant_joined = joined
    return out


def call_out(c: TicketCall) -> TicketCallOut:
    return TicketCallOut(**ticket_out(c.ticket).model_dump(), session_id=c.session_id)


def window_out(w: WindowState) -> WindowOut:
    x = w.window
    return WindowOut(
        id=x.id,
        code=x.code,
        department_id=x.department_id,
        unit_id=x.unit_id,
        name_zh=x.name_zh,
        name_en=x.name_en,
        state=x.state,
        clerk_user_id=x.clerk_user_id,
        signed_in_at=x.signed_in_at,
        tidal=x.tidal,
        closes_at=x.closes_at,
        matter_codes=w.matter_codes,
        current_ticket=ticket_out(w.current) if w.current is not None else None,
        current=w.current.number if w.current is not None else None,
    )


def thresholds_out(t: Thresholds) -> ThresholdsOut:
    return ThresholdsOut(**t.__dict__)


def board_out(b: Board) -> BoardOut:
    return BoardOut(
        department_id=b.department_id,
        window_id=b.window_id,
        colour=b.colour,
        waiting=b.waiting,
        longest_wait=b.longest_wait,
        mean_service_time=b.mean_service_time,
        open_windows=b.open_windows,
        thresholds=thresholds_out(b.thresholds),
        tickets=[
            BoardTicketOut(
                id=e.ticket.id,
                number=e.ticket.number,
                unit_id=e.ticket.unit_id,
                priority=e.ticket.priority,
                waiting_since=e.ticket.waiting_since,
                position=e.position,
                estimated_wait=e.estimated_wait,
            )
            for e in b.entries
        ],
        windows=[window_out(w) for w in b.windows],
    )


def alert_out(a: Alert) -> AlertOut:
    return AlertOut.model_validate(a, from_attributes=True)


def policy_out(scope: str, row: QueuePolicy | None, t: Thresholds) -> PolicyOut:
    fields = ("wait_limit", "ring_timeout", "yellow_length", "red_length", "yellow_wait", "red_wait")
    return PolicyOut(
        scope=scope,
        overrides={f: getattr(row, f) if row is not None else None for f in fields},
        effective=thresholds_out(t),
        ticket_prefix=row.ticket_prefix if row is not None else None,
    )


def slot_out(slot: AppointmentSlot) -> SlotOut:
    return SlotOut(
        id=slot.id,
        department_id=slot.department_id,
        window_id=slot.window_id,
        starts_at=slot.starts_at,
        ends_at=slot.ends_at,
        capacity=slot.capacity,
        booked=slot.booked,
        available=max(0, slot.capacity - slot.booked),
    )


def appointment_out(v: AppointmentView) -> AppointmentOut:
    a = v.appointment
    return AppointmentOut(
        id=a.id,
        slot_id=a.slot_id,
        case_id=a.case_id,
        matter_id=a.matter_id,
        unit_id=a.unit_id,
        department_id=a.department_id,
        applicant_name=a.applicant_name,
        state=a.state,
        starts_at=v.slot.starts_at,
        ends_at=v.slot.ends_at,
        created_at=a.created_at,
        cancelled_at=a.cancelled_at,
        checked_in_at=a.checked_in_at,
        no_show_at=a.no_show_at,
    )


# -- tickets ----------------------------------------------------------------------------------------------------------


@api.route(
    "POST",
    "/cases/{case_id}/tickets",
    summary="Take a ticket for the case in its department's queue (service-point staff)",
    tags=["queue"],
    response=TicketOut,
    status=201,
)
async def take_ticket(call: Call) -> TicketOut:
    sv, out = call.services, Outbox()
    async with sv.db.transaction() as s:
        t = await sv.queue.take(s, call.me, call.path_int("case_id"), out)
        position = await sv.queue.ticket_view(s, call.me, t.id)
    await sv.queue.publish(out)
    return ticket_out(t, position)


@api.route(
    "GET",
    "/tickets",
    summary="Tickets visible to the caller",
    tags=["queue"],
    query=TicketQuery,
    response=Page[TicketOut],
)
async def list_tickets(call: Call) -> Page[TicketOut]:
    q, sv = call.query, call.services
    states = q.state.split(",") if q.state else None
    if states and set(states) - set(TICKET_STATES):
        raise ValidationFailed("unknown ticket state", code="invalid_query", details={"states": TICKET_STATES})
    async with sv.db.transaction() as s:
        rows, total = await sv.queue.search(s, call.me, states=states, limit=q.limit, offset=q.offset)
        rings = await sv.queue.ring_info(s, rows)
        joined = await sv.queue.joined_info(s, rows)
    return Page[TicketOut](
        items=[ticket_out(t, None, rings.get(t.id), joined.get(t.id)) for t in rows],
        total=total,
        limit=q.limit,
        offset=q.offset,
    )


@api.route(
    "GET",
    "/tickets/{ticket_id}",
    summary="One ticket with its place in line and estimated wait",
    tags=["queue"],
    response=TicketOut,
)
async def get_ticket(call: Call) -> TicketOut:
    sv = call.services
    async with sv.db.transaction() as s:
        view = await sv.queue.ticket_view(s, call.me, call.path_int("ticket_id"))
        rings = await sv.queue.ring_info(s, [view.ticket])
        joined = await sv.queue.joined_info(s, [view.ticket])
    return ticket_out(view.ticket, view, rings.get(view.ticket.id), joined.get(view.ticket.id))


async def _ticket_action(call: Call, action: str) -> TicketOut:
    sv, out = call.services, Outbox()
    ticket_id = call.path_int("ticket_id")
    async with sv.db.transaction() as s:
        t = await getattr(sv.queue, action)(s, call.me, ticket_id, out)
    await sv.queue.publish(out)
    return ticket_out(t)


@api.route(
    "POST",
    "/tickets/{ticket_id}/answer",
    summary="Answer the ring: the point joins the session (service-point staff)",
    tags=["queue"],
    response=TicketCallOut,
)
async def answer_ticket(call: Call) -> TicketCallOut:
    sv, out = call.services, Outbox()
    async with sv.db.transaction() as s:
        t, session_id = await sv.queue.answer(s, call.me, call.path_int("ticket_id"), out)
    await sv.queue.publish(out)
    return TicketCallOut(**ticket_out(t).model_dump(), session_id=session_id)


@api.route(
    "POST",
    "/tickets/{ticket_id}/recall",
    summary="Ring the point again (the calling clerk)",
    tags=["queue"],
    response=TicketCallOut,
)
async def recall_ticket(call: Call) -> TicketCallOut:
    sv, out = call.services, Outbox()
    async with sv.db.transaction() as s:
        called = await sv.queue.recall(s, call.me, call.path_int("ticket_id"), out)
    await sv.queue.publish(out)
    return call_out(called)


@api.route(
    "POST",
    "/tickets/{ticket_id}/skip",
    summary="Skip a called ticket nobody answered: it becomes a no-show (the calling clerk)",
    tags=["queue"],
    response=TicketOut,
)
async def skip_ticket(call: Call) -> TicketOut:
    return await _ticket_action(call, "skip")


@api.route(
    "POST",
    "/tickets/{ticket_id}/absent",
    summary="The applicant never came into the call: back to the line, or a no-show with a reason (the clerk)",
    tags=["queue"],
    body=AbsentBody,
    response=TicketOut,
)
async def ticket_absent(call: Call) -> TicketOut:
    sv, out = call.services, Outbox()
    async with sv.db.transaction() as s:
        t = await sv.queue.absent(s, call.me, call.path_int("ticket_id"), call.body, out)
    await sv.queue.publish(out)
    return ticket_out(t)


@api.route(
    "POST",
    "/tickets/{ticket_id}/complete",
    summary="Finish serving a ticket (the serving clerk)",
    tags=["queue"],
    response=TicketOut,
)
async def complete_ticket(call: Call) -> TicketOut:
    return await _ticket_action(call, "complete")


@api.route(
    "POST",
    "/tickets/{ticket_id}/cancel",
    summary="Give up a waiting or called ticket (service-point staff)",
    tags=["queue"],
    response=TicketOut,
)
async def cancel_ticket(call: Call) -> TicketOut:
    return await _ticket_action(call, "cancel")


@api.route(
    "POST",
    "/tickets/{ticket_id}/transfer",
    summary="Move a ticket to another department's queue, keeping its waiting time (clerk)",
    tags=["queue"],
    body=TransferBody,
    response=TicketOut,
    status=201,
)
async def transfer_ticket(call: Call) -> TicketOut:
    sv, out = call.services, Outbox()
    async with sv.db.transaction() as s:
        t = await sv.queue.transfer(s, call.me, call.path_int("ticket_id"), call.body, out)
        position = await sv.queue.ticket_view(s, call.me, t.id) if _may_see(call, t) else None
    await sv.queue.publish(out)
    return ticket_out(t, position)


def _may_see(call: Call, t: Ticket) -> bool:
    """A clerk who transfers a ticket away cannot read the new one (another department's)."""
    return call.me.department_id in (None, t.department_id)


# -- windows ----------------------------------------------------------------------------------------------------------


@api.route(
    "GET",
    "/windows/{window_id}",
    summary="A cloud window with its clerk and current ticket",
    tags=["windows"],
    response=WindowOut,
)
async def get_window(call: Call) -> WindowOut:
    sv = call.services
    async with sv.db.transaction() as s:
        state = await sv.queue.get_window(s, call.me, call.path_int("window_id"))
    return window_out(state)


async def _window_action(call: Call, action: str, *args: Any) -> WindowOut:
    sv, out = call.services, Outbox()
    window_id = call.path_int("window_id")
    async with sv.db.transaction() as s:
        state = await getattr(sv.queue, action)(s, call.me, window_id, *args, out)
    await sv.queue.publish(out)
    return window_out(state)


@api.route(
    "POST",
    "/windows/{window_id}/sign-in",
    summary="Sign in to a window of your department (clerk)",
    tags=["windows"],
    response=WindowOut,
)
async def sign_in_window(call: Call) -> WindowOut:
    return await _window_action(call, "sign_in")


@api.route(
    "POST",
    "/windows/{window_id}/sign-out",
    summary="Sign out of a window (its clerk, a supervisor)",
    tags=["windows"],
    response=WindowOut,
)
async def sign_out_window(call: Call) -> WindowOut:
    return await _window_action(call, "sign_out")


@api.route(
    "POST", "/windows/{window_id}/pause", summary="Pause calling at a window", tags=["windows"], response=WindowOut
)
async def pause_window(call: Call) -> WindowOut:
    return await _window_action(call, "pause")


@api.route(
    "POST",
    "/windows/{window_id}/resume",
    summary="Resume calling at a paused window",
    tags=["windows"],
    response=WindowOut,
)
async def resume_window(call: Call) -> WindowOut:
    return await _window_action(call, "resume")


@api.route(
    "POST",
    "/windows/{window_id}/tidal",
    summary="Open a tidal window until a given time (supervisor)",
    tags=["windows"],
    body=TidalOpen,
    response=WindowOut,
)
async def open_tidal_window(call: Call) -> WindowOut:
    return await _window_action(call, "open_tidal", call.body)


@api.route(
    "PUT",
    "/windows/{window_id}/matters",
    summary="Set the matters a window serves (supervisor)",
    tags=["windows"],
    body=WindowMatters,
    response=WindowOut,
)
async def set_window_matters(call: Call) -> WindowOut:
    return await _window_action(call, "set_matters", call.body)


@api.route(
    "POST",
    "/windows/{window_id}/call-next",
    summary="Call the next ticket into its case's session and ring the point (204: nobody waits)",
    tags=["windows"],
    response=TicketCallOut,
    also=(204,),
)
async def call_next(call: Call) -> web.StreamResponse | TicketCallOut:
    sv, out = call.services, Outbox()
    async with sv.db.transaction() as s:
        called = await sv.queue.call_next(s, call.me, call.path_int("window_id"), out)
    await sv.queue.publish(out)
    if called is None:
        return web.Response(status=204)
    return call_out(called)


@api.route(
    "GET", "/windows/{window_id}/queue", summary="The line a window calls from", tags=["windows"], response=BoardOut
)
async def window_board(call: Call) -> BoardOut:
    sv = call.services
    async with sv.db.transaction() as s:
        board = await sv.queue.board(s, call.me, None, call.path_int("window_id"))
    return board_out(board)


@api.route(
    "GET",
    "/windows/{window_id}/queue-policy",
    summary="A window's colour thresholds",
    tags=["windows"],
    response=PolicyOut,
)
async def get_window_policy(call: Call) -> PolicyOut:
    sv, window_id = call.services, call.path_int("window_id")
    async with sv.db.transaction() as s:
        state = await sv.queue.get_window(s, call.me, window_id)
        row, limits = await sv.queue.policy(s, call.me, state.window.department_id, window_id)
    return policy_out(f"window:{window_id}", row, limits)


@api.route(
    "PUT",
    "/windows/{window_id}/queue-policy",
    summary="Set a window's own colour thresholds (supervisor)",
    tags=["windows"],
    body=PolicyUpdate,
    response=PolicyOut,
)
async def set_window_policy(call: Call) -> PolicyOut:
    sv, window_id = call.services, call.path_int("window_id")
    async with sv.db.transaction() as s:
        row, limits = await sv.queue.set_policy(s, call.me, None, call.body, window_id)
    return policy_out(row.scope, row, limits)


# -- departments ------------------------------------------------------------------------------------------------------


@api.route(
    "GET",
    "/departments/{department_id}/queue",
    summary="A department's queue board: waiting tickets, positions, estimated waits, colour, windows",
    tags=["queue"],
    response=BoardOut,
)
async def department_board(call: Call) -> BoardOut:
    sv = call.services
    async with sv.db.transaction() as s:
        board = await sv.queue.board(s, call.me, call.path_int("department_id"))
    return board_out(board)


@api.route(
    "GET",
    "/departments/{department_id}/queue-policy",
    summary="A department's queue thresholds",
    tags=["queue"],
    response=PolicyOut,
)
async def get_department_policy(call: Call) -> PolicyOut:
    sv, department_id = call.services, call.path_int("department_id")
    async with sv.db.transaction() as s:
        row, limits = await sv.queue.policy(s, call.me, department_id)
    return policy_out(f"department:{department_id}", row, limits)


@api.route(
    "PUT",
    "/departments/{department_id}/queue-policy",
    summary="Set a department's wait limit, ring timeout, colour thresholds, ticket letter (supervisor)",
    tags=["queue"],
    body=PolicyUpdate,
    response=PolicyOut,
)
async def set_department_policy(call: Call) -> PolicyOut:
    sv = call.services
    async with sv.db.transaction() as s:
        row, limits = await sv.queue.set_policy(s, call.me, call.path_int("department_id"), call.body)
    return policy_out(row.scope, row, limits)


# -- alerts and reports -----------------------------------------------------------------------------------------------


@api.route(
    "GET",
    "/alerts",
    summary="Queue alerts of the departments you supervise",
    tags=["alerts"],
    query=AlertQuery,
    response=Page[AlertOut],
)
async def list_alerts(call: Call) -> Page[AlertOut]:
    q, sv = call.query, call.services
    async with sv.db.transaction() as s:
        rows, total = await sv.queue.alerts(
            s, call.me, department_id=q.department_id, open_only=q.open, kind=q.kind, limit=q.limit, offset=q.offset
        )
    return Page[AlertOut](items=[alert_out(a) for a in rows], total=total, limit=q.limit, offset=q.offset)


@api.route(
    "POST", "/alerts/{alert_id}/ack", summary="Acknowledge an alert (supervisor)", tags=["alerts"], response=AlertOut
)
async def acknowledge_alert(call: Call) -> AlertOut:
    sv = call.services
    async with sv.db.transaction() as s:
        alert = await sv.queue.acknowledge(s, call.me, call.path_int("alert_id"))
    return alert_out(alert)


@api.route(
    "GET",
    "/queue/report",
    summary="Yellow and red warnings and wait timeouts per department and period (supervisor)",
    tags=["alerts"],
    query=ReportQuery,
    response=ReportOut,
)
async def queue_report(call: Call) -> ReportOut:
    q, sv = call.query, call.services
    async with sv.db.transaction() as s:
        rows = await sv.queue.report(s, call.me, q.since, q.until, q.bucket)
    return ReportOut(
        since=q.since,
        until=q.until,
        bucket=q.bucket,
        items=[ReportRowOut.model_validate(r, from_attributes=True) for r in rows],
    )


# -- appointments -----------------------------------------------------------------------------------------------------


@api.route(
    "POST",
    "/departments/{department_id}/slots",
    summary="Publish an appointment slot (supervisor)",
    tags=["appointments"],
    body=SlotCreate,
    response=SlotOut,
    status=201,
)
async def create_slot(call: Call) -> SlotOut:
    sv = call.services
    async with sv.db.transaction() as s:
        slot = await sv.appointments.create_slot(s, call.me, call.path_int("department_id"), call.body)
    return slot_out(slot)


@api.route(
    "GET",
    "/departments/{department_id}/slots",
    summary="A department's appointment slots (default: from now to the booking horizon)",
    tags=["appointments"],
    query=SlotQuery,
    response=Page[SlotOut],
)
async def list_slots(call: Call) -> Page[SlotOut]:
    q, sv = call.query, call.services
    now = sv.clock.now()
    since = q.since or now
    until = q.until or now + timedelta(seconds=sv.appointments.settings.horizon)
    async with sv.db.transaction() as s:
        slots = await sv.appointments.slots(s, call.me, call.path_int("department_id"), since, until)
    return Page[SlotOut](items=[slot_out(x) for x in slots], total=len(slots), limit=len(slots), offset=0)


@api.route(
    "POST",
    "/cases/{case_id}/appointments",
    summary="Book a slot for the case (service-point staff)",
    tags=["appointments"],
    body=BookingCreate,
    response=AppointmentOut,
    status=201,
)
async def book_appointment(call: Call) -> AppointmentOut:
    sv = call.services
    async with sv.db.transaction() as s:
        view = await sv.appointments.book(s, call.me, call.path_int("case_id"), call.body.slot_id)
    return appointment_out(view)


@api.route(
    "GET",
    "/appointments",
    summary="Appointments visible to the caller",
    tags=["appointments"],
    query=AppointmentQuery,
    response=Page[AppointmentOut],
)
async def list_appointments(call: Call) -> Page[AppointmentOut]:
    q, sv = call.query, call.services
    async with sv.db.transaction() as s:
        views, total = await sv.appointments.search(
            s, call.me, state=q.state, case_id=q.case_id, limit=q.limit, offset=q.offset
        )
    return Page[AppointmentOut](items=[appointment_out(v) for v in views], total=total, limit=q.limit, offset=q.offset)


@api.route(
    "GET", "/appointments/{appointment_id}", summary="One appointment", tags=["appointments"], response=AppointmentOut
)
async def get_appointment(call: Call) -> AppointmentOut:
    sv = call.services
    async with sv.db.transaction() as s:
        view = await sv.appointments.load(s, call.me, call.path_int("appointment_id"))
    return appointment_out(view)


@api.route(
    "POST",
    "/appointments/{appointment_id}/cancel",
    summary="Cancel a booking (until the cancellation deadline before the slot)",
    tags=["appointments"],
    response=AppointmentOut,
)
async def cancel_appointment(call: Call) -> AppointmentOut:
    sv = call.services
    async with sv.db.transaction() as s:
        view = await sv.appointments.cancel(s, call.me, call.path_int("appointment_id"))
    return appointment_out(view)


@api.route(
    "POST",
    "/appointments/{appointment_id}/check-in",
    summary="Check in at the service point: the booking becomes a priority ticket",
    tags=["appointments"],
    response=TicketOut,
    status=201,
)
async def check_in_appointment(call: Call) -> TicketOut:
    sv, out = call.services, Outbox()
    async with sv.db.transaction() as s:
        t = await sv.queue.check_in(s, call.me, call.path_int("appointment_id"), out)
        position = await sv.queue.ticket_view(s, call.me, t.id)
    await sv.queue.publish(out)
    return ticket_out(t, position)
