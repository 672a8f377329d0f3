"""A 4-party consultation (会商) through the invite flow, with real aiortc peers on loopback.

The clerk opens a consultation session of a case and invites two experts
of the library with links scoped to that session; the service point's
staff joins directly.  The experts wait in the waiting room until the
clerk admits them; then everyone receives everyone's numbered video and
audio.  The clerk's moderation is checked on the live media: the active
speaker follows the reported levels, a muted expert's audio stops reaching
the others and comes back, a removed expert is gone and cannot return with
the same link.  The session is an ordinary case session, so it is recorded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from signalling.sfu.peer import nominated_pair
from tests.conftest import Session
from tests.media_harness import Caller, Client, until, until_steady
from tests.server.api.conftest import open_case


async def expert_ids(clerk: Session) -> dict[str, int]:
    resp = await clerk.get("/api/v1/experts?limit=100")
    assert resp.status == 200, await resp.text()
    return {e["name"]: e["id"] for e in (await resp.json())["items"]}


async def invite(clerk: Session, case_id: int, session_id: int, **body: Any) -> dict[str, Any]:
    resp = await clerk.post(f"/api/v1/cases/{case_id}/invites", json={"session_id": session_id, **body})
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def redeem(client: Any, session_id: int, token: str) -> Any:
    return await client.post(f"/api/v1/sessions/{session_id}/invites/redeem", json={"token": token})


async def consultation(staff: Session, clerk: Session) -> tuple[int, int]:
    case_id = (await open_case(staff))["id"]
    resp = await clerk.post(f"/api/v1/cases/{case_id}/sessions", json={"kind": "consultation"})
    assert resp.status == 201, await resp.text()
    return case_id, int((await resp.json())["id"])


def events(caller: Caller, name: str) -> list[Any]:
    return [d for e, d in caller.events if e == name]


async def enter_when_admitted(caller: Caller) -> dict[str, Any]:
    """The waiting expert's side: wait for ``session.admitted``, then answer its offer like a join ack."""
    await until(lambda: bool(events(caller, "session.admitted")), 10, "session.admitted")
    payload = dict(events(caller, "session.admitted")[-1])
    caller.participant_id = payload["participant_id"]
    caller.media = Client(caller.participant_id, caller.tag)
    await caller._answer(payload["offer"])
    return payload


def audio_mid(receiver: Caller, publisher: Caller) -> str | None:
    assert receiver.media is not None
    for offer in reversed(receiver.media.offers):
        for mid, track in offer.subscribe.items():
            info = track if isinstance(track, dict) else track.__dict__
            if info["participant_id"] == publisher.participant_id and info["label"] == "audio":
                return str(mid)
    return None


