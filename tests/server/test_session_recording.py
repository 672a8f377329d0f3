"""A case session recorded through the whole app: Socket.IO callers, the SFU, the recorder, the case audit.

Participants learn that the session is recorded (join ack and
``recording.state``); each one's tracks land as verified segments in the
spool; the case audit says when recording started and stopped and what it
holds; a participant's segments join into one playable file.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from recordings.join import join_tracks, participant_tracks, verify_segments
from recordings.segments import TrackManifest
from server.app import SERVICES
from server.settings import RecordingSettings, Settings
from tests.media_harness import Caller, until
from tests.server.api.conftest import open_call, open_case


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"recording": RecordingSettings(segment_seconds=1.0, job_interval=0.2)})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_case_session_is_recorded_and_audited(as_user: Any, client: Any, settings: Settings) -> None:
    await recorded_session_flow(as_user, client, settings)


async def fetch(client: Any, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """GET a signed URL: a path on our server (filesystem store) or an absolute presigned S3 URL (on 127.0.0.1)."""
    if url.startswith("http"):
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
            return resp.status, await resp.read(), dict(resp.headers)
    resp = await client.get(url, headers=headers)
    return resp.status, await resp.read(), dict(resp.headers)


async def recorded_session_flow(as_user: Any, client: Any, settings: Settings) -> None:
    """The whole flow; also run against the S3 store (tests/server/objectstore/test_recording_pipeline_s3.py)."""
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    staff_name = (await (await staff.get("/api/v1/me")).json())["display_name"]
    clerk_name = (await (await clerk.get("/api/v1/me")).json())["display_name"]
    case, session_id = await open_call(staff)
    base = f"http://127.0.0.1:{client.server.port}"
    a, b = Caller(base, staff.token, tag=1), Caller(base, clerk.token, tag=2)
    try:
        await a.connect()
        await b.connect()
        ack_a = await a.join(session_id)
        ack_b = await b.join(session_id)
        assert ack_a["session"]["recording"] is True and ack_b["session"]["recording"] is True
        await until(lambda: any(e == "recording.state" for e, _ in a.events), 5, "recording.state")
        assert next(d for e, d in a.events if e == "recording.state") == {"session_id": session_id, "recording": True}
        assert a.media and b.media
        await until(lambda: len(b.media.from_tag(1)) >= 40 and len(a.media.from_tag(2)) >= 40, 20, "3 s of video")
        resp = await clerk.post(f"/api/v1/sessions/{session_id}/end")
        assert resp.status == 200, await resp.text()
        await until(lambda: any(e == "session.ended" for e, _ in a.events), 10, "session.ended")
    finally:
        await a.close()
        await b.close()

    spool = settings.resolved_spool_dir() / f"session-{session_id}"

    async def stopped() -> bool:
        audit = await (await staff.get(f"/api/v1/cases/{case['id']}/audit")).json()
        return any(e["action"] == "recording.stopped" for e in audit["entries"])

    for _ in range(100):
        if await stopped():
            break
        await asyncio.sleep(0.1)
    audit = await (await staff.get(f"/api/v1/cases/{case['id']}/audit")).json()
    actions = [e["action"] for e in audit["entries"]]
    assert "recording.started" in actions and "recording.stopped" in actions
    assert audit["verified"] is True
    stop = next(e for e in audit["entries"] if e["action"] == "recording.stopped")
    assert {(t["participant_id"], t["label"]) for t in stop["details"]["tracks"]} == {
        (p, label) for p in (a.participant_id, b.participant_id) for label in ("audio", "camera")
    }
    # The uploader moves every closed segment (and the finished manifests) to the object store, verified.
    store = client.app[SERVICES].store
    uploader = client.app[SERVICES].recordings.uploader

    def all_uploaded() -> bool:
        folders = uploader.track_folders()
        return len(folders) == 4 and all("manifest.json" in uploader.uploaded(f) for f in folders)

    await until(all_uploaded, 15, "segments uploaded")
    for folder in uploader.track_folders():
        for seg in TrackManifest.load(folder).segments:
            stored = await store.stat(uploader.key_for(folder / seg.file))
            assert (stored.size, stored.sha256) == (seg.size, seg.sha256)

    for participant in (a.participant_id, b.participant_id):
        tracks = participant_tracks(spool / participant)
        assert sorted(m.label for _, m in tracks) == ["audio", "camera"]
        for folder, m in tracks:
            assert m.ended and len(m.segments) >= 2
            verify_segments(folder, m)
        joined = join_tracks(tracks, Path(spool / f"{participant}.webm"))
        with av.open(str(joined.path)) as c:
            assert {s.type for s in c.streams} == {"audio", "video"}
            assert sum(1 for _ in c.decode(video=0)) >= 30

    # The post-session job joined each participant's segments and put the files in the case file.
    async def listed() -> list[dict[str, Any]]:
        return list((await (await staff.get(f"/api/v1/cases/{case['id']}/recordings")).json())["items"])

    for _ in range(300):
        if len(await listed()) == 3:
            break
        await asyncio.sleep(0.1)
    everything = await listed()
    assert sorted(r["kind"] for r in everything) == ["composite", "participant", "participant"], everything
    items = [r for r in everything if r["kind"] == "participant"]
    names = {r["participant_display_name"] for r in items}
    assert names == {staff_name, clerk_name}
    audit = await (await staff.get(f"/api/v1/cases/{case['id']}/audit")).json()
    assert [e["action"] for e in audit["entries"]].count("recording.saved") == 3 and audit["verified"]
    composite = next(r for r in everything if r["kind"] == "composite")
    signed = await (await staff.get(f"/api/v1/cases/{case['id']}/recordings/{composite['id']}/url")).json()
    _, body, _ = await fetch(client, signed["url"])
    (Path(settings.data_dir) / "composite.webm").write_bytes(body)
    with av.open(str(Path(settings.data_dir) / "composite.webm")) as c:
        assert (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == (640, 480)
        assert {s.type for s in c.streams} == {"audio", "video"}
        assert abs(float(c.duration or 0) / 1e6 - composite["duration_s"]) <= 0.3

    # Playback: a signed URL, served with Range; the bytes are the recorded file; PyAV plays it.
    rec = items[0]
    signed = await (await clerk.get(f"/api/v1/cases/{case['id']}/recordings/{rec['id']}/url")).json()
    status, body, headers = await fetch(client, signed["url"])
    assert status == 200 and headers["Content-Type"] == "video/webm"
    assert len(body) == rec["size"] and hashlib.sha256(body).hexdigest() == rec["sha256"]
    status, part, _ = await fetch(client, signed["url"], headers={"Range": "bytes=0-99"})
    assert status == 206 and len(part) == 100
    played = Path(settings.data_dir) / "played.webm"
    played.write_bytes(body)
    with av.open(str(played)) as c:
        assert abs(float(c.duration or 0) / 1e6 - rec["duration_s"]) <= 0.5
        assert sum(1 for _ in c.decode(video=0)) >= 30

    # Tampered and foreign: refused.  (Our HMAC-signed URLs; moto does not check S3 presigned signatures.)
    if settings.object_store.kind == "filesystem":
        tampered = signed["url"][:-1] + ("0" if signed["url"][-1] != "0" else "1")
        assert (await fetch(client, tampered))[0] == 403
    else:
        assert signed["url"].startswith("http://127.0.0.1:") and "X-Amz-Signature=" in signed["url"]
    other = await as_user("staff3")  # another village, another town
    for path in (f"/api/v1/cases/{case['id']}/recordings", f"/api/v1/cases/{case['id']}/recordings/{rec['id']}/url"):
        refused = await other.get(path)
        assert refused.status == 404, await refused.text()
    wrong_case = await open_case(staff)
    refused = await staff.get(f"/api/v1/cases/{wrong_case['id']}/recordings/{rec['id']}/url")
    assert (await refused.json())["code"] == "recording_not_found"
