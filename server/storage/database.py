"""Engine and unit-of-work for SQLite (aiosqlite) and PostgreSQL (asyncpg).

Two kinds of unit of work:

* :meth:`Database.transaction` for anything that may write.  On SQLite it
  takes the write lock up front (``BEGIN IMMEDIATE``); the units of work of
  this process queue for it in order on an :class:`asyncio.Lock` first, so a
  writer waits on the lock's queue instead of polling in SQLite's busy
  handler (which sleeps in steps of up to 100 ms).
* :meth:`Database.read` for a unit of work that only reads (the bearer
  check, boards).  On PostgreSQL it runs in autocommit: no ``BEGIN`` and
  ``COMMIT`` round trips (each statement sees the data committed when it
  starts, as in a READ COMMITTED transaction).  On SQLite it is a deferred
  ``BEGIN``: a consistent snapshot that, with WAL, neither waits for the
  writer nor holds it up.

Stale PostgreSQL connections: a pooled connection whose server end closed
while it sat idle (server restart, ``pg_terminate_backend``, an idle
timeout) is noticed by asyncpg without a round trip and replaced on checkout;
one idle for ``ping_idle_after`` seconds or longer is pinged first.  Busy
connections (idle less than that) are used without a ping: the pool's
``pool_pre_ping`` cost three round trips (``BEGIN``, ``;``, ``ROLLBACK``)
on every checkout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

#: Execution option marking a read-only unit of work (SQLite: deferred ``BEGIN`` instead of ``BEGIN IMMEDIATE``).
READ_ONLY = "cloudwindow_read_only"
#: Seconds a pooled PostgreSQL connection may sit idle before its next checkout pings it.
PING_IDLE_AFTER = 10.0
_IDLE_SINCE = "cloudwindow_idle_since"
#: Seconds a SQLite unit of work waits for the write lock (this process's queue, then SQLite's busy handler).
SQLITE_BUSY_TIMEOUT = 30.0


class Database:
    """Owns the engine; hands out sessions whose transaction the caller's boundary commits."""

    def __init__(self, url: str, *, echo: bool = False, ping_idle_after: float = PING_IDLE_AFTER) -> None:
        self.url = url
        self.ping_idle_after = ping_idle_after
        kwargs: dict[str, Any] = {"echo": echo}
        if url.startswith("sqlite"):
            # One writer at a time: SQLite serialises writes anyway, and waiting
            # on the busy timeout is better than failing with "database is locked"
            # (another process, or a connection not from this Database).
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
        else:
            kwargs.update(pool_size=10, max_overflow=10)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_on_connect)
            event.listen(self.engine.sync_engine, "begin", _sqlite_on_begin)
            reader = self.engine.execution_options(**{READ_ONLY: True})
        else:
            event.listen(self.engine.sync_engine, "checkout", self._on_checkout)
            event.listen(self.engine.sync_engine, "checkin", _on_checkin)
            reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._readers = async_sessionmaker(reader, expire_on_commit=False)
        self._write_lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _writers(self) -> asyncio.Lock | None:
        """SQLite: this process's queue for the write lock (one per event loop); PostgreSQL: none."""
        if self.dialect != "sqlite":
            return None
        loop = asyncio.get_running_loop()
        if self._write_lock is None or self._write_lock[0] is not loop:
            self._write_lock = (loop, asyncio.Lock())
        return self._write_lock[1]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits if the block succeeds, rolls back otherwise.

        Not to be nested in another unit of work of the same task on SQLite (it
        would wait for the write lock its own outer unit holds).
        """
        writers = self._writers()
        if writers is None:
            async with self.sessions() as session, session.begin():
                yield session
            return
        # As long as SQLite's own busy timeout: a unit of work that never gets the lock fails rather than hangs.
        # asyncio.timeout, not asyncio.wait_for: on Python 3.11, wait_for returns the inner result when the task is
        # cancelled just after the lock was granted, swallowing the cancellation (CPython gh-86296), so a cancelled
        # background loop (the app's recording jobs at shutdown) went on running and shutdown waited for it forever.
        try:
            async with asyncio.timeout(SQLITE_BUSY_TIMEOUT):
                await writers.acquire()
        except TimeoutError:
            raise TimeoutError(f"waited {SQLITE_BUSY_TIMEOUT:g} s for the database's write lock") from None
        try:
            async with self.sessions() as session, session.begin():
                yield session
        finally:
            writers.release()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A unit of work that only reads (writing in it is a bug: on PostgreSQL each statement would commit on its own,
        on SQLite the write lock would be taken outside this process's writer queue)."""
        async with self._readers() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()

    def _on_checkout(self, dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        """Replace a connection that died idle in the pool (raising makes the pool reconnect, up to 3 times)."""
        idle_since = record.info.pop(_IDLE_SINCE, None)
        raw = getattr(dbapi_conn, "_connection", None)  # asyncpg's connection under SQLAlchemy's adapter
        if raw is not None and raw.is_closed():
            raise DisconnectionError("the connection was closed while idle in the pool")
        if idle_since is not None and time.monotonic() - idle_since >= self.ping_idle_after:
            try:
                dbapi_conn.ping()
            except Exception as exc:
                raise DisconnectionError("an idle pooled connection did not answer a ping") from exc


def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
    record.info[_IDLE_SINCE] = time.monotonic()


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself (see _sqlite_on_begin) and enforce FKs.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    # BEGIN IMMEDIATE takes the write lock up front, so read-then-write units
    # of work serialise instead of failing on lock upgrade; a read-only unit
    # of work (Database.read) takes a snapshot with a deferred BEGIN.
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
