"""The orphaned-session sweeper's rules, on both engines (the SIGKILL test in test_recording_crash runs it for real)."""

from __future__ import annotations

from typing import Any

from server.app import SERVICES
from server.services import audit
from server.services.session_sweeper import SessionSweeper
from server.storage.sessions import SessionRepository
from tests.server.api.conftest import open_case


async def test_only_joined_sessions_without_a_room_anywhere_end_after_the_timeout(as_user: Any, client: Any) -> None:
    sv = client.app[SERVICES]
    staff = await as_user("staff")
    ids = []
    for name in ("甲", "乙", "丙"):
        cid = (await open_case(staff, applicant_name=name))["id"]
        resp = await staff.post(f"/api/v1/cases/{cid}/sessions", json={"kind": "call"})
        ids.append(((await resp.json())["id"], cid))
    (joined, joined_case), (never, _), (live, live_case) = ids
    async with sv.db.transaction() as s:  # what the signalling join callback writes
        for sid, cid in ((joined, joined_case), (live, live_case)):
            await audit.append(s, sv.clock, cid, None, "session.joined", {"session_id": sid, "participant_id": "p1"})

    now = [100.0]
    rooms = {live}

    async def is_live(session_id: int) -> bool:
        return session_id in rooms

    sweeper = SessionSweeper(
        db=sv.db, sessions=sv.sessions, is_live=is_live, monotonic=lambda: now[0], empty_timeout=30
    )
    assert sweeper.interval == 10
    assert await sweeper.sweep() == []  # first seen without a room: the count starts
    now[0] += 29
    assert await sweeper.sweep() == []
    # Someone comes back in time: the room is live again, and the count starts afresh once it is gone.
    rooms.add(joined)
    assert await sweeper.sweep() == []
    rooms.discard(joined)
    now[0] += 1
    assert await sweeper.sweep() == []
    now[0] += 30
    assert await sweeper.sweep() == [joined]
    async with sv.db.read() as s:
        repo = SessionRepository(s)
        states = {sid: (await repo.get(sid)).state for sid, _ in ids}  # type: ignore[union-attr]
    assert states == {joined: "ended", never: "open", live: "open"}
    entries = (await (await staff.get(f"/api/v1/cases/{joined_case}/audit")).json())["entries"]
    assert entries[-1]["action"] == "session.ended" and entries[-1]["details"]["reason"] == "empty"
