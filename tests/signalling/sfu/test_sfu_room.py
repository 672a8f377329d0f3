"""Room semantics: the negotiation rule (server offers, one outstanding, changes coalesce) and refusals."""

from __future__ import annotations

import asyncio

import pytest

from signalling.sfu import MediaRoom, MediaRoomError, NegotiationNeeded, PeerStateChanged
from tests.media_harness import CONFIG, Call, Client, until


async def test_join_offers_recvonly_audio_and_camera() -> None:
    room = MediaRoom("r", CONFIG)
    try:
        offer = await room.join("alice")
        assert offer.participant_id == "alice" and offer.revision == 1
        assert (await room.join("bob")).revision == 2  # revisions are unique in the room
        assert dict(offer.publish) == {"0": "audio", "1": "camera"} and not offer.subscribe
        sections = offer.sdp.split("m=")[1:]
        assert [s.split(" ", 1)[0] for s in sections] == ["audio", "video"]
        assert all("a=recvonly" in s for s in sections)
        assert "a=candidate:" in offer.sdp and " 127.0.0.1 " in offer.sdp
        assert "opus/48000" in sections[0] and "PCMU" not in sections[0]
        assert "VP8/90000" in sections[1] and "H264/90000" in sections[1]
        assert room.participants == ["alice", "bob"] and room.tracks == []
    finally:
        await room.close()


async def test_refusals() -> None:
    room = MediaRoom("r", CONFIG, max_participants=2, publish_timeout=0.2)
    try:
        first = await room.join("alice")
        await room.join("bob")
        with pytest.raises(MediaRoomError) as excinfo:
            await room.join("carol")
        assert excinfo.value.code == "room_full"
        for bad in ("", "a b", "x" * 49, "über"):
            with pytest.raises(MediaRoomError) as excinfo:
                await room.join(bad) if bad else await MediaRoom("s", CONFIG).join(bad)
            assert excinfo.value.code in ("invalid_participant_id", "room_full")
        with pytest.raises(MediaRoomError) as excinfo:
            await room.answer("nobody", "v=0\r\n")
        assert excinfo.value.code == "unknown_participant"
        with pytest.raises(MediaRoomError) as excinfo:
            await room.answer("alice", "v=0\r\n", revision=first.revision + 1)
        assert excinfo.value.code == "stale_answer"
        with pytest.raises(MediaRoomError) as excinfo:
            await room.unpublish("alice", "7")
        assert excinfo.value.code == "unknown_track"
        with pytest.raises(MediaRoomError) as excinfo:
            await room.request_publish("alice", "hologram")  # type: ignore[arg-type]
        assert excinfo.value.code == "invalid_label"
        # An offer is outstanding and never answered: the screen m-section cannot be offered yet.
        with pytest.raises(MediaRoomError) as excinfo:
            await room.request_publish("alice", "screen")
        assert excinfo.value.code == "negotiation_timeout"
        await room.leave("bob")
        with pytest.raises(MediaRoomError) as excinfo:
            await room.leave("bob")
        assert excinfo.value.code == "unknown_participant"
    finally:
        await room.close()
    with pytest.raises(MediaRoomError) as excinfo:
        await room.join("dave")
    assert excinfo.value.code == "room_closed"


async def test_events_go_to_the_queue_without_a_listener() -> None:
    room = MediaRoom("r", CONFIG)
    try:
        await room.join("alice")
        await room.leave("alice")
        assert room.events.get_nowait() == PeerStateChanged("alice", "closed")
    finally:
        await room.close()


async def test_one_offer_outstanding_and_changes_coalesce() -> None:
    call = Call()
    alice = Client("alice", 1, audio=False)
    alice.start_screen()
    call.clients["alice"] = alice
    try:
        first = await call.room.join("alice")
        # Ask for the screen while the first offer is still unanswered: no second offer yet.
        publishing = asyncio.ensure_future(call.room.request_publish("alice", "screen"))
        await asyncio.sleep(0.05)
        assert not publishing.done()
        assert not [e for e in call.log if isinstance(e, NegotiationNeeded)]
        assert call.room.peer("alice").outstanding == first

        sdp = await alice.answer(first)
        await call.room.answer("alice", sdp, first.revision)
        mid = await publishing  # the mid comes with the next offer, made as soon as the answer arrived
        offers = [e.offer for e in call.log if isinstance(e, NegotiationNeeded)]
        assert len(offers) == 1 and offers[0].revision > first.revision and offers[0].publish[mid] == "screen"
        await until(lambda: {t.label for t in call.room.tracks} == {"camera", "screen"}, 5, "screen published")

        # Several changes while an offer is outstanding fold into one next offer.
        await call.room.unpublish("alice", mid)
        before = len([e for e in call.log if isinstance(e, NegotiationNeeded)])
        await until(lambda: call.room.peer("alice").outstanding is None, 5, "answered")
        assert {t.label for t in call.room.tracks} == {"camera"}
        assert len([e for e in call.log if isinstance(e, NegotiationNeeded)]) == before
        # The client never offers: every description it received was an offer, every one it sent an answer.
        assert all(o.sdp.startswith("v=0") for o in alice.offers)
        assert alice.pc.localDescription.type == "answer"
    finally:
        await call.close()


async def test_leave_renegotiates_the_others_and_frees_their_m_sections() -> None:
    call = Call()
    ann, ben, cat = Client("ann", 1), Client("ben", 2), Client("cat", 3)
    try:
        for client in (ann, ben, cat):
            await call.join(client)
        await until(lambda: len(ann.from_tag(3)) >= 3, 10, "cat at ann")
        cat_mids = sorted(m for m, info in ann.offers[-1].subscribe.items() if info.participant_id == "cat")
        assert len(cat_mids) == 2
        await call.room.leave("cat")
        assert call.room.participants == ["ann", "ben"]

        def cat_gone() -> bool:
            latest = [info.participant_id for c in (ann, ben) for info in c.offers[-1].subscribe.values()]
            settled = all(call.room.peer(p).outstanding is None for p in ("ann", "ben"))
            return "cat" not in latest and settled

        await until(cat_gone, 5, "offers without cat, answered")
        assert all(ann.transceiver(m).currentDirection == "inactive" for m in cat_mids)

        # A new participant's tracks reuse the freed m-sections: the m-line count does not grow.
        count = len(ann.pc.getTransceivers())
        dan = Client("dan", 4)
        await call.join(dan)
        await until(lambda: len(ann.from_tag(4)) >= 3, 10, "dan at ann")
        assert len(ann.pc.getTransceivers()) == count
        dan_mids = sorted(m for m, info in ann.offers[-1].subscribe.items() if info.participant_id == "dan")
        assert dan_mids == cat_mids
    finally:
        await call.close()
