"""The unit of work's connection handling: stale pooled connections, read-only units, SQLite's write queue."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

from server.app import SERVICES
from server.storage.database import Database
from tests.conftest import login

#: The engine-specific tests run on their engine only (the conftest's ``db_url`` is parametrised over both).
POSTGRESQL_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def _terminate(url: str, pids: set[int]) -> None:
    """End the backends ``pids`` and wait until they are gone (so their sockets are closed)."""
    conn = await asyncpg.connect(_plain(url))
    try:
        for pid in pids:
            assert await conn.fetchval("SELECT pg_terminate_backend($1, 10000)", pid)
    finally:
        await conn.close()


async def _backend(db: Database) -> int:
    async with db.transaction() as s:
        return int((await s.execute(text("SELECT pg_backend_pid()"))).scalar_one())


@POSTGRESQL_ONLY
async def test_a_terminated_pooled_connection_is_replaced(db_url: str) -> None:
    # No idle ping: the dead connection must be noticed without one.
    db = Database(db_url, ping_idle_after=3600)
    try:
        first = await _backend(db)
        await _terminate(db_url, {first})
        second = await _backend(db)
        assert second != first
        async with db.read() as s:
            assert (await s.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await db.close()


@POSTGRESQL_ONLY
async def test_the_next_request_succeeds_after_the_servers_connections_were_killed(
    client: TestClient, demo: dict[str, str], db_url: str
) -> None:
    services = client.app[SERVICES]
    me = await login(client, "clerk")
    assert (await me.get("/api/v1/cases")).status == 200
    pool: set[int] = set()
    for _ in range(3):
        pool.add(await _backend(services.db))
    await _terminate(db_url, pool)
    services.auth.session_cache._entries.clear()  # the bearer check goes to the database too
    resp = await me.get("/api/v1/cases")
    assert resp.status == 200, await resp.text()
    assert await _backend(services.db) not in pool


@POSTGRESQL_ONLY
async def test_an_idle_connection_is_pinged_on_checkout(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pings: list[Any] = []
    db = Database(db_url, ping_idle_after=0)
    try:
        first = await _backend(db)  # a new connection: not pinged; back in the pool, it is idle from now on
        real_ping = AsyncAdapt_asyncpg_connection.ping

        def failing_ping(self: Any) -> None:
            pings.append(self)
            if len(pings) == 1:
                raise ConnectionError("no answer")
            real_ping(self)

        monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", failing_ping)
        async with db.transaction() as s:
            assert (await s.execute(text("SELECT 1"))).scalar_one() == 1
        assert len(pings) == 1  # the replacement is a new connection: not pinged
        assert await _backend(db) != first
    finally:
        await db.close()


@POSTGRESQL_ONLY
async def test_read_runs_without_a_transaction_on_postgresql(db_url: str) -> None:
    db = Database(db_url)
    try:
        async with db.read() as s:
            a = (await s.execute(text("SELECT pg_current_xact_id()"))).scalar_one()
            b = (await s.execute(text("SELECT pg_current_xact_id()"))).scalar_one()
        assert a != b  # each statement its own transaction: no BEGIN and COMMIT round trips
        async with db.transaction() as s:
            a = (await s.execute(text("SELECT pg_current_xact_id()"))).scalar_one()
            b = (await s.execute(text("SELECT pg_current_xact_id()"))).scalar_one()
        assert a == b
    finally:
        await db.close()


@SQLITE_ONLY
async def test_sqlite_writers_queue_and_readers_do_not_wait(db_url: str) -> None:
    db = Database(db_url)
    try:
        async with db.transaction() as s:
            await s.execute(text("CREATE TABLE counter (n INTEGER NOT NULL)"))
            await s.execute(text("INSERT INTO counter VALUES (0)"))

        async def increment() -> None:
            async with db.transaction() as s:
                n = (await s.execute(text("SELECT n FROM counter"))).scalar_one()
                await asyncio.sleep(0)  # let the others try to get in between the read and the write
                await s.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})

        await asyncio.gather(*(increment() for _ in range(30)))
        async with db.read() as s:
            assert (await s.execute(text("SELECT n FROM counter"))).scalar_one() == 30

        # A reader neither waits for a writer in the middle of its unit of work nor sees its uncommitted change.
        writing, done = asyncio.Event(), asyncio.Event()

        async def writer() -> None:
            async with db.transaction() as s:
                await s.execute(text("UPDATE counter SET n = 99"))
                writing.set()
                await done.wait()

        task = asyncio.create_task(writer())
        await writing.wait()
        async with db.read() as s:
            seen = (await asyncio.wait_for(s.execute(text("SELECT n FROM counter")), 30)).scalar_one()
        done.set()
        await task
        assert seen == 30
        async with db.read() as s:
            assert (await s.execute(text("SELECT n FROM counter"))).scalar_one() == 99
    finally:
        await db.close()


@SQLITE_ONLY
async def test_a_unit_of_work_cancelled_at_any_step_raises_cancelled_error(db_url: str) -> None:
    # Cancelled a few loop steps in, the task used to be let into the unit of work with the cancellation lost (Python
    # 3.11's asyncio.wait_for around the write lock): a cancelled background loop then never stopped, and the app's
    # shutdown waited for it forever.
    db = Database(db_url)
    try:
        for steps in range(8):

            async def unit() -> None:
                async with db.transaction() as s:
                    await s.execute(text("SELECT 1"))

            task = asyncio.create_task(unit())
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # Nor is the write lock left taken.
        async with db.transaction() as s:
            assert (await s.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await db.close()
