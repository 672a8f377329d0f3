"""Socket.IO signalling through the whole app: auth on connect, join rules, presence, rejoin, chat."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import socketio

from tests.conftest import Session
from tests.server.api.conftest import open_case


class Peer:
    """A Socket.IO client that records every event it receives."""

    def __init__(self, client: Any, token: str) -> None:
        self.url = f"http://127.0.0.1:{client.server.port}"
        self.token = token
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.sio.on("*", self._record)

    async def _record(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))

    async def connect(self) -> None:
        await self.sio.connect(self.url, auth={"token": self.token}, transports=["websocket"], wait_timeout=5)

    async def call(self, event: str, data: Any = None) -> Any:
        return await self.sio.call(event, data if data is not None else {}, timeout=5)

    async def wait_for(self, event: str, predicate: Any = None, limit: float = 5.0) -> Any:
        async def poll() -> Any:
            while True:
                for name, data in self.events:
                    if name == event and (predicate is None or predicate(data)):
                        return data
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(poll(), limit)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


@pytest.fixture
async def peers() -> Any:
    made: list[Peer] = []

    async def make(client: Any, session: Session) -> Peer:
        peer = Peer(client, session.token)
        await peer.connect()
        made.append(peer)
        return peer

    yield make
    for p in made:
        await p.close()


async def _session(staff: Session, case_id: int) -> int:
    resp = await staff.post(f"/api/v1/cases/{case_id}/sessions", json={"kind": "call"})
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["id"])


async def test_connect_needs_a_valid_token(client: Any, demo: Any) -> None:
    for auth, code in ((None, "auth_required"), ({"token": "garbage"}, "token_invalid")):
        sio = socketio.AsyncClient(reconnection=False)
        errors: list[Any] = []
        sio.on("connect_error", errors.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await sio.connect(f"http://127.0.0.1:{client.server.port}", auth=auth, transports=["websocket"])
        assert errors, "no connect_error"
        assert errors[0]["data"]["code"] == code


async def test_join_presence_chat_and_leave(as_user: Any, client: Any, peers: Any) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    cid = (await open_case(staff))["id"]
    sid = await _session(staff, cid)
    again = await staff.post(f"/api/v1/cases/{cid}/sessions", json={"kind": "call"})
    assert again.status == 200 and (await again.json())["id"] == sid

    a, b = await peers(client, staff), await peers(client, clerk)
    ack_a = await a.call("session.join", {"session_id": sid})
    assert ack_a["ok"], ack_a
    assert [p["display_name"] for p in ack_a["participants"]] == [ack_a["participants"][0]["display_name"]]
    ack_b = await b.call("session.join", {"session_id": sid})
    assert ack_b["ok"]
    assert len(ack_b["participants"]) == 2
    joined = await a.wait_for("participant.joined")
    assert joined["participant"]["participant_id"] == ack_b["participant_id"]

    sent = await b.call("chat.send", {"text": "您好，请出示身份证"})
    assert sent["ok"]
    got = await a.wait_for("chat.message")
    assert got["text"] == "您好，请出示身份证"
    assert got["participant_id"] == ack_b["participant_id"]

    assert (await b.call("session.leave"))["ok"]
    left = await a.wait_for("participant.left")
    assert left["participant_id"] == ack_b["participant_id"]

    audit = await (await clerk.get(f"/api/v1/cases/{cid}/audit")).json()
    actions = [e["action"] for e in audit["entries"]]
    assert actions.count("session.joined") == 2
    assert "chat.message" in actions and "session.left" in actions
    assert audit["verified"]


async def test_join_refusals(as_user: Any, client: Any, peers: Any) -> None:
    staff, staff2, clerk = await as_user("staff"), await as_user("staff2"), await as_user("clerk_t1")
    cid = (await open_case(staff))["id"]
    sid = await _session(staff, cid)
    other_unit = await peers(client, staff2)
    ack = await other_unit.call("session.join", {"session_id": sid})
    assert ack == {"ok": False, "error": {"code": "join_forbidden", "message": ack["error"]["message"]}}
    ack = await other_unit.call("session.join", {"session_id": 99999})
    assert ack["error"]["code"] == "session_not_found"
    ack = await other_unit.call("session.join", {"session_id": "x", "extra": 1})
    assert ack["error"]["code"] == "invalid_payload"
    # BUG: ids past the 32-bit column (2^31 on PostgreSQL, 2^63 on SQLite) reached the query: internal_error.
    for huge in (2**31, 2**63, 10**30):
        ack = await other_unit.call("session.join", {"session_id": huge})
        assert ack["error"]["code"] == "invalid_payload", huge
    ack = await other_unit.call("chat.send", {"text": "hi"})
    assert ack["error"]["code"] == "not_joined"

    resp = await clerk.post(f"/api/v1/sessions/{sid}/end")
    assert resp.status == 200
    assert (await resp.json())["state"] == "ended"
    mine = await peers(client, staff)
    ack = await mine.call("session.join", {"session_id": sid})
    assert ack["error"]["code"] == "session_ended"


async def test_rejoin_replaces_the_old_participant(as_user: Any, client: Any, peers: Any) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    cid = (await open_case(staff))["id"]
    sid = await _session(staff, cid)
    watcher = await peers(client, clerk)
    await watcher.call("session.join", {"session_id": sid})
    first = await peers(client, staff)
    old = (await first.call("session.join", {"session_id": sid}))["participant_id"]
    second = await peers(client, staff)  # e.g. the page reloaded: a new socket for the same user
    ack = await second.call("session.join", {"session_id": sid})
    assert ack["ok"]
    names = [p["participant_id"] for p in ack["participants"]]
    assert old not in names and len(names) == 2
    left = await watcher.wait_for("participant.left", lambda d: d["participant_id"] == old)
    assert left["reason"] == "replaced"


async def test_chat_is_rate_limited(as_user: Any, client: Any, peers: Any) -> None:
    staff = await as_user("staff")
    sid = await _session(staff, (await open_case(staff))["id"])
    a = await peers(client, staff)
    await a.call("session.join", {"session_id": sid})
    results = [await a.call("chat.send", {"text": f"m{i}"}) for i in range(6)]
    assert [r["ok"] for r in results] == [True] * 5 + [False]
    assert results[-1]["error"]["code"] == "rate_limited"
    # BUG: the limit was the participant's, so a rejoin (a new participant) started it afresh.
    await a.call("session.leave")
    assert (await a.call("session.join", {"session_id": sid}))["ok"]
    again = await a.call("chat.send", {"text": "after a rejoin"})
    assert again["error"]["code"] == "rate_limited"


async def test_chat_text_with_nul_is_refused(as_user: Any, client: Any, peers: Any) -> None:
    """BUG: a NUL in a chat text gave internal_error on PostgreSQL (its text type refuses U+0000)."""
    staff = await as_user("staff")
    cid = (await open_case(staff))["id"]
    sid = await _session(staff, cid)
    a = await peers(client, staff)
    await a.call("session.join", {"session_id": sid})
    ack = await a.call("chat.send", {"text": "你好\x00世界"})
    assert ack["error"]["code"] == "invalid_payload"
    assert (await (await staff.get(f"/api/v1/cases/{cid}/chat")).json())["items"] == []


async def test_logout_stops_further_events(as_user: Any, client: Any, peers: Any) -> None:
    staff = await as_user("staff")
    sid = await _session(staff, (await open_case(staff))["id"])
    a = await peers(client, staff)
    await a.call("session.join", {"session_id": sid})
    await staff.post("/api/v1/auth/logout")
    ack = await a.call("chat.send", {"text": "after logout"})
    assert ack["error"]["code"] == "session_revoked"
