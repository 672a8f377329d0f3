"""How many SQL statements a call-next costs: a guard against the hot path growing round trips again.

Counted, not timed: each statement is a round trip to the database (and on
PostgreSQL the server process's main cost per call, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from server.app import Services
from tests.server.queue.conftest import ok, seed_tickets, window_id

#: The application's own loops (server/app.py names them): their passes may run during a request and are not its cost.
BACKGROUND = frozenset({"queue-scanner", "recording-uploader", "recording-jobs"})


@contextmanager
def statements(services: Services) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.split(None, 1)[0].upper() in ("BEGIN", "COMMIT", "ROLLBACK"):
            return
        task = asyncio.current_task()
        if task is not None and task.get_name() in BACKGROUND:
            return
        seen.append(" ".join(statement.split())[:80])

    engine = services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def test_call_next_and_skip_statements(as_user: Any, services: Services) -> None:
    await seed_tickets(services, 3)
    clerk = await as_user("clerk")
    win = await window_id(services, "D01-MZ-1")
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))  # authenticates: the session check is cached now
    with statements(services) as call:
        called = await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
    with statements(services) as skip:
        await ok(await clerk.post(f"/api/v1/tickets/{called['id']}/skip"))
    # call-next: window lock with its ticket in hand and its department's policy, head of the line, the call
    # (UPDATE ... RETURNING), case lock with its centre and matter, open session?, new session, audit head, the
    # two audit entries in one INSERT on PostgreSQL (was 22 + 3 for the session check before the hot path was
    # reworked, then 12).
    assert len(call) <= 9, "\n".join(call)
    # skip: ticket lock with its case, paths and window, the ticket, the case's revert (in_session -> submitted:
    # the transition and its audit), audit head, entries (was 8).
    assert len(skip) <= 8, "\n".join(skip)
    assert not [q for q in call + skip if q.startswith("SELECT auth_sessions")]


async def test_answer_and_complete_statements(as_user: Any, services: Services) -> None:
    await seed_tickets(services, 3)
    clerk, staff = await as_user("clerk"), await as_user("staff")
    win = await window_id(services, "D01-MZ-1")
    await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
    called = await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
    await ok(await staff.get("/api/v1/tickets"))  # the staff's session check is cached now
    with statements(services) as answer:
        await ok(await staff.post(f"/api/v1/tickets/{called['id']}/answer"))
    with statements(services) as complete:
        await ok(await clerk.post(f"/api/v1/tickets/{called['id']}/complete"))
    # Each: the ticket locked with its case, the paths who may see it need and its window's tidal flag; the
    # ticket's update; audit head; the entry (were 7 and 8: the paths and the case lock apart, and the window).
    # Answering also looks up the case's open call (the session to join; reopened if the clerk's side emptied it).
    assert len(answer) <= 5, "\n".join(answer)
    assert len(complete) <= 4, "\n".join(complete)
    assert not [q for q in answer + complete if q.startswith("SELECT auth_sessions")]
