"""The combined ticket × case × session state machine (server/services/callflow.py, docs/architecture.md).

Every case move from every reachable combination of case state, ticket state
and call (with and without the applicant side having joined) goes through
the REST API; so does every ticket move from every ticket state.  Each row
says what the move must do to all three.  Joins are real Socket.IO
``session.join``s (no media needed): the signalling layer's join callback
is what records "the applicant joined".  Both database engines run every row
(the ``db_url`` fixture).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from server.app import Services
from server.clock import FakeClock
from server.services.cases import STATES, Transition
from tests.conftest import Session
from tests.server.api.conftest import open_case, png_bytes, upload
from tests.server.queue.conftest import RecordingNotifier, department_id, id_number, ok, principal, window_id
from tests.server.test_realtime import Peer

#: The case's own legal moves and who makes them (the case alone, before the ticket and call are considered).
CASE_MOVES: dict[tuple[str, str], str] = {
    ("draft", "submitted"): "staff",
    ("draft", "cancelled"): "staff",
    ("submitted", "cancelled"): "staff",
    ("submitted", "in_session"): "clerk",
    ("submitted", "accepted"): "clerk",
    ("submitted", "rejected"): "clerk",
    ("in_session", "submitted"): "clerk",
    ("in_session", "accepted"): "clerk",
    ("in_session", "rejected"): "clerk",
    ("accepted", "completed"): "clerk",
}

#: Arrangement → (case state, ticket state or None, call session open, applicant side joined).
ARRANGEMENTS: dict[str, tuple[str, str | None, bool, bool]] = {
    "draft": ("draft", None, False, False),
    "draft+waiting": ("draft", "waiting", False, False),
    "draft+called": ("draft", "called", True, False),
    "submitted": ("submitted", None, False, False),
    "submitted+waiting": ("submitted", "waiting", False, False),
    "in_session+waiting": ("in_session", "waiting", False, False),
    "in_session+called": ("in_session", "called", True, False),
    "in_session+called+joined": ("in_session", "called", True, True),
    "in_session+serving": ("in_session", "serving", True, False),
    "in_session+serving+joined": ("in_session", "serving", True, True),
    "in_session+call": ("in_session", None, True, False),
    "in_session+call+joined": ("in_session", None, True, True),
    "accepted": ("accepted", None, True, True),
    "rejected": ("rejected", None, True, True),
    "completed": ("completed", None, True, True),
    "cancelled": ("cancelled", None, False, False),
}

NOT_JOINED = "applicant_not_joined"


@dataclass(frozen=True)
class Then:
    """A case move's outcome: refused with ``code``, or the case's and the ticket's states after it."""

    code: str | None = None
    case: str | None = None
    #: The ticket's state after the move (None: the case has no ticket).
    ticket: str | None = None
    #: The ring (the ticket was ``called``) is withdrawn from the point: ``queue.ring_ended`` to its unit.
    ring_ended: bool = False


def refused(code: str) -> Then:
    return Then(code=code)