def audio_frames(receiver: Caller, publisher: Caller) -> int:
    mid = audio_mid(receiver, publisher)
    assert receiver.media is not None
    return receiver.media.audio_on(mid).audio_frames if mid is not None else 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_four_party_consultation_through_invites(as_user: Any, client: Any, callers: Any) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    case_id, session_id = await consultation(staff, clerk)
    library = await expert_ids(clerk)
    inv1 = await invite(clerk, case_id, session_id, expert_id=library["林志远"])
    inv2 = await invite(clerk, case_id, session_id, expert_id=library["王慧"])
    assert inv1["role"] == "expert" and inv1["display_name"] == "林志远" and inv1["session_id"] == session_id
    tokens = []
    for inv in (inv1, inv2):
        resp = await redeem(client, session_id, inv["token"])
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        assert data["session_id"] == session_id and data["case_id"] == case_id
        tokens.append(data["access_token"])

    host = await callers(client, clerk.token, tag=1)
    point = await callers(client, staff.token, tag=2)
    e1 = await callers(client, tokens[0], tag=3)
    e2 = await callers(client, tokens[1], tag=4)
    host_ack = await host.join(session_id)
    assert host_ack["session"]["kind"] == "consultation" and host_ack["session"]["recording"] is True
    me = next(p for p in host_ack["participants"] if p["participant_id"] == host.participant_id)
    assert me["moderator"] is True
    point_ack = await point.join(session_id)
    assert not next(p for p in point_ack["participants"] if p["participant_id"] == point.participant_id)["moderator"]

    # The experts wait; the host sees them and admits them; the point's staff may not.
    for expert in (e1, e2):
        ack = await expert.sio.call("session.join", {"session_id": session_id}, timeout=10)
        assert ack["ok"] and ack["waiting"] is True and ack["participant_id"] is None, ack
        refused = await expert.sio.call("chat.send", {"text": "hello"}, timeout=10)
        assert refused["error"]["code"] == "not_joined"
    await until(lambda: len(events(host, "waiting.joined")) == 2, 10, "waiting.joined for both experts")
    # An expert with an account appears under the account's name (林志远（企业服务专家）).
    waiters = {
        w["waiter"]["display_name"][:3].rstrip("（"): w["waiter"]["waiter_id"] for w in events(host, "waiting.joined")
    }
    assert not events(point, "waiting.joined")
    refused = await point.sio.call("session.admit", {"waiter_id": waiters["林志远"]}, timeout=10)
    assert refused["error"]["code"] == "not_moderator"
    for name, expert in (("林志远", e1), ("王慧", e2)):
        ack = await host.sio.call("session.admit", {"waiter_id": waiters[name]}, timeout=10)
        assert ack["ok"], ack
        await enter_when_admitted(expert)

    # Everyone receives everyone's video and audio.
    everyone = (host, point, e1, e2)
    assert all(c.media is not None for c in everyone)

    def all_see_all(n: int) -> bool:
        return all(
            len(r.media.from_tag(p.tag)) >= n  # type: ignore[union-attr]
            for r in everyone
            for p in everyone
            if r is not p
        )

    try:
        await until(lambda: all_see_all(10), 40, "video from every party at every party")
    except AssertionError as exc:  # say which pair is missing (an intermittent CI failure to diagnose)
        counts = {
            f"{r.tag}<-{p.tag}": len(r.media.from_tag(p.tag))  # type: ignore[union-attr]
            for r in everyone
            for p in everyone
            if r is not p
        }
        offers = {c.tag: [e[1]["revision"] for e in c.events if e[0] == "media.offer"] for c in everyone}
        errors = {c.tag: c.errors for c in everyone}
        raise AssertionError(
            f"{exc}; frames per receiver<-publisher: {counts}; offer revisions seen: {offers}; errors: {errors}"
        ) from None
    await until(
        lambda: all(audio_frames(r, p) > 20 for r in everyone for p in everyone if r is not p),
        20,
        "audio from every party at every party",
    )
    for c in everyone:
        pair = nominated_pair(c.media.pc)  # type: ignore[union-attr]
        assert pair is not None and pair[0][0] == "127.0.0.1" and pair[1][0] == "127.0.0.1"

    # Active speaker: the levels the browsers report pick the highlighted participant.
    ack = await e1.sio.call("audio.level", {"level": 0.6}, timeout=10)
    assert ack["ok"], ack
    await until(
        lambda: any(d["participant_id"] == e1.participant_id for d in events(point, "speaker.active")),
        5,
        "speaker.active for the first expert",
    )

    # Mute: the host stops the first expert's audio for everyone; unmuting brings it back.
    ack = await host.sio.call("participant.mute", {"participant_id": e1.participant_id, "muted": True}, timeout=10)
    assert ack["ok"], ack
    await until(lambda: bool(events(e2, "participant.muted")), 5, "participant.muted")
    assert events(e2, "participant.muted")[-1]["muted"] is True
    # Frames already in flight (queued in a loaded client's receive path) may still arrive: wait, bounded, until the
    # muted expert's audio has stopped growing at every receiver for 0.5 s; if muting did not stop it, this fails.
    before = await until_steady(
        lambda: {id(r): audio_frames(r, e1) for r in (host, point, e2)}, 0.5, 15, "the muted expert's audio"
    )
    other_before = audio_frames(host, e2)
    # The others' audio goes on (a bounded wait: how fast it flows is the bench's business) ...
    await until(lambda: audio_frames(host, e2) > other_before + 30, 20, "the others' audio going on")
    # ... while the muted expert's does not reach anyone.
    assert all(audio_frames(r, e1) - before[id(r)] <= 3 for r in (host, point, e2)), "muted audio still forwarded"
    assert events(point, "speaker.active")[-1]["participant_id"] != e1.participant_id
    ack = await host.sio.call("participant.mute", {"participant_id": e1.participant_id, "muted": False}, timeout=10)
    assert ack["ok"], ack
    resumed = audio_frames(point, e1)
    await until(lambda: audio_frames(point, e1) > resumed + 20, 10, "audio after unmute")

    # Remove: the second expert is gone and cannot come back with the same link.
    ack = await host.sio.call("participant.remove", {"participant_id": e2.participant_id}, timeout=10)
    assert ack["ok"], ack
    await until(lambda: bool(events(e2, "session.removed")), 5, "session.removed")
    await until(lambda: any(d["reason"] == "removed" for d in events(point, "participant.left")), 5, "participant.left")
    again = await e2.sio.call("session.join", {"session_id": session_id}, timeout=10)
    assert not again["ok"] and again["error"]["code"] in ("session_revoked", "participant_removed"), again
    resp = await redeem(client, session_id, inv2["token"])
    assert resp.status == 410 and (await resp.json())["code"] in ("invite_used", "invite_revoked")
    assert (
        await client.get(f"/api/v1/cases/{case_id}", headers={"Authorization": f"Bearer {tokens[1]}"})
    ).status == 401

    # Notes and the conclusion go into the case; participants, durations and moderation into the audit.
    expert_session = Session(client, tokens[0], "")
    resp = await expert_session.post(
        f"/api/v1/cases/{case_id}/notes", json={"text": "场地符合要求", "session_id": session_id}
    )
    assert resp.status == 201, await resp.text()
    resp = await expert_session.post(f"/api/v1/cases/{case_id}/notes", json={"kind": "conclusion", "text": "同意"})
    assert resp.status == 403
    resp = await clerk.post(f"/api/v1/cases/{case_id}/notes", json={"kind": "conclusion", "text": "会商同意受理"})
    assert resp.status == 201, await resp.text()
    notes = (await (await staff.get(f"/api/v1/cases/{case_id}/notes")).json())["items"]
    assert [(n["kind"], n["author_name"][:3]) for n in notes] == [("note", "林志远"), ("conclusion", "李静（")]

    for c in everyone:
        await c.close()
    audit: dict[str, Any] = {}

    async def audit_left() -> int:
        nonlocal audit
        audit = await (await clerk.get(f"/api/v1/cases/{case_id}/audit")).json()
        return sum(1 for e in audit["entries"] if e["action"] == "session.left")

    for _ in range(100):  # the last leaves are audited as their sockets' disconnects are handled
        if await audit_left() >= 4:
            break
        await asyncio.sleep(0.05)
    assert audit["verified"]
    actions = [e["action"] for e in audit["entries"]]
    for action in (
        "participant.admitted",
        "participant.muted",
        "participant.unmuted",
        "participant.removed",
        "consultation.note",
        "consultation.conclusion",
        "recording.started",
    ):
        assert action in actions, action
    left = [e for e in audit["entries"] if e["action"] == "session.left" and e["details"]["session_id"] == session_id]
    assert {e["details"]["display_name"][:2] for e in left} >= {"林志", "王慧", "张丽"}
    assert all(e["details"]["duration_s"] >= 0 for e in left)
