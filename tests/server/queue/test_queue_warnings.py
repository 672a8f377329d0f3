"""Warnings: the 15-minute wait alert exactly once (across scans, restarts and concurrent scanners), yellow/red
status changes and their report, alert visibility and acknowledgement, tidal windows closing themselves."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from server.app import Services, build_services
from server.clock import FakeClock
from server.services.queue import Outbox, PolicyUpdate
from server.settings import QueueSettings, Settings
from server.storage.models import Alert, QueueStatusChange, Window
from tests.server.queue.conftest import (
    RecordingNotifier,
    department_id,
    ok,
    principal,
    refused,
    seed_tickets,
    tickets,
    window_id,
)


async def _alerts(services: Services, kind: str = "wait_timeout") -> list[Alert]:
    async with services.db.transaction() as s:
        stmt = select(Alert).where(Alert.kind == kind).order_by(Alert.id)
        return list((await s.execute(stmt)).scalars().all())


def _waits(notices: RecordingNotifier, room: str | None = None) -> list[dict[str, Any]]:
    return [a for a in notices.of("queue.alert", room) if a["kind"] == "wait_timeout"]


async def test_wait_timeout_alert_exactly_once(
    services: Services,
    notices: RecordingNotifier,
    clock: FakeClock,
    settings: Settings,
    queue_settings: QueueSettings,
) -> None:
    ids = await seed_tickets(services, 3)
    dept = (await tickets(services))[ids[0]].department_id
    supervisor = await principal(services, "supervisor")

    clock.advance(899)
    assert "wait_alerts" not in (await services.queue.scan()).counts
    clock.advance(1)
    assert (await services.queue.scan()).counts["wait_alerts"] == 3
    alerts = await _alerts(services)
    assert sorted(a.ticket_id or 0 for a in alerts) == ids
    assert {(a.kind, a.level, a.department_id) for a in alerts} == {("wait_timeout", "red", dept)}
    # To the department's room and to the supervisor of its centre, once per ticket.
    waits = _waits(notices, f"department:{dept}")
    assert len(waits) == 3
    assert len(_waits(notices, f"user:{supervisor.user_id}")) == 3
    assert {a["details"]["waited"] for a in waits} == {900}

    notices.clear()
    clock.advance(600)
    assert "wait_alerts" not in (await services.queue.scan()).counts
    assert _waits(notices) == []

    # A restarted server (a new application over the same database) finds nothing left to send ...
    restarted = build_services(settings, clock, queue_settings)
    again = RecordingNotifier()
    restarted.queue.notifier = again
    try:
        await restarted.queue.scan()
        # ... and two scanners at once (two processes) add nothing either.
        await asyncio.gather(restarted.queue.scan(), services.queue.scan(), restarted.queue.scan())
        assert _waits(again) == [] and _waits(notices) == []
        assert len(await _alerts(services)) == 3

        # Tickets that fall due while no scanner runs are alerted by the next one, once.
        more = await seed_tickets(services, 2, start=10)
        clock.advance(1200)
        outs = await asyncio.gather(restarted.queue.scan(), services.queue.scan())
        assert sum(o.counts.get("wait_alerts", 0) for o in outs) == 2
        assert sorted(a.ticket_id or 0 for a in await _alerts(services))[3:] == more
        assert len(_waits(again, f"department:{dept}") + _waits(notices, f"department:{dept}")) == 2
    finally:
        await restarted.queue.close()
        await restarted.store.close()
        await restarted.db.close()


async def test_a_ticket_called_in_time_raises_no_alert(as_user: Any, services: Services, clock: FakeClock) -> None:
    (tid,) = await seed_tickets(services, 1)
    clerk = await as_user("clerk")
    win = await window_id(services, "D01-MZ-1")
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    clock.advance(840)
    await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
    staff = await as_user("staff")
    await ok(await staff.post(f"/api/v1/tickets/{tid}/answer"))
    clock.advance(3600)
    await services.queue.scan()
    assert await _alerts(services) == []


async def test_yellow_red_transitions_and_their_report(
    as_user: Any, services: Services, notices: RecordingNotifier, clock: FakeClock
) -> None:
    start = clock.now()
    supervisor = await principal(services, "supervisor")
    staff = await principal(services, "staff")
    dept = await department_id(services, "D01", "civil_affairs")
    async with services.db.transaction() as s:
        await services.queue.set_policy(
            s,
            supervisor,
            dept,
            PolicyUpdate(yellow_length=2, red_length=3, yellow_wait=0, red_wait=0, wait_limit=7200),
        )

    async def colours() -> list[tuple[str, str]]:
        async with services.db.transaction() as s:
            rows = (await s.execute(select(QueueStatusChange).order_by(QueueStatusChange.id))).scalars().all()
            return [(r.from_colour, r.to_colour) for r in rows if r.window_id is None]

    ids = await seed_tickets(services, 1)
    await services.queue.scan()
    assert await colours() == []
    ids += await seed_tickets(services, 1, start=1)
    assert (await services.queue.scan()).counts == {"status_changes": 1, "status_alerts": 1}
    ids += await seed_tickets(services, 1, start=2)
    await services.queue.scan()
    await services.queue.scan()
    assert await colours() == [("green", "yellow"), ("yellow", "red")]
    assert [(a["kind"], a["level"]) for a in notices.of("queue.alert", f"user:{supervisor.user_id}")] == [
        ("status", "yellow"),
        ("status", "red"),
    ]
    async with services.db.transaction() as s:
        for tid in ids[:2]:
            await services.queue.cancel(s, staff, tid, Outbox())
    await services.queue.scan()
    assert await colours() == [("green", "yellow"), ("yellow", "red"), ("red", "green")]
    assert len(notices.of("queue.alert")) == 4  # going back to green is a status change, not an alert

    # Waiting time: the remaining ticket turns the queue yellow at 10 minutes and red at 20.
    async with services.db.transaction() as s:
        await services.queue.set_policy(
            s, supervisor, dept, PolicyUpdate(yellow_length=0, red_length=0, yellow_wait=600, red_wait=1200)
        )
    clock.advance(599)
    await services.queue.scan()
    assert (await colours())[-1] == ("red", "green")
    clock.advance(1)
    await services.queue.scan()
    clock.advance(600)
    await services.queue.scan()
    assert (await colours())[3:] == [("green", "yellow"), ("yellow", "red")]

    # A window with thresholds of its own gets a colour of its own (not counted in department reports).
    win = await window_id(services, "D01-MZ-1")
    async with services.db.transaction() as s:
        await services.queue.set_policy(s, supervisor, None, PolicyUpdate(yellow_length=1), win)
    await services.queue.scan()
    async with services.db.transaction() as s:
        window_changes = (await s.execute(select(func.count()).where(QueueStatusChange.window_id == win))).scalar_one()
    assert window_changes == 1

    sup = await as_user("supervisor")
    until = (clock.now() + timedelta(hours=1)).isoformat()
    report = await ok(
        await sup.get("/api/v1/queue/report", params={"since": start.isoformat(), "until": until, "bucket": "day"})
    )
    assert report["items"] == [
        {"department_id": dept, "period": "2026-11-24", "yellow": 2, "red": 2, "wait_timeouts": 0}
    ]
    board = await ok(await sup.get(f"/api/v1/departments/{dept}/queue"))
    assert (board["colour"], board["waiting"], board["longest_wait"]) == ("red", 1, 1200)
    assert board["thresholds"]["yellow_wait"] == 600


async def test_alerts_are_for_the_supervisors_of_the_department(
    as_user: Any, services: Services, clock: FakeClock
) -> None:
    await seed_tickets(services, 1, centre="D01")
    await seed_tickets(services, 1, start=1, centre="T01")
    clock.advance(900)
    await services.queue.scan()
    district, town, clerk = await as_user("supervisor"), await as_user("supervisor_t1"), await as_user("clerk")
    waits = {"kind": "wait_timeout"}
    everything = await ok(await district.get("/api/v1/alerts", params=waits))
    assert everything["total"] == 2
    mine = await ok(await town.get("/api/v1/alerts", params=waits))
    assert mine["total"] == 1
    town_dept = await department_id(services, "T01", "civil_affairs")
    assert mine["items"][0]["department_id"] == town_dept
    await refused(await clerk.get("/api/v1/alerts"), 403, "forbidden")

    other = next(a for a in everything["items"] if a["department_id"] != town_dept)
    await refused(await town.post(f"/api/v1/alerts/{other['id']}/ack"), 404, "alert_not_found")
    acked = await ok(await town.post(f"/api/v1/alerts/{mine['items'][0]['id']}/ack"))
    assert acked["acknowledged_at"] is not None
    clock.advance(5)
    again = await ok(await district.post(f"/api/v1/alerts/{acked['id']}/ack"))
    assert (again["acknowledged_at"], again["acknowledged_by"]) == (acked["acknowledged_at"], acked["acknowledged_by"])
    still_open = await ok(await district.get("/api/v1/alerts", params={**waits, "open": "true"}))
    assert [a["id"] for a in still_open["items"]] == [other["id"]]


async def test_tidal_window_closes_itself_after_finishing_its_ticket(
    as_user: Any, services: Services, notices: RecordingNotifier, clock: FakeClock
) -> None:
    supervisor, town_supervisor = await as_user("supervisor"), await as_user("supervisor_t1")
    clerk, staff = await as_user("clerk"), await as_user("staff")
    win = await window_id(services, "D01-MZ-2")
    until = clock.now() + timedelta(hours=1)
    body = {"until": until.isoformat(), "matter_codes": ["MZ-001"]}
    await refused(await town_supervisor.post(f"/api/v1/windows/{win}/tidal", json=body), 403, "forbidden")
    past = {"until": (clock.now() - timedelta(minutes=1)).isoformat()}
    await refused(await supervisor.post(f"/api/v1/windows/{win}/tidal", json=past), 422, "invalid_tidal_period")
    opened = await ok(await supervisor.post(f"/api/v1/windows/{win}/tidal", json=body))
    assert (opened["state"], opened["tidal"], opened["matter_codes"]) == ("open", True, ["MZ-001"])

    (tid,) = await seed_tickets(services, 1)
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
    await ok(await staff.post(f"/api/v1/tickets/{tid}/answer"))

    clock.advance(3600)
    await services.queue.scan()
    async with services.db.transaction() as s:
        window = await s.get(Window, win)
        assert window is not None and (window.state, window.tidal) == ("open", True)
    clerk = await as_user("clerk")
    done = await ok(await clerk.post(f"/api/v1/tickets/{tid}/complete"))
    assert done["state"] == "done"
    closed = await ok(await clerk.get(f"/api/v1/windows/{win}"))
    assert (closed["state"], closed["tidal"], closed["closes_at"], closed["clerk_user_id"]) == (
        "closed",
        False,
        None,
        None,
    )
    assert notices.rooms("queue.window_closed") == [f"user:{done['clerk_user_id']}"]

    # An idle tidal window closes on the scan after its end; until then it calls nobody.
    supervisor = await as_user("supervisor")
    soon = {"until": (clock.now() + timedelta(minutes=10)).isoformat()}
    await ok(await supervisor.post(f"/api/v1/windows/{win}/tidal", json=soon))
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    await seed_tickets(services, 1, start=1)
    clock.advance(600)
    body = await refused(await clerk.post(f"/api/v1/windows/{win}/call-next"), 409, "window_not_open")
    assert body["details"]["state"] == "closing"
    assert (await services.queue.scan()).counts.get("tidal_closed") == 1
    assert (await ok(await clerk.get(f"/api/v1/windows/{win}")))["state"] == "closed"
