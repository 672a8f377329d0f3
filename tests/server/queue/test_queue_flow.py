"""Tickets through their life: take at a point, call into the case's session, answer, complete; recall, skip,
cancel, ring timeouts, transfer, numbering."""

from __future__ import annotations

from typing import Any

from server.app import Services
from server.clock import FakeClock
from server.services.queue import PolicyUpdate
from tests.server.api.conftest import open_case, png_bytes, upload
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


async def test_take_call_answer_complete(
    as_user: Any, services: Services, notices: RecordingNotifier, clock: FakeClock
) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk")
    case = await open_case(staff, centre_code="D01")
    for item in case["checklist"]:
        await ok(await upload(staff, case["id"], item["code"], png_bytes()), 201)
    await ok(await staff.post(f"/api/v1/cases/{case['id']}/transitions", json={"to": "submitted"}))

    ticket = await ok(await staff.post(f"/api/v1/cases/{case['id']}/tickets"), 201)
    # civil affairs is the district centre's first department: letter A, first of the day.
    assert ticket["number"] == "A001"
    assert ticket["state"] == "waiting"
    assert ticket["position"] == 1
    assert ticket["estimated_wait"] == 300  # no history yet: the configured default service time
    assert ticket["department_id"] == case["department_id"]
    assert "id_hash" not in ticket
    dept = case["department_id"]
    assert notices.of("queue.changed") == [], "boards are coalesced and sent shortly after"
    await services.queue.flush_boards()
    assert notices.of("queue.changed", f"department:{dept}")[-1]["waiting"] == 1
    assert notices.of("queue.position", f"unit:{case['unit_id']}")[-1]["tickets"][0]["position"] == 1

    win = await window_id(services, "D01-MZ-1")
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    notices.clear()
    called = await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
    assert called["id"] == ticket["id"]
    assert called["state"] == "called"
    assert called["window_id"] == win
    # The ring reaches the point's room with the session to join; the session is the case's.
    ring = notices.of("queue.ring", f"unit:{case['unit_id']}")
    assert [r["session_id"] for r in ring] == [called["session_id"]]
    sessions = await ok(await staff.get(f"/api/v1/cases/{case['id']}/sessions"))
    assert [x["id"] for x in sessions["items"]] == [called["session_id"]]
    # A submitted case moves into the session.
    assert (await ok(await staff.get(f"/api/v1/cases/{case['id']}")))["state"] == "in_session"

    clock.advance(20)
    served = await ok(await staff.post(f"/api/v1/tickets/{ticket['id']}/answer"))
    assert served["state"] == "serving"
    assert notices.rooms("queue.answered") == [f"user:{called['clerk_user_id']}"]

    # Busy: no second call while a ticket is in hand.
    await refused(await clerk.post(f"/api/v1/windows/{win}/call-next"), 409, "window_busy")
    clock.advance(400)
    done = await ok(await clerk.post(f"/api/v1/tickets/{ticket['id']}/complete"))
    assert done["state"] == "done"
    assert done["finished_at"] is not None
    await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"), 204)

    audit = await ok(await clerk.get(f"/api/v1/cases/{case['id']}/audit"))
    actions = [e["action"] for e in audit["entries"]]
    for action in ("ticket.taken", "session.opened", "ticket.called", "ticket.answered", "ticket.completed"):
        assert action in actions
    assert audit["verified"]

    # The next ticket's estimate uses the measured service time (420 s from call to finish).
    other = await open_case(staff, centre_code="D01", applicant_id_number="440524198001010013")
    nxt = await ok(await staff.post(f"/api/v1/cases/{other['id']}/tickets"), 201)
    assert nxt["number"] == "A002"
    assert nxt["estimated_wait"] == 420