#: Every legal case move from every arrangement; every other (arrangement, target) is ``illegal_transition``.
CASE_TABLE: dict[tuple[str, str], Then] = {
    ("draft", "submitted"): Then(case="submitted"),
    ("draft", "cancelled"): Then(case="cancelled"),
    ("draft+waiting", "submitted"): Then(case="submitted", ticket="waiting"),
    ("draft+waiting", "cancelled"): Then(case="cancelled", ticket="cancelled"),
    # A draft case can be queued and called: submitting it during the call keeps the call.
    ("draft+called", "submitted"): Then(case="submitted", ticket="called"),
    ("draft+called", "cancelled"): Then(case="cancelled", ticket="cancelled", ring_ended=True),
    ("submitted", "cancelled"): Then(case="cancelled"),
    ("submitted", "in_session"): Then(case="in_session"),
    ("submitted", "accepted"): Then(case="accepted"),
    ("submitted", "rejected"): Then(case="rejected"),
    ("submitted+waiting", "cancelled"): Then(case="cancelled", ticket="cancelled"),
    ("submitted+waiting", "in_session"): Then(case="in_session", ticket="waiting"),
    ("submitted+waiting", "accepted"): Then(case="accepted", ticket="cancelled"),
    ("submitted+waiting", "rejected"): Then(case="rejected", ticket="cancelled"),
    ("in_session+waiting", "submitted"): Then(case="submitted", ticket="waiting"),
    ("in_session+waiting", "accepted"): Then(case="accepted", ticket="cancelled"),
    ("in_session+waiting", "rejected"): Then(case="rejected", ticket="cancelled"),
    # Back to the line: the ticket waits again at its place, the ring is withdrawn.
    ("in_session+called", "submitted"): Then(case="submitted", ticket="waiting", ring_ended=True),
    ("in_session+called", "accepted"): refused(NOT_JOINED),
    ("in_session+called", "rejected"): refused(NOT_JOINED),
    # Joined the media but never answered the ring: still no decision.
    ("in_session+called+joined", "submitted"): Then(case="submitted", ticket="waiting", ring_ended=True),
    ("in_session+called+joined", "accepted"): refused(NOT_JOINED),
    ("in_session+called+joined", "rejected"): refused(NOT_JOINED),
    # Answered, but nobody from the point came into the call (the reported defect).
    ("in_session+serving", "submitted"): Then(case="submitted", ticket="waiting"),
    ("in_session+serving", "accepted"): refused(NOT_JOINED),
    ("in_session+serving", "rejected"): refused(NOT_JOINED),
    ("in_session+serving+joined", "submitted"): Then(case="submitted", ticket="waiting"),
    ("in_session+serving+joined", "accepted"): Then(case="accepted", ticket="done"),
    ("in_session+serving+joined", "rejected"): Then(case="rejected", ticket="done"),
    # A call without a ticket (opened from the case): the same rule.
    ("in_session+call", "submitted"): Then(case="submitted"),
    ("in_session+call", "accepted"): refused(NOT_JOINED),
    ("in_session+call", "rejected"): refused(NOT_JOINED),
    ("in_session+call+joined", "submitted"): Then(case="submitted"),
    ("in_session+call+joined", "accepted"): Then(case="accepted"),
    ("in_session+call+joined", "rejected"): Then(case="rejected"),
    ("accepted", "completed"): Then(case="completed"),
}


def expected(arrangement: str, to: str) -> Then:
    then = CASE_TABLE.get((arrangement, to))
    if then is not None:
        return then
    case_state = ARRANGEMENTS[arrangement][0]
    assert (case_state, to) not in CASE_MOVES, f"row missing for a legal move: {arrangement} → {to}"
    return refused("illegal_transition")


@dataclass
class Arranged:
    case_id: int
    ticket_id: int | None = None
    session_id: int | None = None


@dataclass
class World:
    client: Any
    services: Services
    notices: RecordingNotifier
    staff: Session
    clerk: Session
    window: int
    peers: list[Peer] = field(default_factory=list)
    n: int = 0

    async def clear(self) -> None:
        """End every ticket still holding a place, so the next call-next calls the next arrangement's ticket."""
        page = await ok(await self.staff.get("/api/v1/tickets?state=waiting,called,serving&limit=100"))
        for t in page["items"]:
            if t["state"] == "serving":
                body = {"outcome": "no_show", "reason": "test cleanup"}
                await ok(await self.clerk.post(f"/api/v1/tickets/{t['id']}/absent", json=body))
            else:
                await ok(await self.staff.post(f"/api/v1/tickets/{t['id']}/cancel"))

    async def join(self, session: Session, session_id: int) -> None:
        peer = Peer(self.client, session.token)
        await peer.connect()
        self.peers.append(peer)
        ack = await peer.call("session.join", {"session_id": session_id})
        assert ack["ok"], ack

    async def move(self, who: Session, case_id: int, to: str, reason: str | None = None) -> Any:
        body: dict[str, Any] = {"to": to}
        if to == "rejected":
            body["reason"] = reason or "材料不全"
        return await who.post(f"/api/v1/cases/{case_id}/transitions", json=body)

    async def arrange(self, name: str) -> Arranged:
        case_state, ticket, call, joined = ARRANGEMENTS[name]
        await self.clear()
        self.n += 1
        case = await open_case(self.staff, centre_code="D01", applicant_id_number=id_number(self.n))
        a = Arranged(case["id"])
        if case_state == "draft":
            # The materials make draft → submitted legal for the case itself (the rows that test it).
            for item in case["checklist"]:
                if item["required"]:
                    await ok(await upload(self.staff, a.case_id, item["code"], png_bytes()), 201)
        else:
            # Submitted through the service, skipping the checklist (faster; materials are not under test here).
            who = await principal(self.services, "staff")
            async with self.services.db.transaction() as s:
                await self.services.cases.transition(s, who, a.case_id, Transition(to="submitted"))
        if ticket is not None:
            a.ticket_id = (await ok(await self.staff.post(f"/api/v1/cases/{a.case_id}/tickets"), 201))["id"]
        if ticket in ("called", "serving"):
            called = await ok(await self.clerk.post(f"/api/v1/windows/{self.window}/call-next"))
            assert called["id"] == a.ticket_id
            a.session_id = called["session_id"]
            if ticket == "serving":
                await ok(await self.staff.post(f"/api/v1/tickets/{a.ticket_id}/answer"))
        elif call:
            opened = await self.staff.post(f"/api/v1/cases/{a.case_id}/sessions", json={"kind": "call"})
            assert opened.status == 201, await opened.text()
            a.session_id = (await opened.json())["id"]
        if joined:
            assert a.session_id is not None
            await self.join(self.staff, a.session_id)
        if case_state == "in_session" and ticket not in ("called", "serving"):
            await ok(await self.move(self.clerk, a.case_id, "in_session"))
        if case_state in ("accepted", "rejected", "completed"):
            await ok(await self.move(self.clerk, a.case_id, "in_session"))
            await ok(await self.move(self.clerk, a.case_id, "rejected" if case_state == "rejected" else "accepted"))
            if case_state == "completed":
                await ok(await self.move(self.clerk, a.case_id, "completed"))
        if case_state == "cancelled":
            await ok(await self.move(self.staff, a.case_id, "cancelled"))
        assert await self.case_state(a) == case_state, name
        assert await self.ticket_state(a) == ticket, name
        return a

    async def case_state(self, a: Arranged) -> str:
        return str((await ok(await self.staff.get(f"/api/v1/cases/{a.case_id}")))["state"])

    async def ticket_state(self, a: Arranged) -> str | None:
        if a.ticket_id is None:
            return None
        return str((await ok(await self.staff.get(f"/api/v1/tickets/{a.ticket_id}")))["state"])

    def ring_ended(self, a: Arranged) -> bool:
        return any(d["ticket"]["id"] == a.ticket_id for d in self.notices.of("queue.ring_ended"))


