"""SIGKILL mid-recording: every closed segment survives and is uploaded after the restart; at most one lost per track.

A real ``cloudwindow serve`` (SQLite, filesystem store, 1 s segments) on
127.0.0.1; two aiortc callers in a case session; the server is killed with
SIGKILL while they talk, then started again on the same data folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from recordings.join import participant_tracks, verify_segments
from recordings.segments import TrackManifest
from server.objectstore import FilesystemObjectStore, UrlSigner
from tests.media_harness import Caller, until
from tests.server.api.conftest import CASE_BODY
from tests.server_process import BIN, Server, free_port

PASSWORD = "crash-test-password-1"
SECRET = "crash-test-secret-0123456789abcdef"
SEGMENT = 1.0


@pytest.fixture
def crash_env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "CLOUDWINDOW_DATA_DIR": str(tmp_path / "data"),
        "CLOUDWINDOW_SECRET_KEY": SECRET,
        "CLOUDWINDOW_LOG_FORMAT": "text",
        "CLOUDWINDOW_LOG_LEVEL": "WARNING",
        "CLOUDWINDOW_MEDIA__HOST_ADDRESSES": '["127.0.0.1"]',
        "CLOUDWINDOW_MEDIA__ALLOWED_CIDRS": '["127.0.0.0/8"]',
        "CLOUDWINDOW_WEB_CLIENT_DIST": str(tmp_path / "none"),
        "CLOUDWINDOW_RECORDING__SEGMENT_SECONDS": str(SEGMENT),
        "CLOUDWINDOW_RECORDING__UPLOAD_INTERVAL": "0.2",
        "CLOUDWINDOW_RECORDING__JOB_INTERVAL": "0.2",
    }
    env.pop("CLOUDWINDOW_CONFIG", None)
    for args in (["db", "upgrade"], ["demo", "load", "--password", PASSWORD]):
        subprocess.run([str(BIN / "cloudwindow"), *args], env=env, check=True, capture_output=True, timeout=120)
    return env


@pytest.fixture
async def server(crash_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Server]:
    (tmp_path / "logs").mkdir()
    srv = Server(crash_env, free_port(), tmp_path / "logs")
    try:
        yield srv
    finally:
        srv.stop()


async def _login(http: aiohttp.ClientSession, url: str, username: str) -> str:
    async with http.post(f"{url}/api/v1/auth/login", json={"username": username, "password": PASSWORD}) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])


async def _case_with_call(server: Server) -> tuple[str, str, int, int]:
    """Staff and clerk tokens, a new case and its call session."""
    async with aiohttp.ClientSession() as http:
        staff, clerk = await _login(http, server.url, "staff"), await _login(http, server.url, "clerk_t1")
        auth = {"Authorization": f"Bearer {staff}"}
        async with http.post(f"{server.url}/api/v1/cases", json=CASE_BODY, headers=auth) as resp:
            assert resp.status == 201, await resp.text()
            case_id = (await resp.json())["id"]
        async with http.post(f"{server.url}/api/v1/cases/{case_id}/sessions", json={"kind": "call"}, headers=auth) as r:
            session_id = (await r.json())["id"]
    return staff, clerk, case_id, session_id


def _track_folders(spool: Path) -> list[Path]:
    if not spool.is_dir():
        return []
    return [f for p in sorted(spool.iterdir()) if p.is_dir() for f, _ in participant_tracks(p)]


def _closed_segments(spool: Path) -> int:
    """The fewest closed segments of any of the session's 4 tracks (0 until all 4 have a manifest)."""
    folders = _track_folders(spool)
    if len(folders) < 4:
        return 0
    return min(len(TrackManifest.load(f).segments) for f in folders)