async def test_window_states_and_empty_queue(as_user: Any, services: Services) -> None:
    clerk, clerk2 = await as_user("clerk"), await as_user("clerk2")
    win = await window_id(services, "D01-MZ-1")
    await refused(await clerk.post(f"/api/v1/windows/{win}/call-next"), 409, "window_not_open")
    # Another department's window.
    await refused(await clerk2.post(f"/api/v1/windows/{win}/sign-in"), 403, "forbidden")
    w = await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    assert (w["state"], w["clerk_user_id"] is not None) == ("open", True)
    # One window per clerk.
    other = await window_id(services, "D01-MZ-2")
    body = await refused(await clerk.post(f"/api/v1/windows/{other}/sign-in"), 409, "already_signed_in")
    assert body["details"]["window_id"] == win
    await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"), 204)
    await ok(await clerk.post(f"/api/v1/windows/{win}/pause"))
    body = await refused(await clerk.post(f"/api/v1/windows/{win}/call-next"), 409, "window_not_open")
    assert body["details"]["state"] == "paused"
    await refused(await clerk.post(f"/api/v1/windows/{win}/pause"), 409, "window_not_open")
    await ok(await clerk.post(f"/api/v1/windows/{win}/resume"))
    await refused(await clerk.post(f"/api/v1/windows/{win}/resume"), 409, "window_not_paused")
    w = await ok(await clerk.post(f"/api/v1/windows/{win}/sign-out"))
    assert (w["state"], w["clerk_user_id"]) == ("closed", None)
    await refused(await clerk.post(f"/api/v1/windows/{win}/call-next"), 409, "window_not_open")
    # An open window someone else is signed in to.
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    await refused(await clerk2.post(f"/api/v1/windows/{win}/call-next"), 409, "not_signed_in")


async def test_ring_timeout_puts_the_ticket_back_at_the_head(
    as_user: Any, services: Services, notices: RecordingNotifier, clock: FakeClock
) -> None:
    first, second = await seed_tickets(services, 1), None
    clock.advance(30)
    second = (await seed_tickets(services, 1, start=1))[0]
    clerk = await as_user("clerk")
    win = await window_id(services, "D01-MZ-1")
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    called = await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
    assert called["id"] == first[0]

    clock.advance(59)
    await services.queue.scan()
    assert (await tickets(services))[first[0]].state == "called"
    clock.advance(1)
    out = await services.queue.scan()
    assert out.counts == {"unanswered": 1}
    t = (await tickets(services))[first[0]]
    assert (t.state, t.window_id, t.unanswered) == ("waiting", None, 1)
    told = notices.of("queue.unanswered", f"user:{called['clerk_user_id']}")
    assert [x["ticket"]["id"] for x in told] == [first[0]]
    # Back at the head, ahead of the ticket taken after it.
    again = await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
    assert again["id"] == first[0]
    assert again["id"] != second

    # Recall rings again with a fresh deadline; skip makes it a no-show and frees the window.
    clock.advance(50)
    recalled = await ok(await clerk.post(f"/api/v1/tickets/{first[0]}/recall"))
    assert recalled["session_id"] == again["session_id"]
    clock.advance(50)
    await services.queue.scan()
    assert (await tickets(services))[first[0]].state == "called"
    skipped = await ok(await clerk.post(f"/api/v1/tickets/{first[0]}/skip"))
    assert (skipped["state"], skipped["end_reason"]) == ("no_show", "skipped")
    nxt = await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
    assert nxt["id"] == second


async def test_rings_unanswered_too_often_become_a_no_show(as_user: Any, services: Services, clock: FakeClock) -> None:
    (tid,) = await seed_tickets(services, 1)
    clerk = await as_user("clerk")
    win = await window_id(services, "D01-MZ-1")
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    for round_ in range(1, 4):
        await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
        clock.advance(60)
        await services.queue.scan()
        t = (await tickets(services))[tid]
        assert t.unanswered == round_
    assert (t.state, t.end_reason) == ("no_show", "unanswered")
    await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"), 204)


async def test_cancel_by_the_point(as_user: Any, services: Services, notices: RecordingNotifier) -> None:
    (tid,) = await seed_tickets(services, 1)
    staff, staff2 = await as_user("staff"), await as_user("staff2")
    await refused(await staff2.post(f"/api/v1/tickets/{tid}/cancel"), 404, "ticket_not_found")
    clerk = await as_user("clerk")
    win = await window_id(services, "D01-MZ-1")
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    called = await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
    gone = await ok(await staff.post(f"/api/v1/tickets/{tid}/cancel"))
    assert gone["state"] == "cancelled"
    assert notices.rooms("queue.cancelled") == [f"user:{called['clerk_user_id']}"]
    await refused(await staff.post(f"/api/v1/tickets/{tid}/cancel"), 409, "illegal_ticket_state")
    # The person may queue again for the matter once the ticket is no longer active.
    t = (await tickets(services))[tid]
    resp = await staff.post(f"/api/v1/cases/{t.case_id}/tickets")
    assert resp.status == 201