@pytest.fixture
async def world(as_user: Any, client: Any, services: Services, notices: RecordingNotifier) -> Any:
    staff, clerk = await as_user("staff"), await as_user("clerk")
    win = await window_id(services, "D01-MZ-1")
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    w = World(client, services, notices, staff, clerk, win)
    yield w
    for p in w.peers:
        await p.close()


@pytest.mark.parametrize("arrangement", list(ARRANGEMENTS))
async def test_every_case_move(world: World, arrangement: str) -> None:
    """Each target state from this arrangement: refused (nothing changes) or done (case and ticket as the table
    says)."""
    a: Arranged | None = None
    for to in STATES:
        if a is None:
            a = await world.arrange(arrangement)
        then = expected(arrangement, to)
        case_state, ticket_state = ARRANGEMENTS[arrangement][0], ARRANGEMENTS[arrangement][1]
        who = world.staff if CASE_MOVES.get((case_state, to)) == "staff" else world.clerk
        world.notices.clear()
        resp = await world.move(who, a.case_id, to)
        body = await resp.json()
        label = f"{arrangement} → {to}"
        if then.code is not None:
            assert resp.status == 409, (label, body)
            assert body["code"] == then.code, (label, body)
            assert await world.case_state(a) == case_state, label
            assert await world.ticket_state(a) == ticket_state, label
            assert not world.ring_ended(a), label
            continue
        assert resp.status == 200, (label, body)
        assert body["state"] == then.case, label
        assert await world.ticket_state(a) == then.ticket, label
        assert world.ring_ended(a) == then.ring_ended, label
        await check_invariants(world, a)
        audit = await ok(await world.clerk.get(f"/api/v1/cases/{a.case_id}/audit"))
        assert audit["verified"]
        if then.ticket != ticket_state and a.ticket_id is not None:
            moved = [e for e in audit["entries"] if e["details"].get("ticket_id") == a.ticket_id]
            assert moved[-1]["details"].get("reason") == f"case_{to}", (label, moved[-1])
        a = None  # the next target starts from a fresh arrangement


async def check_invariants(world: World, a: Arranged) -> None:
    """No forbidden combination: a closed case holds no place in a queue; a ticket in a call has an open case."""
    case = await world.case_state(a)
    ticket = await world.ticket_state(a)
    if case in ("accepted", "rejected", "completed", "cancelled"):
        assert ticket not in ("waiting", "called", "serving"), (case, ticket)


# -- ticket moves ------------------------------------------------------------------------------------------------------

