"""A session left empty ends by itself after ``signalling.empty_session_timeout``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import socketio

from server.settings import Settings
from tests.server.api.conftest import open_case


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"signalling": settings.signalling.model_copy(update={"empty_session_timeout": 1.0})}
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_empty_session_ends_after_timeout_unless_someone_comes_back(as_user: Any, client: Any) -> None:
    staff = await as_user("staff")
    cid = (await open_case(staff))["id"]
    session_id = (await (await staff.post(f"/api/v1/cases/{cid}/sessions", json={"kind": "call"})).json())["id"]
    url = f"http://127.0.0.1:{client.server.port}"

    sio = socketio.AsyncClient(reconnection=False)
    await sio.connect(url, auth={"token": staff.token}, transports=["websocket"])
    try:
        assert (await sio.call("session.join", {"session_id": session_id}, timeout=5))["ok"]
        assert (await sio.call("session.leave", {}, timeout=5))["ok"]
        await asyncio.sleep(0.5)  # back before the timeout: the session stays open
        assert (await sio.call("session.join", {"session_id": session_id}, timeout=5))["ok"]
        assert (await sio.call("session.leave", {}, timeout=5))["ok"]
        for _ in range(40):
            state = (await (await staff.get(f"/api/v1/cases/{cid}/sessions")).json())["items"][0]
            if state["state"] == "ended":
                break
            await asyncio.sleep(0.1)
        assert state["state"] == "ended" and state["end_reason"] == "empty"
        ack = await sio.call("session.join", {"session_id": session_id}, timeout=5)
        assert ack["error"]["code"] == "session_ended"
    finally:
        await sio.disconnect()
