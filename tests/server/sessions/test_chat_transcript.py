"""The chat transcript read back (``GET /cases/{id}/chat``) and the session list's paging.

Chat is said over Socket.IO (``chat.send``) and stored with the case; these
tests read it back through REST as the case file and a rejoining client do:
paging, the per-session filter, and authorisation exactly like the case's.
Both run on SQLite and PostgreSQL (the ``db_url`` fixture).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import socketio

from server.app import SERVICES
from server.storage.models import ChatMessage
from tests.conftest import Session
from tests.server.api.conftest import open_case


async def _open_session(staff: Session, case_id: int) -> int:
    resp = await staff.post(f"/api/v1/cases/{case_id}/sessions", json={"kind": "call"})
    assert resp.status in (200, 201), await resp.text()
    return int((await resp.json())["id"])


async def _say(client: Any, who: Session, session_id: int, text: str) -> dict[str, Any]:
    sio = socketio.AsyncClient(reconnection=False)
    url = f"http://127.0.0.1:{client.server.port}"
    await sio.connect(url, auth={"token": who.token}, transports=["websocket"], wait_timeout=5)
    try:
        joined = await sio.call("session.join", {"session_id": session_id}, timeout=10)
        assert joined["ok"], joined
        sent = await sio.call("chat.send", {"text": text}, timeout=10)
        assert sent["ok"], sent
        return dict(sent["message"])
    finally:
        await sio.disconnect()


async def _store(client: Any, case_id: int, session_id: int, texts: list[str]) -> None:
    """Many messages at once (``chat.send`` is rate limited to 5 per 5 s), as the service stores them."""
    services = client.app[SERVICES]
    start = services.clock.now()
    async with services.db.transaction() as s:
        for i, text in enumerate(texts):
            s.add(
                ChatMessage(
                    session_id=session_id,
                    case_id=case_id,
                    user_id=None,
                    display_name="测试",
                    text=text,
                    at=start + timedelta(seconds=i),
                )
            )


async def test_chat_said_in_a_call_is_read_back_by_whoever_may_read_the_case(as_user: Any, client: Any) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id = (await open_case(staff))["id"]
    session_id = await _open_session(staff, case_id)
    me = await (await staff.get("/api/v1/me")).json()
    said = await _say(client, staff, session_id, "您好，材料已带齐")
    await _say(client, clerk, session_id, "请出示身份证")

    for reader in (staff, clerk):
        resp = await reader.get(f"/api/v1/cases/{case_id}/chat")
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        assert page["total"] == 2 and page["offset"] == 0
        assert [m["text"] for m in page["items"]] == ["您好，材料已带齐", "请出示身份证"]
        first = page["items"][0]
        assert first["id"] == said["id"] and first["session_id"] == session_id and first["case_id"] == case_id
        assert first["display_name"] == said["display_name"] and first["user_id"] == me["user_id"]

    # Exactly the case's own authorisation: another unit's staff does not learn the case exists.
    outsider = await as_user("staff2")
    resp = await outsider.get(f"/api/v1/cases/{case_id}/chat")
    assert resp.status == 404 and (await resp.json())["code"] == "case_not_found"
    resp = await client.get(f"/api/v1/cases/{case_id}/chat")
    assert resp.status == 401 and (await resp.json())["code"] == "auth_required"


async def test_chat_pages_in_order_and_filters_by_session(as_user: Any, client: Any) -> None:
    staff = await as_user("staff")
    case_id = (await open_case(staff))["id"]
    first = await _open_session(staff, case_id)
    await _store(client, case_id, first, [f"a{i}" for i in range(7)])
    assert (await staff.post(f"/api/v1/sessions/{first}/end")).status == 200
    second = await _open_session(staff, case_id)
    assert second != first
    await _store(client, case_id, second, ["b0", "b1"])

    seen: list[str] = []
    for offset in (0, 4, 8):
        page = await (await staff.get(f"/api/v1/cases/{case_id}/chat?limit=4&offset={offset}")).json()
        assert page["total"] == 9 and page["limit"] == 4 and page["offset"] == offset
        seen += [m["text"] for m in page["items"]]
    assert seen == [f"a{i}" for i in range(7)] + ["b0", "b1"]

    page = await (await staff.get(f"/api/v1/cases/{case_id}/chat?session_id={second}")).json()
    assert page["total"] == 2 and [m["text"] for m in page["items"]] == ["b0", "b1"]
    page = await (await staff.get(f"/api/v1/cases/{case_id}/chat?session_id={first}&limit=2&offset=6")).json()
    assert page["total"] == 7 and [m["text"] for m in page["items"]] == ["a6"]

    # A session of another case, and bad paging, are refused with stable codes.
    other_case = (await open_case(staff))["id"]
    other_session = await _open_session(staff, other_case)
    resp = await staff.get(f"/api/v1/cases/{case_id}/chat?session_id={other_session}")
    assert resp.status == 404 and (await resp.json())["code"] == "session_not_found"
    for bad in ("limit=0", "limit=101", "offset=-1", "session_id=abc", "before=3"):
        resp = await staff.get(f"/api/v1/cases/{case_id}/chat?{bad}")
        assert resp.status == 422 and (await resp.json())["code"] == "invalid_query", bad


async def test_session_list_honours_limit_and_offset(as_user: Any, client: Any) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id = (await open_case(staff))["id"]
    ids = []
    for _ in range(3):
        ids.append(await _open_session(staff, case_id))
        assert (await staff.post(f"/api/v1/sessions/{ids[-1]}/end")).status == 200

    page = await (await clerk.get(f"/api/v1/cases/{case_id}/sessions?limit=2")).json()
    assert page["total"] == 3 and page["limit"] == 2 and page["offset"] == 0
    assert [s["id"] for s in page["items"]] == ids[:2]
    page = await (await clerk.get(f"/api/v1/cases/{case_id}/sessions?limit=2&offset=2")).json()
    assert page["total"] == 3 and [s["id"] for s in page["items"]] == ids[2:]
    page = await (await clerk.get(f"/api/v1/cases/{case_id}/sessions")).json()
    assert page["total"] == 3 and page["limit"] == 20 and [s["id"] for s in page["items"]] == ids
    resp = await clerk.get(f"/api/v1/cases/{case_id}/sessions?limit=1000")
    assert resp.status == 422 and (await resp.json())["code"] == "invalid_query"