#: (ticket state, action) → (ticket state after, case state after, ring withdrawn) or an error code.
#: Each arrangement starts from a submitted case; ``called``/``serving`` have the case ``in_session``.
TICKET_TABLE: dict[tuple[str, str], tuple[str, str, bool] | str] = {
    ("waiting", "call"): ("called", "in_session", False),
    ("waiting", "answer"): "illegal_ticket_state",
    ("waiting", "recall"): "illegal_ticket_state",
    ("waiting", "skip"): "illegal_ticket_state",
    ("waiting", "complete"): "illegal_ticket_state",
    ("waiting", "cancel"): ("cancelled", "submitted", False),
    ("waiting", "transfer"): ("transferred", "submitted", False),
    ("waiting", "requeue"): "illegal_ticket_state",
    ("waiting", "no_show"): "illegal_ticket_state",
    ("called", "answer"): ("serving", "in_session", True),
    ("called", "recall"): ("called", "in_session", False),
    ("called", "skip"): ("no_show", "submitted", True),
    ("called", "complete"): "illegal_ticket_state",
    ("called", "cancel"): ("cancelled", "submitted", True),
    ("called", "transfer"): ("transferred", "submitted", True),
    ("called", "requeue"): ("waiting", "submitted", True),
    ("called", "no_show"): ("no_show", "submitted", True),
    ("called", "no_show_without_reason"): "reason_required",
    ("called", "ring_timeout"): ("waiting", "submitted", True),
    ("serving", "answer"): "illegal_ticket_state",
    ("serving", "recall"): "illegal_ticket_state",
    ("serving", "skip"): "illegal_ticket_state",
    # Served without a decision: the case leaves the session, to be decided or called again.
    ("serving", "complete"): ("done", "submitted", False),
    ("serving", "cancel"): "illegal_ticket_state",
    ("serving", "transfer"): ("transferred", "submitted", False),
    ("serving", "requeue"): ("waiting", "submitted", False),
    ("serving", "no_show"): ("no_show", "submitted", False),
    # A ticket ended by the case's decision takes no further move.
    ("done", "answer"): "illegal_ticket_state",
    ("done", "recall"): "illegal_ticket_state",
    ("done", "skip"): "illegal_ticket_state",
    ("done", "complete"): "illegal_ticket_state",
    ("done", "cancel"): "illegal_ticket_state",
    ("done", "transfer"): "illegal_ticket_state",
    ("done", "requeue"): "illegal_ticket_state",
    ("done", "no_show"): "illegal_ticket_state",
}


TICKET_ARRANGEMENTS = {
    "waiting": "submitted+waiting",
    "called": "in_session+called",
    "serving": "in_session+serving+joined",
    "done": "in_session+serving+joined",
}


@pytest.mark.parametrize("state", list(TICKET_ARRANGEMENTS))
async def test_every_ticket_move(world: World, services: Services, clock: FakeClock, state: str) -> None:
    """Each ticket action from this ticket state, each from a fresh arrangement: refused, or as the table says."""
    for (from_state, action), then in TICKET_TABLE.items():
        if from_state == state:
            await ticket_move(world, services, clock, state, action, then)


async def ticket_move(
    world: World, services: Services, clock: FakeClock, state: str, action: str, then: tuple[str, str, bool] | str
) -> None:
    label = f"{state} → {action}"
    a = await world.arrange(TICKET_ARRANGEMENTS[state])
    assert a.ticket_id is not None
    if state == "done":
        await ok(await world.move(world.clerk, a.case_id, "accepted"))
        assert await world.ticket_state(a) == "done"
    before_case, before_ticket = await world.case_state(a), await world.ticket_state(a)
    world.notices.clear()
    tid, staff, clerk = a.ticket_id, world.staff, world.clerk
    if action == "call":
        resp = await clerk.post(f"/api/v1/windows/{world.window}/call-next")
    elif action in ("answer", "cancel"):
        resp = await staff.post(f"/api/v1/tickets/{tid}/{action}")
    elif action in ("recall", "skip", "complete"):
        resp = await clerk.post(f"/api/v1/tickets/{tid}/{action}")
    elif action == "transfer":
        town = await department_id(services, "T01", "civil_affairs")
        resp = await clerk.post(f"/api/v1/tickets/{tid}/transfer", json={"department_id": town})
    elif action == "requeue":
        resp = await clerk.post(f"/api/v1/tickets/{tid}/absent", json={"outcome": "requeue"})
    elif action == "no_show":
        body = {"outcome": "no_show", "reason": "申请人未到场"}
        resp = await clerk.post(f"/api/v1/tickets/{tid}/absent", json=body)
    elif action == "no_show_without_reason":
        resp = await clerk.post(f"/api/v1/tickets/{tid}/absent", json={"outcome": "no_show"})
    else:
        assert action == "ring_timeout"
        clock.advance(services.queue.settings.ring_timeout + 1)
        await services.queue.scan()
        resp = None
    if isinstance(then, str):
        assert resp is not None
        body = await resp.json()
        assert resp.status in (409, 422), (label, body)
        assert body["code"] == then, (label, body)
        assert (await world.case_state(a), await world.ticket_state(a)) == (before_case, before_ticket), label
        return
    if resp is not None:
        assert resp.status in (200, 201), (label, await resp.text())
    ticket_after, case_after, ring_ended = then
    assert await world.ticket_state(a) == ticket_after, label
    assert await world.case_state(a) == case_after, label
    assert world.ring_ended(a) == ring_ended, label
    if action == "no_show":
        audit = await ok(await staff.get(f"/api/v1/cases/{a.case_id}/audit"))
        absent = [e for e in audit["entries"] if e["action"] == "ticket.absent"]
        assert absent[-1]["details"]["reason"] == "申请人未到场", label
    await check_invariants(world, a)


