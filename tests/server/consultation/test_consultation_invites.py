"""Invites scoped to one consultation session (both engines): what is refused, and the waiting room rules.

Reused, expired, revoked and foreign-session invites are refused at the
redeem link; a redeemed invite joins only its own session; an invitee waits
until a moderator admits it; refused or removed invitees cannot come back.
No media here (the 4-party call is ``test_consultation_call.py``).
"""

from __future__ import annotations

from typing import Any

import pytest

from server.clock import FakeClock
from tests.conftest import Session
from tests.media_harness import Caller, until
from tests.server.api.conftest import open_case
from tests.server.consultation.test_consultation_call import consultation, events, invite, redeem


@pytest.fixture
async def sockets() -> Any:
    made: list[Caller] = []

    async def make(app_client: Any, token: str) -> Caller:
        c = Caller(f"http://127.0.0.1:{app_client.server.port}", token, 0)
        await c.connect()
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


async def code_of(resp: Any) -> tuple[int, str]:
    return resp.status, (await resp.json())["code"]


async def test_reused_expired_revoked_and_foreign_invites_are_refused(
    as_user: Any, client: Any, clock: FakeClock
) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id, session_id = await consultation(staff, clerk)
    other_case, other_session = await consultation(staff, clerk)

    used = await invite(clerk, case_id, session_id, role="guest", display_name="企业代表")
    assert (await redeem(client, session_id, used["token"])).status == 200
    assert await code_of(await redeem(client, session_id, used["token"])) == (410, "invite_used")

    expiring = await invite(clerk, case_id, session_id, role="guest", display_name="企业代表", ttl_seconds=60)
    clock.advance(61)
    assert await code_of(await redeem(client, session_id, expiring["token"])) == (410, "invite_expired")

    revoked = await invite(clerk, case_id, session_id, role="guest", display_name="企业代表")
    resp = await clerk.delete(f"/api/v1/cases/{case_id}/invites/{revoked['id']}")
    assert resp.status == 204
    assert await code_of(await redeem(client, session_id, revoked["token"])) == (410, "invite_revoked")

    foreign = await invite(clerk, case_id, session_id, role="guest", display_name="企业代表")
    assert await code_of(await redeem(client, other_session, foreign["token"])) == (403, "invite_wrong_scope")
    resp = await client.post(f"/api/v1/cases/{other_case}/invites/redeem", json={"token": foreign["token"]})
    assert await code_of(resp) == (403, "invite_wrong_scope")
    bogus = await redeem(client, session_id, "x" * 43)
    assert await code_of(bogus) == (401, "invite_invalid")
    # Still unused after the refusals: it works at its own session's link.
    assert (await redeem(client, session_id, foreign["token"])).status == 200

    # An invite cannot be scoped to another case's session, nor to an ended one.
    resp = await clerk.post(
        f"/api/v1/cases/{case_id}/invites", json={"role": "guest", "display_name": "x", "session_id": other_session}
    )
    assert await code_of(resp) == (404, "session_not_found")
    assert (await clerk.post(f"/api/v1/sessions/{other_session}/end")).status == 200
    resp = await clerk.post(
        f"/api/v1/cases/{other_case}/invites", json={"role": "guest", "display_name": "x", "session_id": other_session}
    )
    assert await code_of(resp) == (409, "session_ended")
    resp = await clerk.post(f"/api/v1/cases/{case_id}/invites", json={"role": "guest"})
    assert resp.status == 422
    resp = await clerk.post(f"/api/v1/cases/{case_id}/invites", json={"role": "guest", "expert_id": 1})
    assert await code_of(resp) == (422, "invalid_invite_role")
    resp = await clerk.post(f"/api/v1/cases/{case_id}/invites", json={"expert_id": 99999})
    assert await code_of(resp) == (404, "expert_not_found")


