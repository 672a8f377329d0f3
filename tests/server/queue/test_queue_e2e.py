"""End to end: a point takes a ticket, a clerk calls it, the ring arrives over Socket.IO, both meet in the
case's session with media flowing (aiortc clients), and the clerk completes the ticket."""

from __future__ import annotations

from typing import Any

import pytest

from server.app import Services
from tests.media_harness import Caller, assert_numbers_sane, until
from tests.server.api.conftest import open_case, png_bytes, upload
from tests.server.queue.conftest import ok, window_id


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_ticket_to_call_to_completion(as_user: Any, client: Any, services: Services) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk")
    case = await open_case(staff, centre_code="D01")
    for item in case["checklist"]:
        await ok(await upload(staff, case["id"], item["code"], png_bytes()), 201)
    await ok(await staff.post(f"/api/v1/cases/{case['id']}/transitions", json={"to": "submitted"}))

    base = f"http://127.0.0.1:{client.server.port}"
    point, window = Caller(base, staff.token, tag=1), Caller(base, clerk.token, tag=2)
    try:
        await point.connect()
        await window.connect()
        ticket = await ok(await staff.post(f"/api/v1/cases/{case['id']}/tickets"), 201)
        win = await window_id(services, "D01-MZ-1")
        await ok(await clerk.post(f"/api/v1/windows/{win}/sign-in"))
        called = await ok(await clerk.post(f"/api/v1/windows/{win}/call-next"))
        assert called["id"] == ticket["id"]

        # The service point's browser rings, with the session to join.
        await until(lambda: any(e == "queue.ring" for e, _ in point.events), 5, "queue.ring at the point")
        ring = next(d for e, d in point.events if e == "queue.ring")
        assert ring["session_id"] == called["session_id"]

        await window.join(called["session_id"])
        await point.join(ring["session_id"])
        await ok(await staff.post(f"/api/v1/tickets/{ticket['id']}/answer"))
        assert point.media and window.media
        await until(
            lambda: len(window.media.from_tag(1)) >= 10 and len(point.media.from_tag(2)) >= 10, 15, "video both ways"
        )
        assert_numbers_sane(window.media.from_tag(1), point.media.camera.number, 10)  # type: ignore[union-attr]
        assert_numbers_sane(point.media.from_tag(2), window.media.camera.number, 10)  # type: ignore[union-attr]

        done = await ok(await clerk.post(f"/api/v1/tickets/{ticket['id']}/complete"))
        assert done["state"] == "done"
        assert not point.errors and not window.errors
    finally:
        await point.close()
        await window.close()