async def test_sigkill_mid_recording_then_restart(server: Server, tmp_path: Path) -> None:
    await server.start()
    staff, clerk, case_id, session_id = await _case_with_call(server)
    spool = tmp_path / "data" / "recordings" / f"session-{session_id}"
    a, b = Caller(server.url, staff, tag=1), Caller(server.url, clerk, tag=2)
    try:
        await a.connect()
        await b.connect()
        await a.join(session_id)
        await b.join(session_id)
        assert a.media and b.media
        await until(lambda: len(b.media.from_tag(1)) >= 50 and len(a.media.from_tag(2)) >= 50, 30, "video both ways")
        # Killed once every track has closed two segments (what is checked below), not after a fixed amount of media:
        # 50 frames take less than the 2 s two closed segments need.
        await until(lambda: _closed_segments(spool) >= 2, 30, "two closed segments on every track")
        killed_at = time.time()
        server.kill()
    finally:
        await a.close()
        await b.close()

    folders = _track_folders(spool)
    assert len(folders) == 4, folders
    closed: dict[Path, TrackManifest] = {}
    for folder in folders:
        m = TrackManifest.load(folder)
        assert not m.ended, "the process died: nobody closed the track"
        assert len(m.segments) >= 2, m.segments
        assert [s.index for s in m.segments] == list(range(1, len(m.segments) + 1))
        verify_segments(folder, m)
        # Lost: only the open segment (a .part file, at most one), i.e. at most one segment's length of media.
        assert len(list(folder.glob("*.part"))) <= 1
        lost = killed_at - (m.recording_start + m.segments[-1].end)
        assert lost <= SEGMENT + 0.8, f"{folder.name}: {lost:.2f} s lost"
        closed[folder] = m

    # Restarted on the same data: the uploader resumes and every closed segment lands in the store, verified.
    await server.start()
    store = FilesystemObjectStore(tmp_path / "data" / "objects", UrlSigner(SECRET))

    def uploaded_all() -> bool:
        for folder, m in closed.items():
            record = folder / "uploaded.json"
            if not record.is_file() or not {s.file for s in m.segments} <= set(json.loads(record.read_text())):
                return False
        return True

    await until(uploaded_all, 20, f"segments uploaded after the restart\n{server.log_text()}")
    for folder, m in closed.items():
        for seg in m.segments:
            key = f"recordings/{folder.relative_to(tmp_path / 'data' / 'recordings').as_posix()}/{seg.file}"
            stored = await store.stat(key)
            assert (stored.size, stored.sha256) == (seg.size, seg.sha256)
    await store.close()

    # The session is ended after the restart: its durable post-session job joins what survived into the case file.
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {clerk}"}) as http:
        async with http.post(f"{server.url}/api/v1/sessions/{session_id}/end") as resp:
            assert resp.status == 200, await resp.text()
        deadline = time.monotonic() + 30
        while True:
            async with http.get(f"{server.url}/api/v1/cases/{case_id}/recordings") as resp:
                items = (await resp.json())["items"]
            if len(items) == 3 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    assert sorted(r["kind"] for r in items) == ["composite", "participant", "participant"], server.log_text()
    for r in items:
        covered = max(m.segments[-1].end for m in closed.values()) - min(m.segments[0].start for m in closed.values())
        assert covered - 1.5 <= r["duration_s"] <= covered + 0.5


EMPTY_TIMEOUT = 3.0


async def test_a_session_orphaned_by_sigkill_ends_by_itself_and_its_recording_is_listed(
    server: Server, tmp_path: Path
) -> None:
    """BUG (issue 19, item 15): nobody came back after the kill, and the session stayed open for ever (its empty timer
    died with the process), so its recording never reached the case.  Now it ends after the empty-session timeout,
    by the restarted process's sweeper, and the recording is joined and listed: within timeout + 60 s."""
    # Default recording settings (no 1 s segments): at most 2 s of media may be lost at the kill (issue 19, item 18).
    env = {k: v for k, v in server.env.items() if k != "CLOUDWINDOW_RECORDING__SEGMENT_SECONDS"}
    server.env = {**env, "CLOUDWINDOW_SIGNALLING__EMPTY_SESSION_TIMEOUT": str(EMPTY_TIMEOUT)}
    await server.start()
    staff, clerk, case_id, session_id = await _case_with_call(server)
    spool = tmp_path / "data" / "recordings" / f"session-{session_id}"
    a, b = Caller(server.url, staff, tag=1), Caller(server.url, clerk, tag=2)
    try:
        await a.connect()
        await b.connect()
        await a.join(session_id)
        await b.join(session_id)
        await until(lambda: _closed_segments(spool) >= 2, 30, "two closed segments on every track")
        await asyncio.sleep(random.uniform(0, 1.5))  # killed anywhere within a segment
        killed_at = time.time()
        server.kill()
    finally:
        await a.close()
        await b.close()
    for folder in _track_folders(spool):
        m = TrackManifest.load(folder)
        lost = killed_at - (m.recording_start + m.segments[-1].end)
        assert lost <= 2.0, f"{folder.name}: {lost:.2f} s of media lost at the kill with default settings"

    await server.start()  # and nobody comes back
    restarted = time.monotonic()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {clerk}"}) as http:

        async def listed() -> list[dict[str, object]]:
            async with http.get(f"{server.url}/api/v1/cases/{case_id}/recordings") as resp:
                return list((await resp.json())["items"])

        items: list[dict[str, object]] = []
        while time.monotonic() - restarted < EMPTY_TIMEOUT + 60 and len(items) < 3:
            items = await listed()
            await asyncio.sleep(0.5)
        async with http.get(f"{server.url}/api/v1/cases/{case_id}/audit") as resp:
            actions = [(e["action"], e["details"]) for e in (await resp.json())["entries"]]
    assert ("session.ended", {"session_id": session_id, "reason": "empty"}) in actions, server.log_text()
    assert sorted(str(r["kind"]) for r in items) == ["composite", "participant", "participant"], server.log_text()