async def test_transfer_keeps_the_waiting_time(as_user: Any, services: Services, clock: FakeClock) -> None:
    # t0: a ticket at the district's civil affairs; t0+300: a walk-in at the town's civil affairs.
    (moved,) = await seed_tickets(services, 1, centre="D01")
    clock.advance(300)
    (local,) = await seed_tickets(services, 1, start=1, centre="T01")
    clerk, clerk_t1 = await as_user("clerk"), await as_user("clerk_t1")
    win = await window_id(services, "D01-MZ-1")
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
    town = await department_id(services, "T01", "civil_affairs")

    clock.advance(60)
    new = await ok(await clerk.post(f"/api/v1/tickets/{moved}/transfer", json={"department_id": town}), 201)
    rows = await tickets(services)
    old = rows[moved]
    assert (old.state, old.end_reason) == ("transferred", "transferred")
    assert new["department_id"] == town
    assert new["state"] == "waiting"
    assert new["transferred_from_id"] == moved
    assert rows[new["id"]].waiting_since == old.waiting_since
    assert new["number"] == "A002"  # the town's civil affairs: its first letter, its second ticket of the day
    # The old clerk's window is free; the case now belongs to the town department.
    await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"), 204)
    await refused(await clerk.get(f"/api/v1/tickets/{new['id']}"), 404, "ticket_not_found")

    twin = await window_id(services, "T01-MZ-1")
    await ok(await clerk_t1.post(f"/api/v1/windows/{twin}/sign-in"))
    first = await ok(await clerk_t1.post(f"/api/v1/windows/{twin}/call-next"))
    assert first["id"] == new["id"], "the transferred ticket waited longer than the local walk-in"
    assert rows[local].state == "waiting"
    await refused(
        await clerk_t1.post(f"/api/v1/tickets/{first['id']}/transfer", json={"department_id": town}),
        422,
        "transfer_same_department",
    )


async def test_numbers_restart_each_local_day(services: Services, clock: FakeClock) -> None:
    a = await seed_tickets(services, 2)
    rows = await tickets(services)
    assert [rows[i].number for i in a] == ["A001", "A002"]
    # 09:00 UTC is 17:00 in Shanghai: seven hours later it is the next local day.
    clock.advance(7 * 3600)
    (b,) = await seed_tickets(services, 1, start=2)
    assert (await tickets(services))[b].number == "A001"
    # A department's own letter overrides the default.
    supervisor = await principal(services, "supervisor")
    async with services.db.transaction() as s:
        await services.queue.set_policy(s, supervisor, rows[a[0]].department_id, PolicyUpdate(ticket_prefix="MZ"))
    (c,) = await seed_tickets(services, 1, start=3)
    assert (await tickets(services))[c].number == "MZ002"


async def test_a_closed_case_leaves_the_line(as_user: Any, services: Services, notices: RecordingNotifier) -> None:
    first, second = await seed_tickets(services, 2)
    staff = await as_user("staff")
    rows = await tickets(services)
    await ok(await staff.post(f"/api/v1/cases/{rows[first].case_id}/transitions", json={"to": "cancelled"}))
    # The ticket leaves the line in the same transaction as the case move (the scanner has nothing left to do).
    assert (await services.queue.scan()).counts.get("case_closed") is None
    rows = await tickets(services)
    assert (rows[first].state, rows[first].end_reason) == ("cancelled", "case_closed")
    assert [n["ticket"]["id"] for n in notices.of("queue.cancelled", f"unit:{rows[first].unit_id}")] == [first]
    clerk = await as_user("clerk")
    win = await window_id(services, "D01-MZ-1")
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    assert (await ok(await clerk.post(f"/api/v1/windows/{win}/call-next")))["id"] == second


async def test_org_tree_shows_each_windows_clerk_state_and_matters(as_user: Any, services: Services) -> None:
    clerk, supervisor = await as_user("clerk"), await as_user("supervisor")
    win = await window_id(services, "D01-MZ-1")

    def of(org: dict[str, Any]) -> dict[str, Any]:
        return next(w for w in org["windows"] if w["id"] == win)

    before = of(await ok(await clerk.get("/api/v1/org")))
    assert before["state"] == "closed" and before["clerk_user_id"] is None and before["clerk_name"] is None
    assert before["tidal"] is False and before["closes_at"] is None
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    path = f"/api/v1/windows/{win}/matters"
    await ok(await supervisor.client.put(path, json={"matter_codes": ["MZ-001"]}, headers=supervisor.headers))
    after = of(await ok(await clerk.get("/api/v1/org")))
    me = await principal(services, "clerk")
    assert after["state"] == "open"
    assert after["clerk_user_id"] == me.user_id and after["clerk_name"] == me.display_name
    assert after["signed_in_at"] is not None
    assert after["matter_codes"] == ["MZ-001"]
    others = [w for w in (await ok(await clerk.get("/api/v1/org")))["windows"] if w["id"] != win]
    assert all(w["clerk_user_id"] is None for w in others)