async def test_waiting_room_scope_refusal_and_removal(as_user: Any, client: Any, sockets: Any) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id, session_id = await consultation(staff, clerk)
    second_case = (await open_case(staff))["id"]
    resp = await clerk.post(f"/api/v1/cases/{second_case}/sessions", json={"kind": "consultation"})
    second_session = (await resp.json())["id"]

    async def guest(name: str) -> str:
        inv = await invite(clerk, case_id, session_id, role="guest", display_name=name)
        resp = await redeem(client, session_id, inv["token"])
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])

    host = await sockets(client, clerk.token)
    ack = await host.sio.call("session.join", {"session_id": session_id}, timeout=10)
    assert ack["ok"] and ack["waiting"] == [], ack

    a = await sockets(client, await guest("企业代表甲"))
    # Scoped to its own session: another session (even of a case it could read) is refused.
    refused = await a.sio.call("session.join", {"session_id": second_session}, timeout=10)
    assert refused["error"]["code"] == "join_forbidden"
    ack = await a.sio.call("session.join", {"session_id": session_id}, timeout=10)
    assert ack["waiting"] is True
    await until(lambda: bool(events(host, "waiting.joined")), 5, "waiting.joined")
    waiter = events(host, "waiting.joined")[-1]["waiter"]
    assert waiter["display_name"] == "企业代表甲" and waiter["role"] == "guest"
    assert await host.sio.call("session.admit", {"waiter_id": "nobody"}, timeout=10) == {
        "ok": False,
        "error": {"code": "waiter_not_found", "message": "nobody with that id is waiting"},
    }
    ack = await host.sio.call("session.refuse", {"waiter_id": waiter["waiter_id"]}, timeout=10)
    assert ack["ok"], ack
    await until(lambda: bool(events(a, "session.refused")), 5, "session.refused")
    again = await a.sio.call("session.join", {"session_id": session_id}, timeout=10)
    assert again["error"]["code"] in ("session_revoked", "participant_removed")

    # A waiter who leaves disappears from the waiting room.
    b = await sockets(client, await guest("企业代表乙"))
    assert (await b.sio.call("session.join", {"session_id": session_id}, timeout=10))["waiting"] is True
    assert (await b.sio.call("session.leave", {}, timeout=10))["ok"]
    await until(lambda: any(d["reason"] == "left" for d in events(host, "waiting.left")), 5, "waiting.left on leave")

    # Admitted, then removed: gone for good, and its login with it.
    c_token = await guest("企业代表丙")
    c = await sockets(client, c_token)
    assert (await c.sio.call("session.join", {"session_id": session_id}, timeout=10))["waiting"] is True
    await until(lambda: len(events(host, "waiting.joined")) == 3, 5, "third waiter")
    ack = await host.sio.call("session.admit", {"waiter_id": events(host, "waiting.joined")[-1]["waiter"]["waiter_id"]})
    assert ack["ok"], ack
    await until(lambda: bool(events(c, "session.admitted")), 5, "session.admitted")
    admitted = events(c, "session.admitted")[-1]
    assert admitted["participant_id"] == ack["participant_id"] and admitted["offer"]["sdp"]
    # Weak network: an admitted invitee that drops and rejoins is not sent back to the waiting room.
    rejoined = await c.sio.call("session.join", {"session_id": session_id}, timeout=10)
    assert rejoined["ok"] and not rejoined.get("waiting") and rejoined["participant_id"], rejoined
    admitted = {**admitted, "participant_id": rejoined["participant_id"]}
    ack = {"participant_id": rejoined["participant_id"]}
    # Not a moderator: may not mute or remove.
    refused = await c.sio.call("participant.remove", {"participant_id": ack["participant_id"]}, timeout=10)
    assert refused["error"]["code"] == "not_moderator"
    ack = await host.sio.call("participant.remove", {"participant_id": admitted["participant_id"]}, timeout=10)
    assert ack["ok"], ack
    await until(lambda: bool(events(c, "session.removed")), 5, "session.removed")
    again = await c.sio.call("session.join", {"session_id": session_id}, timeout=10)
    assert again["error"]["code"] in ("session_revoked", "participant_removed")
    gone = await Session(client, c_token, "").get(f"/api/v1/cases/{case_id}")
    assert gone.status == 401
    bad = await host.sio.call("participant.mute", {"participant_id": "nobody"}, timeout=10)
    assert bad["error"]["code"] == "participant_not_found"
    bad = await host.sio.call("audio.level", {"level": 2}, timeout=10)
    assert bad["error"]["code"] == "invalid_payload"

    audit = await (await clerk.get(f"/api/v1/cases/{case_id}/audit")).json()
    actions = [e["action"] for e in audit["entries"]]
    assert actions.count("participant.refused") == 1 and actions.count("participant.removed") == 1
    assert audit["verified"]
