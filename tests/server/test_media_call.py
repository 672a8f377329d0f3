"""A real call through the whole app: Socket.IO signalling + SFU, aiortc clients publishing numbered video.

Each side is a logged-in user with a Socket.IO connection and an aiortc peer
connection (gathering on 127.0.0.1 only); every ``media.offer`` is answered
as a browser would.  The frames carry readable numbers, so the receiving side
proves it got the other's frames, in order, and nothing invented.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from signalling.sfu.peer import nominated_pair
from tests.conftest import Session
from tests.media_harness import Client, assert_numbers_sane, until
from tests.server.api.conftest import open_case


async def _open_session(staff: Session) -> int:
    cid = (await open_case(staff))["id"]
    resp = await staff.post(f"/api/v1/cases/{cid}/sessions", json={"kind": "call"})
    return int((await resp.json())["id"])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_two_party_call_with_screen_share_and_rejoin(as_user: Any, client: Any, callers: Any) -> None:
    staff, clerk = await as_user("staff"), await as_user("clerk_t1")
    session_id = await _open_session(staff)
    a = await callers(client, staff, tag=1)
    b = await callers(client, clerk, tag=2)
    await a.join(session_id)
    await until(lambda: any(e == "track.published" for e, _ in a.events), 10, "own tracks published")
    b_ack = await b.join(session_id)
    assert a.media and b.media

    # Each side decodes the other's numbered frames, in order.
    await until(lambda: len(b.media.from_tag(1)) >= 10 and len(a.media.from_tag(2)) >= 10, 15, "video both ways")
    assert_numbers_sane(b.media.from_tag(1), a.media.camera.number, 10)  # type: ignore[union-attr]
    assert_numbers_sane(a.media.from_tag(2), b.media.camera.number, 10)  # type: ignore[union-attr]
    await until(lambda: any(r.audio_frames > 20 for r in b.media.received.values()), 10, "audio")

    # Both ends' selected ICE pair is on loopback.
    for pc in (a.media.pc, b.media.pc):
        pair = nominated_pair(pc)
        assert pair is not None
        assert pair[0][0] == "127.0.0.1" and pair[1][0] == "127.0.0.1"

    # The late joiner learns the other's tracks from the join ack; the other gets track.published events.
    present = {p["participant_id"]: p for p in b_ack["participants"]}
    assert {t["label"] for t in present[a.participant_id]["tracks"]} == {"audio", "camera"}
    await until(
        lambda: (
            {d["label"] for e, d in a.events if e == "track.published" and d["participant_id"] == b.participant_id}
            == {"audio", "camera"}
        ),
        10,
        "track.published for the clerk's tracks",
    )

    # The clerk shares a screen: the staff side gets a third track labelled screen, then it ends.
    b.media.start_screen()
    ack = await b.sio.call("media.publish", {"label": "screen"}, timeout=10)
    assert ack["ok"], ack
    screen_mid = ack["mid"]
    await until(lambda: len(a.media.from_tag(102)) >= 5, 15, "screen frames")
    screen_events = [d for e, d in a.events if e == "track.published" and d["label"] == "screen"]
    assert screen_events and screen_events[0]["participant_id"] == b.participant_id
    ack = await b.sio.call("media.unpublish", {"mid": screen_mid}, timeout=10)
    assert ack["ok"], ack
    await until(lambda: any(e == "track.unpublished" for e, _ in a.events), 10, "screen unpublished")

    # The staff side's transport dies; it rejoins with a new peer connection and media flows within 5 s.
    old_id = a.participant_id
    await a.media.pc.close()
    start = time.monotonic()
    ack = await a.join(session_id)
    assert old_id not in [p["participant_id"] for p in ack["participants"]]
    before = len(b.media.from_tag(1))
    await until(
        lambda: len(b.media.from_tag(1)) > before + 5 and len(a.media.from_tag(2)) >= 5, 5, "media after rejoin"
    )
    assert time.monotonic() - start < 5
    left = [d for e, d in b.events if e == "participant.left"]
    assert [d["participant_id"] for d in left] == [old_id]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_media_policy_refusals_reach_the_client(as_user: Any, client: Any, callers: Any) -> None:
    staff = await as_user("staff")
    session_id = await _open_session(staff)
    a = await callers(client, staff, tag=1)
    ack = await a.sio.call("session.join", {"session_id": session_id}, timeout=10)
    assert ack["ok"]
    revision = ack["offer"]["revision"]
    big = "v=0\r\n" + "a=x:" + "y" * 70_000 + "\r\n"
    refused = await a.sio.call("media.answer", {"sdp": big, "revision": revision}, timeout=10)
    assert refused["error"]["code"] == "sdp_too_large"
    bad = "candidate:1 1 udp"
    refused = await a.sio.call("media.candidate", {"candidate": bad, "sdpMid": "0"}, timeout=10)
    assert refused["error"]["code"] == "sdp_invalid"

    # Candidates outside the policy are dropped, not refused, and counted on /metrics by reason.
    foreign = "candidate:1 1 udp 2130706431 10.1.2.3 5000 typ host"
    accepted = await a.sio.call("media.candidate", {"candidate": foreign, "sdpMid": "0"}, timeout=10)
    assert accepted == {"ok": True}
    mdns = "candidate:1 1 udp 2130706431 3f1c6f2e-aaaa.local 5000 typ host"
    accepted = await a.sio.call("media.candidate", {"candidate": mdns, "sdpMid": "0"}, timeout=10)
    assert accepted == {"ok": True}
    metrics = await (await client.get("/metrics")).text()
    assert 'cloudwindow_ice_candidates_dropped_total{reason="address"} 1.0' in metrics
    assert 'cloudwindow_ice_candidates_dropped_total{reason="mdns"} 1.0' in metrics

    # An answer whose gathering is complete (a=end-of-candidates) with no allowed candidate left: refused with
    # no_allowed_candidate, and the peer connection is given up with that reason (the client must not rejoin).
    media = Client("policy-test", 1, gather=("127.0.0.1",))
    try:
        sdp = await media.answer(SimpleNamespace(**ack["offer"]))  # type: ignore[arg-type]
    finally:
        await media.close()
    assert "a=end-of-candidates" in sdp
    outside = "\r\n".join(
        "a=candidate:1 1 udp 2130706431 2001:db8::7 5000 typ host" if line.startswith("a=candidate:") else line
        for line in sdp.split("\r\n")
    )
    refused = await a.sio.call("media.answer", {"sdp": outside, "revision": revision}, timeout=10)
    assert refused["error"]["code"] == "no_allowed_candidate"
    await until(
        lambda: any(
            e == "media.state" and d.get("state") == "failed" and d.get("reason") == "no_allowed_candidate"
            for e, d in a.events
        ),
        5,
        "state",
    )
