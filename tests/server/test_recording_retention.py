"""Retention: recordings past their matter's retention period are purged (object, row, raw segments), logged and
audited; a legal hold on the case stops the purge; lifting it lets the next purge run."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from server.app import SERVICES, Services
from server.clock import FakeClock
from server.storage.models import Matter, MediaSession, Recording
from tests.server.api.conftest import open_case


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def add_recording(services: Services, case_id: int) -> int:
    """An ended session with one stored recording and one raw segment, as the post-session job leaves them."""
    now = services.clock.now()
    async with services.db.transaction() as s:
        session = MediaSession(case_id=case_id, kind="call", state="ended", created_at=now, ended_at=now)
        s.add(session)
        await s.flush()
        await services.store.put(f"recordings/session-{session.id}/p1/camera-s1/000001.webm", _body(b"segment"))
        key = f"recordings/session-{session.id}/p1.webm"
        stored = await services.store.put(key, _body(b"joined file"), content_type="video/webm")
        row = Recording(
            case_id=case_id,
            session_id=session.id,
            kind="participant",
            participant_id="p1",
            participant_display_name="测试",
            content_type="video/webm",
            duration_s=1.0,
            size=stored.size,
            sha256=stored.sha256,
            object_key=key,
            created_at=now,
        )
        s.add(row)
        await s.flush()
        return row.id


async def test_purge_after_retention_unless_on_hold(
    as_user: Any, client: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    services: Services = client.app[SERVICES]
    staff, supervisor = await as_user("staff"), await as_user("supervisor")
    kept_case, purged_case = await open_case(staff), await open_case(staff)
    held = await add_recording(services, kept_case["id"])
    expiring = await add_recording(services, purged_case["id"])
    async with services.db.transaction() as s:
        days = (await s.execute(select(Matter.retention_days).where(Matter.code == "MZ-001"))).scalar_one()

    resp = await supervisor.request("PUT", f"/api/v1/cases/{kept_case['id']}/legal-hold", json={"hold": True})
    assert resp.status == 200 and (await resp.json())["legal_hold"] is True
    refused = await staff.request("PUT", f"/api/v1/cases/{kept_case['id']}/legal-hold", json={"hold": False})
    assert refused.status == 403 and (await refused.json())["code"] == "forbidden"

    clock.advance((timedelta(days=days) - timedelta(seconds=1)).total_seconds())
    assert await services.recordings.purge_pass() == []  # not yet
    clock.advance(2)
    with caplog.at_level(logging.INFO, logger="server.services.recording"):
        assert await services.recordings.purge_pass() == [expiring]
    assert any(f"purged recording {expiring}" in r.getMessage() for r in caplog.records)

    keys = [o.key async for o in services.store.list("recordings/")]
    staff, supervisor = await as_user("staff"), await as_user("supervisor")  # a year on: fresh logins
    held_session = await _session_of(services, held)
    assert all(f"session-{held_session}/" in k for k in keys), keys
    assert len(keys) == 2  # the held case's joined file and raw segment
    listed = await (await staff.get(f"/api/v1/cases/{purged_case['id']}/recordings")).json()
    assert listed["items"] == []
    audit = await (await staff.get(f"/api/v1/cases/{purged_case['id']}/audit")).json()
    purge = [e for e in audit["entries"] if e["action"] == "recording.purged"]
    assert len(purge) == 1 and purge[0]["details"]["recording_id"] == expiring and audit["verified"]

    # Lifting the hold lets the next purge take the held recording too.
    resp = await supervisor.request("PUT", f"/api/v1/cases/{kept_case['id']}/legal-hold", json={"hold": False})
    assert resp.status == 200
    assert await services.recordings.purge_pass() == [held]
    assert [o.key async for o in services.store.list("recordings/")] == []


async def _session_of(services: Services, recording_id: int) -> int:
    async with services.db.transaction() as s:
        row = await s.get(Recording, recording_id)
        assert row is not None
        return row.session_id
