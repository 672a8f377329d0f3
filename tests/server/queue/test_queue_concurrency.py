"""Concurrency: clerks calling next at the same instant never get the same ticket (SKIP LOCKED on PostgreSQL,
serialised writers on SQLite), also through two app instances sharing the database as two server processes do;
two points taking a ticket for the same person at once get one ticket; concurrent audit appends keep the chain."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from server.app import Services, create_app
from server.clock import FakeClock
from server.services import accounts, audit
from server.services.principal import Role
from server.settings import Settings
from server.storage.cases import CaseRepository
from server.storage.orgs import OrgRepository
from tests.conftest import Session, login
from tests.server.queue.conftest import ok, principal, quiet_queue, seed_cases, seed_tickets, tickets

CLERKS = 8
TICKETS = 20


async def _clerks_at_windows(
    client: TestClient, services: Services, clock: FakeClock, n: int
) -> list[tuple[Session, int]]:
    """``n`` new civil-affairs clerks of the district centre, each signed in to a new window of their own."""
    password = "queue-clerk-password"
    windows = []
    async with services.db.transaction() as s:
        orgs = OrgRepository(s)
        unit = await orgs.unit_by_code("D01")
        assert unit is not None
        dept = await orgs.department_by_code(unit.id, "civil_affairs")
        assert dept is not None
        for i in range(n):
            await accounts.create_user(
                s,
                clock,
                accounts.UserCreate(
                    username=f"qclerk{i}",
                    password=password,
                    display_name=f"窗口{i}",
                    role=Role.CLERK,
                    unit_code="D01",
                    department_code="civil_affairs",
                ),
            )
            windows.append((await accounts.add_window(s, dept, f"D01-MZ-Q{i}", f"民政窗口Q{i}", f"Q{i}")).id)
    sessions = [await login(client, f"qclerk{i}", password) for i in range(n)]
    for session, win in zip(sessions, windows, strict=True):
        await ok(await session.post(f"/api/v1/windows/{win}/sign-in"))
    return list(zip(sessions, windows, strict=True))


async def test_concurrent_clerks_never_get_the_same_ticket(
    client: TestClient, services: Services, clock: FakeClock
) -> None:
    waiting = await seed_tickets(services, TICKETS)
    clerks = await _clerks_at_windows(client, services, clock, CLERKS)
    called: list[int] = []
    rounds = 0
    while True:
        rounds += 1
        responses = await asyncio.gather(*(c.post(f"/api/v1/windows/{w}/call-next") for c, w in clerks))
        assert {r.status for r in responses} <= {200, 204}, [await r.text() for r in responses]
        got = [(await r.json())["id"] for r in responses if r.status == 200]
        if not got:
            break
        assert len(got) == len(set(got)), f"round {rounds}: a ticket was handed to two clerks: {got}"
        assert not set(got) & set(called), "a ticket was called twice"
        called += got
        # Everyone calls again at once after skipping, so the next round races too.
        by_clerk = [(c, (await r.json())["id"]) for (c, _), r in zip(clerks, responses, strict=True) if r.status == 200]
        skips = await asyncio.gather(*(c.post(f"/api/v1/tickets/{t}/skip") for c, t in by_clerk))
        assert {s.status for s in skips} == {200}
    assert sorted(called) == sorted(waiting)
    assert rounds == -(-TICKETS // CLERKS) + 1
    rows = await tickets(services)
    assert {rows[t].state for t in waiting} == {"no_show"}
    assert len({rows[t].clerk_user_id for t in waiting}) == CLERKS


async def test_one_ticket_when_two_points_queue_the_same_person_at_once(as_user: Any, services: Services) -> None:
    # The same person's case opened twice (e.g. by mistake) at the same point; both take a ticket at once.
    first, second = await seed_cases(services, 1) + await seed_cases(services, 1)
    staff = await as_user("staff")
    responses = await asyncio.gather(
        staff.post(f"/api/v1/cases/{first}/tickets"), staff.post(f"/api/v1/cases/{second}/tickets")
    )
    assert sorted(r.status for r in responses) == [201, 409]
    refused = next(r for r in responses if r.status == 409)
    assert (await refused.json())["code"] == "ticket_already_active"
    assert len(await tickets(services)) == 1


async def test_two_server_processes_never_hand_out_the_same_ticket(
    aiohttp_client: Any, client: TestClient, services: Services, clock: FakeClock, settings: Settings
) -> None:
    """Clerks on two app instances sharing the database (two processes' engines and caches) call at once."""
    waiting = await seed_tickets(services, TICKETS)
    clerks = await _clerks_at_windows(client, services, clock, CLERKS)
    other = await aiohttp_client(create_app(settings, clock=clock, queue_settings=quiet_queue()))
    # Every other clerk works through the second process, with the token the first one issued.
    split = [(Session(other, c.token, c.refresh) if i % 2 else c, w) for i, (c, w) in enumerate(clerks)]
    called: list[int] = []
    for _ in range(TICKETS + 1):  # bounded: each round calls at least one ticket until none is left
        responses = await asyncio.gather(*(c.post(f"/api/v1/windows/{w}/call-next") for c, w in split))
        assert {r.status for r in responses} <= {200, 204}, [await r.text() for r in responses]
        got = [(c, (await r.json())["id"]) for (c, _), r in zip(split, responses, strict=True) if r.status == 200]
        if not got:
            break
        called += [t for _, t in got]
        assert len(called) == len(set(called)), f"a ticket was handed out twice: {called}"
        skips = await asyncio.gather(*(c.post(f"/api/v1/tickets/{t}/skip") for c, t in got))
        assert {s.status for s in skips} == {200}
    assert sorted(called) == sorted(waiting)
    rows = await tickets(services)
    assert {rows[t].state for t in waiting} == {"no_show"}
    async with services.db.transaction() as s:
        results = await audit.verify_all(s)
    assert results and all(r.ok for r in results), [r for r in results if not r.ok]


async def test_concurrent_appends_to_one_case_keep_its_audit_chain(services: Services, clock: FakeClock) -> None:
    """Transactions appending to one case at once: each reads the chain's head under the case lock, once."""
    (case_id,) = await seed_cases(services, 1)
    who = await principal(services, "staff")

    async def several(n: int) -> None:
        async with services.db.transaction() as s:
            for i in range(3):
                await audit.append(s, clock, case_id, who, "test.note", {"writer": n, "i": i})
                await asyncio.sleep(0)  # let the other writers interleave

    await asyncio.gather(*(several(n) for n in range(4)))
    async with services.db.transaction() as s:
        result = await audit.verify_case(s, case_id)
        entries = await CaseRepository(s).audit(case_id)
    assert result.ok, result
    notes = [(e.details["writer"], e.details["i"]) for e in entries if e.action == "test.note"]
    assert sorted(notes) == [(n, i) for n in range(4) for i in range(3)]
    # One transaction's entries are contiguous: nobody appended to the case while another held its lock.
    writers = [w for w, _ in notes]
    assert all(writers[k] == writers[k - k % 3] for k in range(len(writers)))
