"""The waiting room and the party limit: waiting does not take a place; admitting one past the limit is refused."""

from __future__ import annotations

from typing import Any

import pytest

from server.settings import Settings, SignallingSettings
from tests.media_harness import Caller, until
from tests.server.consultation.test_consultation_call import consultation, events, invite, redeem


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"signalling": SignallingSettings(max_participants=2)})


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_admitting_past_the_limit_is_refused_until_a_place_is_free(as_user: Any, client: Any) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id, session_id = await consultation(staff, clerk)
    inv = await invite(clerk, case_id, session_id, role="guest", display_name="企业代表")
    token = (await (await redeem(client, session_id, inv["token"])).json())["access_token"]
    url = f"http://127.0.0.1:{client.server.port}"
    host, point, guest = Caller(url, clerk.token, 0), Caller(url, staff.token, 0), Caller(url, token, 0)
    try:
        for c in (host, point, guest):
            await c.connect()
        for c in (host, point):
            assert (await c.sio.call("session.join", {"session_id": session_id}, timeout=10))["ok"]
        ack = await guest.sio.call("session.join", {"session_id": session_id}, timeout=10)
        assert ack["waiting"] is True, "waiting takes no place"
        await until(lambda: bool(events(host, "waiting.joined")), 5, "waiting.joined")
        waiter_id = events(host, "waiting.joined")[-1]["waiter"]["waiter_id"]
        full = await host.sio.call("session.admit", {"waiter_id": waiter_id}, timeout=10)
        assert full["error"]["code"] == "session_full", full
        assert (await point.sio.call("session.leave", {}, timeout=10))["ok"]
        ack = await host.sio.call("session.admit", {"waiter_id": waiter_id}, timeout=10)
        assert ack["ok"], ack
        await until(lambda: bool(events(guest, "session.admitted")), 5, "session.admitted")
    finally:
        for c in (host, point, guest):
            await c.close()