async def test_the_reported_defect_cannot_happen(world: World) -> None:
    """Only the clerk in the call: 受理 is refused until the point has answered and joined; then it ends the ticket."""
    a = await world.arrange("in_session+called")
    assert a.session_id is not None
    await world.join(world.clerk, a.session_id)  # the clerk alone
    resp = await world.move(world.clerk, a.case_id, "accepted")
    body = await resp.json()
    assert (resp.status, body["code"]) == (409, NOT_JOINED)
    assert body["details"]["ticket_state"] == "called"
    ticket = await ok(await world.staff.get(f"/api/v1/tickets/{a.ticket_id}"))
    assert ticket["applicant_joined"] is False
    assert ticket["ring"]["session_id"] == a.session_id
    assert ticket["ring"]["window"]["code"] == "D01-MZ-1"
    assert ticket["ring"]["department"]["code"] == "civil_affairs"
    # A point that looks after the ring started finds it in its list; the pushed ring names the department too.
    listed = await ok(await world.staff.get("/api/v1/tickets?state=called"))
    assert [(x["id"], x["ring"]["session_id"]) for x in listed["items"]] == [(a.ticket_id, a.session_id)]
    assert listed["items"][0]["ring_deadline"] is not None
    rings = [d for d in world.notices.of("queue.ring") if d["ticket"]["id"] == a.ticket_id]
    assert rings and rings[-1]["department"]["code"] == "civil_affairs"
    # The point answers and joins: now the decision is possible, and it ends the ticket in the same step.
    await ok(await world.staff.post(f"/api/v1/tickets/{a.ticket_id}/answer"))
    assert (await world.move(world.clerk, a.case_id, "accepted")).status == 409
    await world.join(world.staff, a.session_id)
    assert (await ok(await world.staff.get(f"/api/v1/tickets/{a.ticket_id}")))["applicant_joined"] is True
    await ok(await world.move(world.clerk, a.case_id, "accepted"))
    await ok(await world.move(world.clerk, a.case_id, "completed"))
    ticket = await ok(await world.staff.get(f"/api/v1/tickets/{a.ticket_id}"))
    assert (ticket["state"], ticket["end_reason"]) == ("done", "completed")
    called = await ok(await world.staff.get("/api/v1/tickets?state=called"))
    assert called["items"] == []


async def test_answering_reopens_a_call_the_clerk_side_ended(world: World) -> None:
    """A serving ticket always has an open call: answering after the call session ended gives a new one to join."""
    a = await world.arrange("in_session+called")
    await ok(await world.clerk.post(f"/api/v1/sessions/{a.session_id}/end"))
    answered = await ok(await world.staff.post(f"/api/v1/tickets/{a.ticket_id}/answer"))
    assert answered["state"] == "serving"
    assert answered["session_id"] != a.session_id
    sessions = await ok(await world.staff.get(f"/api/v1/cases/{a.case_id}/sessions"))
    states = {x["id"]: x["state"] for x in sessions["items"]}
    assert (states[a.session_id], states[answered["session_id"]]) == ("ended", "open")
    # Without the session ending, the answer names the call the ring named.
    b = await world.arrange("in_session+called")
    assert (await ok(await world.staff.post(f"/api/v1/tickets/{b.ticket_id}/answer")))["session_id"] == b.session_id
