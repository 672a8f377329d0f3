"""Shared fixtures: both database engines, a fake clock, the app and demo users.

Every test that uses ``db_url`` (directly or through ``app``/``client``) runs
once on SQLite and once on PostgreSQL.  PostgreSQL is the server at
127.0.0.1:5432 (database ``test`` for the admin connection); the run creates
its own database and drops it at the end.  Without ``CI=true`` an
unreachable PostgreSQL skips those tests; in CI it fails them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aioice.ice
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from aiortc import rtcicetransport, rtcrtpreceiver
from argon2 import PasswordHasher

from server.app import SERVICES, create_app
from server.clock import FakeClock
from server.settings import MediaSettings, Settings
from server.storage.database import Database
from server.storage.migrate import upgrade
from server.storage.models import Base
from signalling.sfu import network
from signalling.sfu.passthrough import PassthroughQueue
from tests.media_harness import Caller, DecoderWatch

IN_CI = os.environ.get("CI") == "true"
PG_ADMIN_DSN = os.environ.get("CLOUDWINDOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
DEMO_PASSWORD = "demo-password-1"
#: Set on the run's PostgreSQL database: a lock wait (a TRUNCATE behind a leaked transaction) fails the test with
#: "canceling statement due to lock timeout" instead of hanging the run, and a connection left idle in a transaction
#: is ended by the server, releasing its locks.  No test waits for a lock, or sits in a transaction, that long.
PG_TEST_TIMEOUTS = {"lock_timeout": "30s", "idle_in_transaction_session_timeout": "60s"}


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI: a missing service must never pass silently there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing() -> Iterator[None]:
    """Cheap argon2 parameters for tests (production parameters are argon2-cffi's defaults)."""
    import server.services.auth as auth

    saved = auth._hasher
    auth._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    yield
    auth._hasher = saved


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


async def _pg_admin(dsn: str) -> asyncpg.Connection:
    return await asyncio.wait_for(asyncpg.connect(dsn), timeout=5)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """A fresh, migrated PostgreSQL database for this run, or None if unreachable."""
    name = f"cw_test_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await _pg_admin(PG_ADMIN_DSN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
            for setting, value in PG_TEST_TIMEOUTS.items():
                await conn.execute(f"ALTER DATABASE \"{name}\" SET {setting} = '{value}'")
        finally:
            await conn.close()

    try:
        asyncio.run(create())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        yield None
        _ = exc
        return
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    url = f"{base}/{name}"
    upgrade(url)
    yield url

    async def drop() -> None:
        conn = await _pg_admin(PG_ADMIN_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


async def _truncate_all(url: str) -> None:
    db = Database(url)
    try:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        async with db.engine.begin() as conn:
            from sqlalchemy import text

            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        await db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path, pg_database: str | None
) -> AsyncIterator[str]:
    """An empty, migrated database: a copy of the SQLite template, or the run's PostgreSQL database truncated."""
    if request.param == "sqlite":
        path = tmp_path / "test.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    if pg_database is None:
        unavailable(f"PostgreSQL not reachable at {PG_ADMIN_DSN}")
    assert pg_database is not None
    await _truncate_all(pg_database)
    yield pg_database


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        secret_key="test-secret-key-0123456789abcdef",
        log_format="text",
        web_client_dist=tmp_path / "no-web-client",
        media=MediaSettings(host_addresses=["127.0.0.1"], allowed_cidrs=["127.0.0.0/8"]),
    )


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    await database.close()


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, clock: FakeClock) -> TestClient:
    app = create_app(settings, clock=clock)
    return await aiohttp_client(app)


