"""Two server processes sharing Redis: clients on different processes meet in one session.

The processes are real ``cloudwindow serve`` subprocesses on 127.0.0.1 with
python-socketio's Redis manager and Redis session ownership
(``signalling.cluster``), on the real Redis at 127.0.0.1:6379 under a key
prefix of their own.  The same call as ``test_media_call`` runs across them.
"""

from __future__ import annotations

import asyncio
import os
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


@pytest.fixture
async def servers(cluster_env: dict[str, str], tmp_path: Path) -> AsyncIterator[list[str]]:
    procs, urls = [], []
    for i in range(2):
        port = _free_port()
        log = open(tmp_path / f"server{i}.log", "w")  # noqa: ASYNC230 - a fixture; closed below
        procs.append(
            (
                subprocess.Popen(  # noqa: ASYNC220 - starting, not waiting
                    [str(BIN / "cloudwindow"), "serve", "--port", str(port)], env=cluster_env, stdout=log, stderr=log
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
