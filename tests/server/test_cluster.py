"""Two server processes sharing Redis: clients on different processes meet in one session.

The processes are real ``cloudwindow serve`` subprocesses on 127.0.0.1 with
python-socketio's Redis manager and Redis session ownership
(``signalling.cluster``), on the real Redis at 127.0.0.1:6379 under a key
prefix of their own.  The same call as ``test_media_call`` runs across them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis

from tests.conftest import unavailable
from tests.media_harness import Caller, assert_numbers_sane, until
from tests.server.api.conftest import CASE_BODY

REDIS_URL = os.environ.get("CLOUDWINDOW_TEST_REDIS", "redis://127.0.0.1:6379/0")
PASSWORD = "cluster-password-1"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def redis_available() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")


@pytest.fixture
def cluster_env(tmp_path: Path, redis_available: None) -> Iterator[dict[str, str]]:
    prefix = f"cwtest-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "CLOUDWINDOW_DATA_DIR": str(tmp_path / "data"),
        "CLOUDWINDOW_SECRET_KEY": "cluster-test-secret-0123456789abcdef",
        "CLOUDWINDOW_REDIS_URL": REDIS_URL,
        "CLOUDWINDOW_REDIS_PREFIX": prefix,
        "CLOUDWINDOW_LOG_FORMAT": "text",
        "CLOUDWINDOW_LOG_LEVEL": "WARNING",
        "CLOUDWINDOW_MEDIA__HOST_ADDRESSES": '["127.0.0.1"]',
        "CLOUDWINDOW_MEDIA__ALLOWED_CIDRS": '["127.0.0.0/8"]',
        "CLOUDWINDOW_WEB_CLIENT_DIST": str(tmp_path / "none"),
    }
    env.pop("CLOUDWINDOW_CONFIG", None)
    for args in (["db", "upgrade"], ["demo", "load", "--password", PASSWORD]):
        subprocess.run([str(BIN / "cloudwindow"), *args], env=env, check=True, capture_output=True, timeout=120)
    yield env
    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(f"{prefix}:*"):
        r.delete(key)


@contextlib.asynccontextmanager
async def _processes(env: dict[str, str], tmp_path: Path, n: int = 2) -> AsyncIterator[list[str]]:
    """``n`` real ``cloudwindow serve`` processes on loopback ports, ready; terminated on the way out."""
    procs, urls = [], []
    for i in range(n):
        port = _free_port()
        log = open(tmp_path / f"server{i}.log", "w")  # noqa: ASYNC230 - closed below
        procs.append(
            (
                subprocess.Popen(  # noqa: ASYNC220 - starting, not waiting
                    [str(BIN / "cloudwindow"), "serve", "--port", str(port)], env=env, stdout=log, stderr=log
                ),
                log,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            for url in urls:
                while True:
                    try:
                        async with http.get(f"{url}/readyz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    if time.monotonic() > deadline:
                        raise AssertionError(f"server {url} did not start: {(tmp_path / 'server0.log').read_text()}")
                    await asyncio.sleep(0.2)
        yield urls
    finally:
        for proc, log in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


@pytest.fixture
async def servers(cluster_env: dict[str, str], tmp_path: Path) -> AsyncIterator[list[str]]:
    async with _processes(cluster_env, tmp_path) as urls:
        yield urls


async def _login(http: aiohttp.ClientSession, url: str, username: str) -> str:
    async with http.post(f"{url}/api/v1/auth/login", json={"username": username, "password": PASSWORD}) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])


async def _call_across(http: aiohttp.ClientSession, one: str, two: str) -> tuple[str, str, int]:
    """Staff logged in on process one, the clerk on process two, and a case's call session opened on one."""
    staff = await _login(http, one, "staff")
    clerk = await _login(http, two, "clerk_t1")
    auth = {"Authorization": f"Bearer {staff}"}
    async with http.post(f"{one}/api/v1/cases", json=CASE_BODY, headers=auth) as resp:
        case_id = (await resp.json())["id"]
    async with http.post(f"{one}/api/v1/cases/{case_id}/sessions", json={"kind": "call"}, headers=auth) as resp:
        return staff, clerk, int((await resp.json())["id"])


