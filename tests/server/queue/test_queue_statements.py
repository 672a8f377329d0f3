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
    # call-next: window lock with its ticket in hand, head of the line, thresholds, the call (UPDATE ... RETURNING),
    # case lock, its centre, its matter, open session?, new session, audit head, two audit entries (was 22 + 3 for
    # the session check before the hot path was reworked).
    assert len(call) <= 12, "\n".join(call)
    # skip: ticket lock, its point and centre, case lock, the ticket, the window (tidal?), audit head, one entry.
    assert len(skip) <= 8, "\n".join(skip)
    assert not [q for q in call + skip if q.startswith("SELECT auth_sessions")]
