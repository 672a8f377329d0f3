"""Appointments: the 10-day horizon, the 3-hour cancellation deadline, no-shows and the 30-day ban, real-name and
capacity rules, and checked-in appointments called before walk-ins."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from server.app import Services
from server.clock import FakeClock
from server.errors import ApiError
from server.services.appointments import SlotCreate
from server.services.queue import Outbox
from server.storage.models import Appointment
from tests.server.queue.conftest import (
    department_id,
    ok,
    principal,
    refused,
    seed_cases,
    seed_tickets,
    tickets,
    window_id,
)

HOUR = 3600
DAY = 24 * HOUR


async def make_slot(
    services: Services, clock: FakeClock, starts_in: float, *, length: float = 1800, capacity: int = 5
) -> int:
    supervisor = await principal(services, "supervisor")
    dept = await department_id(services, "D01", "civil_affairs")
    start = clock.now() + timedelta(seconds=starts_in)
    async with services.db.transaction() as s:
        slot = await services.appointments.create_slot(
            s,
            supervisor,
            dept,
            SlotCreate(starts_at=start, ends_at=start + timedelta(seconds=length), capacity=capacity),
        )
    return slot.id


async def book(services: Services, case_id: int, slot_id: int, staff: str = "staff") -> Appointment:
    who = await principal(services, staff)
    async with services.db.transaction() as s:
        return (await services.appointments.book(s, who, case_id, slot_id)).appointment


async def booking_refused(services: Services, case_id: int, slot_id: int) -> str:
    with pytest.raises(ApiError) as caught:
        await book(services, case_id, slot_id)
    return caught.value.code


async def test_booking_horizon(as_user: Any, services: Services, clock: FakeClock) -> None:
    staff = await as_user("staff")
    (case,) = await seed_cases(services, 1)
    beyond = await make_slot(services, clock, 10 * DAY + 1)
    edge = await make_slot(services, clock, 10 * DAY)
    inside = await make_slot(services, clock, 9 * DAY)
    body = await refused(
        await staff.post(f"/api/v1/cases/{case}/appointments", json={"slot_id": beyond}), 422, "booking_beyond_horizon"
    )
    assert body["details"]["horizon_seconds"] == 10 * DAY
    booked = await ok(await staff.post(f"/api/v1/cases/{case}/appointments", json={"slot_id": edge}), 201)
    assert booked["state"] == "booked"
    await ok(await staff.post(f"/api/v1/appointments/{booked['id']}/cancel"))
    await ok(await staff.post(f"/api/v1/cases/{case}/appointments", json={"slot_id": inside}), 201)
    # The slot list shows what is left.
    dept = await department_id(services, "D01", "civil_affairs")
    slots = await ok(await staff.get(f"/api/v1/departments/{dept}/slots"))
    left = {x["id"]: x["available"] for x in slots["items"]}
    assert left == {edge: 5, inside: 4}, "the beyond-horizon slot is not listed; the cancelled place is free again"


async def test_cancellation_until_three_hours_before(as_user: Any, services: Services, clock: FakeClock) -> None:
    staff = await as_user("staff")
    early, late = await seed_cases(services, 2)
    slot = await make_slot(services, clock, 3 * HOUR + 10 * 60)
    first = await ok(await staff.post(f"/api/v1/cases/{early}/appointments", json={"slot_id": slot}), 201)
    second = await ok(await staff.post(f"/api/v1/cases/{late}/appointments", json={"slot_id": slot}), 201)
    clock.advance(9 * 60)  # 3 h 1 min before the slot
    assert (await ok(await staff.post(f"/api/v1/appointments/{first['id']}/cancel")))["state"] == "cancelled"
    clock.advance(2 * 60)  # 2 h 59 min before
    body = await refused(await staff.post(f"/api/v1/appointments/{second['id']}/cancel"), 409, "cancellation_too_late")
    assert body["details"]["deadline"]
    assert (await ok(await staff.get(f"/api/v1/appointments/{second['id']}")))["state"] == "booked"
    await refused(await staff.post(f"/api/v1/appointments/{first['id']}/cancel"), 409, "illegal_appointment_state")


async def test_no_show_bars_the_id_number_for_thirty_days(services: Services, clock: FakeClock) -> None:
    (case,) = await seed_cases(services, 1)
    slot = await make_slot(services, clock, HOUR, length=1800)
    booking = await book(services, case, slot)
    clock.advance(HOUR + 1800 + 900 - 1)  # slot end + grace - 1 s
    await services.queue.scan()
    async with services.db.transaction() as s:
        row = await s.get(Appointment, booking.id)
        assert row is not None and row.state == "booked"
    clock.advance(1)
    assert (await services.queue.scan()).counts.get("no_shows") == 1
    async with services.db.transaction() as s:
        row = await s.get(Appointment, booking.id)
        assert row is not None and (row.state, row.no_show_at) == ("no_show", clock.now())

    assert await booking_refused(services, case, await make_slot(services, clock, DAY)) == "booking_banned"
    # Another case of the same person, another matter: still barred.
    (other,) = await seed_cases(services, 1, matter="MZ-002")
    clock.advance(30 * DAY - 1)
    assert await booking_refused(services, other, await make_slot(services, clock, DAY)) == "booking_banned"
    clock.advance(1)
    assert (await book(services, other, await make_slot(services, clock, DAY))).state == "booked"


async def test_one_active_booking_per_matter_per_id_number(as_user: Any, services: Services, clock: FakeClock) -> None:
    staff = await as_user("staff")
    (case,) = await seed_cases(services, 1)
    (same_person,) = await seed_cases(services, 1)  # same ID number (seed index 0), same matter
    (other_matter,) = await seed_cases(services, 1, matter="MZ-002")
    slot = await make_slot(services, clock, DAY)
    await ok(await staff.post(f"/api/v1/cases/{case}/appointments", json={"slot_id": slot}), 201)
    for again in (case, same_person):
        await refused(
            await staff.post(f"/api/v1/cases/{again}/appointments", json={"slot_id": slot}),
            409,
            "booking_already_active",
        )
    await ok(await staff.post(f"/api/v1/cases/{other_matter}/appointments", json={"slot_id": slot}), 201)


async def test_capacity_holds_under_concurrent_bookings(as_user: Any, services: Services, clock: FakeClock) -> None:
    staff = await as_user("staff")
    cases = await seed_cases(services, 6)
    slot = await make_slot(services, clock, DAY, capacity=2)
    responses = await asyncio.gather(
        *(staff.post(f"/api/v1/cases/{c}/appointments", json={"slot_id": slot}) for c in cases)
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [201, 201, 409, 409, 409, 409]
    assert {(await r.json())["code"] for r in responses if r.status == 409} == {"slot_full"}
    dept = await department_id(services, "D01", "civil_affairs")
    slots = await ok(await staff.get(f"/api/v1/departments/{dept}/slots"))
    assert [(x["booked"], x["available"]) for x in slots["items"]] == [(2, 0)]


async def test_checked_in_appointments_are_called_before_walk_ins(
    as_user: Any, services: Services, clock: FakeClock
) -> None:
    (walk_in,) = await seed_tickets(services, 1, start=10)
    later_case, earlier_case = await seed_cases(services, 2)
    later = await book(services, later_case, await make_slot(services, clock, 40 * 60))
    earlier = await book(services, earlier_case, await make_slot(services, clock, 30 * 60))
    staff = await principal(services, "staff")
    early = await make_slot(services, clock, 3 * HOUR)
    (too_early_case,) = await seed_cases(services, 1, start=5)
    too_early = await book(services, too_early_case, early)

    clock.advance(10 * 60)
    with pytest.raises(ApiError) as caught:
        async with services.db.transaction() as s:
            await services.queue.check_in(s, staff, too_early.id, Outbox())
    assert caught.value.code == "check_in_too_early"
    issued = {}
    for booking in (later, earlier):  # the later slot checks in first
        async with services.db.transaction() as s:
            issued[booking.id] = await services.queue.check_in(s, staff, booking.id, Outbox())
    assert {t.priority for t in issued.values()} == {0}
    async with services.db.transaction() as s:
        row = await s.get(Appointment, later.id)
        assert row is not None and row.state == "checked_in"

    clerk = await as_user("clerk")
    win = await window_id(services, "D01-MZ-1")
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    order = []
    for _ in range(3):
        called = await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
        order.append(called["id"])
        await ok(await clerk.post(f"/api/v1/tickets/{called['id']}/skip"))
    assert order == [issued[earlier.id].id, issued[later.id].id, walk_in]
    # A checked-in booking is a ticket now: the real-name rule holds across both.
    assert (await tickets(services))[issued[later.id].id].appointment_id == later.id