async def test_call_across_two_processes(servers: list[str]) -> None:
    one, two = servers
    async with aiohttp.ClientSession() as http:
        staff, clerk, session_id = await _call_across(http, one, two)

        a, b = Caller(one, staff, tag=1), Caller(two, clerk, tag=2)
        try:
            await a.connect()
            await b.connect()
            await a.join(session_id)
            ack = await b.join(session_id)  # handled by process one, which owns the session
            assert len(ack["participants"]) == 2
            assert a.media and b.media
            await until(lambda: len(b.media.from_tag(1)) >= 10 and len(a.media.from_tag(2)) >= 10, 20, "video")
            assert_numbers_sane(b.media.from_tag(1), a.media.camera.number, 10)  # type: ignore[union-attr]
            assert_numbers_sane(a.media.from_tag(2), b.media.camera.number, 10)  # type: ignore[union-attr]

            # Chat and presence cross processes through the Redis manager.
            sent = await b.sio.call("chat.send", {"text": "跨进程你好"}, timeout=10)
            assert sent["ok"], sent
            await until(lambda: any(e == "chat.message" for e, _ in a.events), 10, "chat on the other process")

            # The clerk's process-two socket drops; it reconnects (to process two again) and rejoins: no ghost.
            old = b.participant_id
            await b.sio.disconnect()
            await until(
                lambda: any(e == "participant.left" and d["participant_id"] == old for e, d in a.events), 10, "left"
            )
            b2 = Caller(two, clerk, tag=3)
            try:
                await b2.connect()
                ack = await b2.join(session_id)
                assert old not in [p["participant_id"] for p in ack["participants"]]
                assert b2.media
                await until(lambda: len(a.media.from_tag(3)) >= 5 and len(b2.media.from_tag(1)) >= 5, 10, "rejoin")
            finally:
                await b2.close()
            assert not a.errors and not b.errors
        finally:
            await a.close()
            await b.close()


async def test_ending_a_session_through_a_non_owner_tells_everyone(servers: list[str]) -> None:
    """BUG: the owner read the forwarded message's ``sid`` before its kind: ``end`` has none (KeyError), so the
    request answered 200 while clients were never told and media went on."""
    one, two = servers
    async with aiohttp.ClientSession() as http:
        staff, clerk, session_id = await _call_across(http, one, two)
        a, b = Caller(one, staff, tag=1), Caller(two, clerk, tag=2)
        try:
            await a.connect()
            await b.connect()
            await a.join(session_id)  # process one owns the session
            await b.join(session_id)
            clerk_auth = {"Authorization": f"Bearer {clerk}"}
            async with http.post(f"{two}/api/v1/sessions/{session_id}/end", headers=clerk_auth) as resp:
                assert resp.status == 200, await resp.text()

            def told(c: Caller) -> bool:
                return any(e == "session.ended" and d["session_id"] == session_id for e, d in c.events)

            await until(lambda: told(a) and told(b), 5, "session.ended on both processes")
        finally:
            await a.close()
            await b.close()


class OwnRedis:
    """redis-server on a free loopback port of the test's own, nothing on disk; ``kill`` is SIGKILL."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed")
        self.binary, self.tmp, self.port = str(binary), tmp, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*args, "--dir", str(self.tmp)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping()
                return
            except redis.RedisError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


async def _status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/readyz") as resp:
        return resp.status


async def test_a_redis_restart_needs_no_process_restart(cluster_env: dict[str, str], tmp_path: Path) -> None:
    """BUG (issue 24): during a Redis outage forwarded events failed with an unretrieved ConnectionError; after the
    restart each process's listener was dead for good, lost owner keys were never recreated (``SET … XX``) and
    ``/readyz`` said 200 throughout.  Now: readiness reports the cluster, a join fails fast in words, the listener
    resubscribes, the owner re-asserts its key, and a join through the other process reaches the same room."""
    own = OwnRedis(tmp_path)
    own.start()
    try:
        async with _processes({**cluster_env, "CLOUDWINDOW_REDIS_URL": own.url}, tmp_path) as (one, two):
            async with aiohttp.ClientSession() as http:
                staff, clerk, session_id = await _call_across(http, one, two)
                a = Caller(one, staff, tag=1)
                try:
                    await a.connect()
                    await a.join(session_id)  # process one owns the session

                    own.kill()
                    deadline = time.monotonic() + 10
                    while await _status(http, one) != 503:
                        assert time.monotonic() < deadline, "/readyz stayed 200 with Redis gone"
                        await asyncio.sleep(0.2)
                    b = Caller(two, clerk, tag=2)
                    try:
                        await b.connect()
                        ack = await b.sio.call("session.join", {"session_id": session_id}, timeout=15)
                        assert ack["error"]["code"] == "session_unavailable", ack
                    finally:
                        await b.close()
                    await asyncio.sleep(5)
                    own.start()  # empty: every owner key is gone

                    deadline = time.monotonic() + 15
                    while not (await _status(http, one) == 200 and await _status(http, two) == 200):
                        assert time.monotonic() < deadline, "not ready again after Redis came back"
                        await asyncio.sleep(0.2)
                    r = redis.Redis.from_url(own.url, decode_responses=True)
                    await until(lambda: any(r.scan_iter("*:session:*:owner")), 10, "the owner key re-asserted")
                    b2 = Caller(two, clerk, tag=3)
                    try:
                        await b2.connect()
                        ack = await b2.join(session_id)
                        ids = sorted(p["participant_id"] for p in ack["participants"])
                        assert ids == sorted([a.participant_id, b2.participant_id]), ack  # one room, not a split
                        assert a.media and b2.media
                        await until(
                            lambda: len(a.media.from_tag(3)) >= 5 and len(b2.media.from_tag(1)) >= 5, 20, "media"
                        )
                    finally:
                        await b2.close()
                finally:
                    await a.close()
    finally:
        own.kill()
