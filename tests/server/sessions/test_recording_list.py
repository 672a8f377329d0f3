"""The recording list tells a client which participant (join) a file is from and where it starts.

Each join is a participant of its own, so a rejoin gives a separate file; the
list carries ``participant_id`` (the wire's id of that join) and
``start_offset_s`` (seconds from the start of the session's recording) so
the files of one session can be laid on one timeline.  Real media: aiortc
callers through the whole app (SQLite only; the database plays no part).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.settings import RecordingSettings, Settings
from tests.media_harness import Caller, until
from tests.server.api.conftest import open_call

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"recording": RecordingSettings(segment_seconds=1.0, job_interval=0.2, composite=False)}
    )


@SQLITE_ONLY
async def test_rejoin_gives_a_file_per_participant_with_its_start_offset(as_user: Any, client: Any) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case, session_id = await open_call(staff)
    base = f"http://127.0.0.1:{client.server.port}"
    a, b = Caller(base, staff.token, tag=1), Caller(base, clerk.token, tag=2)
    try:
        await a.connect()
        await b.connect()
        await a.join(session_id)
        await b.join(session_id)
        first_b = b.participant_id
        assert a.media and b.media
        await until(lambda: len(a.media.from_tag(2)) >= 30, 20, "clerk's first join sends video")
        await asyncio.sleep(1.0)  # the rejoin starts visibly later on the timeline
        await b.join(session_id)  # a rejoin: a new participant id, a new file
        second_b = b.participant_id
        assert second_b != first_b
        seen = len(a.media.from_tag(2))
        await until(lambda: len(a.media.from_tag(2)) >= seen + 30, 20, "clerk's rejoin sends video")
        assert (await clerk.post(f"/api/v1/sessions/{session_id}/end")).status == 200
    finally:
        await a.close()
        await b.close()

    async def listed() -> list[dict[str, Any]]:
        return list((await (await staff.get(f"/api/v1/cases/{case['id']}/recordings")).json())["items"])

    for _ in range(300):
        if len(await listed()) == 3:
            break
        await asyncio.sleep(0.1)
    items = {r["participant_id"]: r for r in await listed()}
    assert set(items) == {a.participant_id, first_b, second_b}, items
    assert all(r["kind"] == "participant" and r["session_id"] == session_id for r in items.values())
    offsets = {pid: items[pid]["start_offset_s"] for pid in items}
    assert all(isinstance(o, float) and o >= 0 for o in offsets.values()), offsets
    assert offsets[a.participant_id] < 1.0
    # The rejoin began at least a second and 30 frames after the first join, and after the first file ended.
    assert offsets[second_b] >= offsets[first_b] + 1.0, offsets
    assert offsets[second_b] >= offsets[first_b] + items[first_b]["duration_s"] - 0.5, (offsets, items)