@pytest.fixture(scope="session")
def demo_snapshot(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo district loaded once into a scratch database, as rows per table.

    Loading through the services costs a second or two per test; copying the
    rows in with one multi-row INSERT per table costs milliseconds.
    """
    from sqlalchemy import select

    from server import demo as demo_data

    path = tmp_path_factory.mktemp("demo") / "demo.db"
    shutil.copy(sqlite_template, path)

    async def load() -> dict[str, Any]:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            async with db.transaction() as s:
                users = await demo_data.load(s, FakeClock(), password=DEMO_PASSWORD)
            rows: dict[str, list[dict[str, Any]]] = {}
            async with db.engine.connect() as conn:
                for table in Base.metadata.sorted_tables:
                    rows[table.name] = [dict(r._mapping) for r in await conn.execute(select(table))]
            return {"users": {u.username: u.password for u in users}, "rows": rows}
        finally:
            await db.close()

    return asyncio.run(load())


async def copy_rows(db: Database, rows: dict[str, list[dict[str, Any]]]) -> None:
    async with db.engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            if rows.get(table.name):
                await conn.execute(table.insert(), rows[table.name])
        if db.dialect == "postgresql":
            from sqlalchemy import text

            for table in Base.metadata.sorted_tables:
                if "id" in table.c and rows.get(table.name) and table.c.id.autoincrement:
                    await conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                            f'(SELECT max(id) FROM "{table.name}"))'
                        )
                    )


@pytest.fixture
async def demo(client: TestClient, demo_snapshot: dict[str, Any]) -> dict[str, str]:
    """The demo district in this test's database; returns username → password."""
    await copy_rows(client.app[SERVICES].db, demo_snapshot["rows"])
    return dict(demo_snapshot["users"])


class Session:
    """A logged-in API client: ``await as_user.get(path)`` with the bearer token set."""

    def __init__(self, client: TestClient, token: str, refresh: str) -> None:
        self.client = client
        self.token = token
        self.refresh = refresh

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)


async def login(client: TestClient, username: str, password: str = DEMO_PASSWORD) -> Session:
    resp = await client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert resp.status == 200, await resp.text()
    data = await resp.json()
    return Session(client, data["access_token"], data["refresh_token"])


@pytest.fixture
def as_user(client: TestClient, demo: dict[str, str]) -> Any:
    """``await as_user("staff")`` → a logged-in :class:`Session`."""

    async def make(username: str) -> Session:
        return await login(client, username)

    return make


# -- network rule guards (every test) ------------------------------------------------------------------------------
# ICE gathering outside signalling.sfu.network.gather_from() would enumerate real interfaces: it is answered with
# loopback only and fails the test; aiortc's default public STUN server and mDNS resolution raise; and a decoder
# started for a server-side receiver (a PassthroughQueue) fails the test, since the SFU must never decode.


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[bool, bool]]]:
    unscoped: list[tuple[bool, bool]] = []

    def unscoped_gathering(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        unscoped.append((use_ipv4, use_ipv6))
        return ["127.0.0.1"]

    def no_default_stun(cls: Any) -> Any:
        raise AssertionError("aiortc's default public STUN server must never be used")

    async def no_mdns(subscriber: object) -> Any:
        raise AssertionError("mDNS resolution must never happen in tests")

    monkeypatch.setattr(network, "_unscoped_host_addresses", unscoped_gathering)
    monkeypatch.setattr(rtcicetransport.RTCIceGatherer, "getDefaultIceServers", classmethod(no_default_stun))
    monkeypatch.setattr(aioice.ice, "get_or_create_mdns_protocol", no_mdns)
    yield unscoped
    assert not unscoped, "ICE gathering happened outside gather_from()"


@pytest.fixture(autouse=True)
def decoder_watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[DecoderWatch]:
    watch = DecoderWatch()
    local = threading.local()
    worker = rtcrtpreceiver.decoder_worker
    get_decoder = getattr(rtcrtpreceiver, "get_decoder")  # noqa: B009 - not re-exported

    def watched_worker(loop: Any, input_q: Any, output_q: Any, decode_error: Any) -> None:
        local.server = isinstance(input_q, PassthroughQueue)
        worker(loop, input_q, output_q, decode_error)

    def watched_get_decoder(codec: Any) -> Any:
        if getattr(local, "server", False):
            watch.server_decoders.append(codec.mimeType)
        else:
            watch.client_decoders += 1
        return get_decoder(codec)

    monkeypatch.setattr(rtcrtpreceiver, "decoder_worker", watched_worker)
    monkeypatch.setattr(rtcrtpreceiver, "get_decoder", watched_get_decoder)
    yield watch
    assert not watch.server_decoders, f"the server decoded {watch.server_decoders}"


@pytest.fixture
async def callers() -> AsyncIterator[Any]:
    """``await callers(app_client, who, tag)``: a connected Caller (Socket.IO + aiortc browser stand-in) for a logged-in
    ``Session`` or a bare access token; all are closed at the end, and none may have seen a server error."""
    made: list[Caller] = []

    async def make(app_client: Any, who: Session | str, tag: int) -> Caller:
        token = who if isinstance(who, str) else who.token
        c = Caller(f"http://127.0.0.1:{app_client.server.port}", token, tag)
        await c.connect()
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()
    for c in made:
        assert not c.unexpected_errors(), c.errors