async def test_a_session_across_a_sigkill_and_a_rejoin_gives_one_composite_on_the_wall_clock(
    server: Server, tmp_path: Path
) -> None:
    """BUG (issue 19, items 16 and 17): after a restart the composite put the rejoined participants at t≈0 over the
    pre-crash tiles (15 s of composite for 53 s of session), and kept a tile per join.  Now: the composite spans the
    session's media on the wall clock (±1 s) with one tile per person."""
    await server.start()
    staff, clerk, case_id, session_id = await _case_with_call(server)
    spool = tmp_path / "data" / "recordings" / f"session-{session_id}"

    def closed_since(t: float) -> int:
        """The fewest closed segments of the 4 tracks recorded since ``t`` (wall clock; 0 until there are 4)."""
        ms = [m for m in (TrackManifest.load(f) for f in _track_folders(spool)) if m.recording_start >= t]
        return min((len(m.segments) for m in ms), default=0) if len(ms) >= 4 else 0

    async def talk(tag: int, segments: int) -> None:
        a, b = Caller(server.url, staff, tag=tag), Caller(server.url, clerk, tag=tag + 1)
        try:
            await a.connect()
            await b.connect()
            await a.join(session_id)
            await b.join(session_id)
            assert a.media and b.media
            await until(lambda: len(b.media.from_tag(tag)) >= 20 and len(a.media.from_tag(tag + 1)) >= 20, 30, "video")
            await until(lambda: closed_since(since) >= 2, 30, "two closed segments on every track of this part")
            if tag == 1:
                server.kill()
        finally:
            await a.close()
            await b.close()

    since = 0.0
    await talk(1, 2)
    since = time.time()
    await server.start()
    await talk(3, 2)  # the same two people rejoin the same session on the restarted process
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {clerk}"}) as http:
        async with http.post(f"{server.url}/api/v1/sessions/{session_id}/end") as resp:
            assert resp.status == 200, await resp.text()
        deadline = time.monotonic() + 60
        while True:
            async with http.get(f"{server.url}/api/v1/cases/{case_id}/audit") as resp:
                entries = (await resp.json())["entries"]
            saved = [e["details"] for e in entries if e["action"] == "recording.saved"]
            if any(d["kind"] == "composite" for d in saved) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    composite = next((d for d in saved if d["kind"] == "composite"), None)
    assert composite is not None, server.log_text()
    assert composite["tiles"] == 2  # two people, four joins
    # The session's media span on the wall clock, from every track's manifest (both processes' recorders).
    manifests = [TrackManifest.load(f) for f in _track_folders(spool)]
    assert len(manifests) == 8  # 2 people x 2 joins x (audio, camera)
    first = min(m.recording_start + m.segments[0].start for m in manifests if m.segments)
    last = max(m.recording_start + m.segments[-1].end for m in manifests if m.segments)
    assert abs(composite["duration_s"] - (last - first)) <= 1.0, (composite["duration_s"], last - first)
    offsets = sorted(d["start_offset_s"] for d in saved if d["kind"] == "participant")
    assert offsets[0] == 0 and offsets[-1] > 1.0  # the rejoined pieces start later, where they happened
