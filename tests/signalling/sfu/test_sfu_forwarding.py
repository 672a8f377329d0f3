"""End-to-end forwarding through the SFU with real aiortc clients on 127.0.0.1.

No mocks on the media path: clients encode synthetic numbered video and a
tone, the server forwards encoded frames, clients decode and read the
numbers back.  The autouse fixtures in ``conftest.py`` fail any test in
which the server decodes, gathers outside ``gather_from`` or touches STUN/mDNS.
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import time

from aiortc.rtp import RTCP_PSFB_FIR, RtcpPsfbPacket

from signalling.sfu import MediaNetworkConfig, PeerStateChanged, TrackPublished, TrackUnpublished, udpsend
from signalling.sfu.passthrough import lean_receiver, video_frame_buffer
from signalling.sfu.peer import nominated_pair
from signalling.sfu.receive import ReceivePath
from tests.media_harness import CONFIG, Call, Client, DecoderWatch, assert_numbers_sane, until


def _audio_mid(client: Client, publisher: str) -> str:
    offer = client.offers[-1]
    return next(
        mid for mid, info in offer.subscribe.items() if info.participant_id == publisher and info.kind == "audio"
    )


async def test_two_party_both_directions(decoder_watch: DecoderWatch) -> None:
    call = Call()
    alice, bob = Client("alice", 1), Client("bob", 2)
    try:
        await call.join(alice)
        await call.join(bob)
        await until(lambda: len(alice.from_tag(2)) >= 20 and len(bob.from_tag(1)) >= 20, 10, "video both ways")
        assert bob.camera is not None and alice.camera is not None
        assert_numbers_sane(alice.from_tag(2), bob.camera.number, 20)
        assert_numbers_sane(bob.from_tag(1), alice.camera.number, 20)

        # Audio both ways: the tone survives the round trip (Opus packets forwarded as they came).
        await until(
            lambda: (
                bob.audio_on(_audio_mid(bob, "alice")).audio_loud_frames >= 25
                and alice.audio_on(_audio_mid(alice, "bob")).audio_loud_frames >= 25
            ),
            5,
            "audio both ways",
        )

        # Every ICE pair in use is loopback, on both ends.
        for pc in (alice.pc, bob.pc, call.room.peer("alice").pc, call.room.peer("bob").pc):
            pair = nominated_pair(pc)
            assert pair is not None
            assert pair[0][0] == "127.0.0.1" and pair[1][0] == "127.0.0.1"

        # The server forwarded frames without decoding (the fixture checks), while the clients did decode.
        assert decoder_watch.client_decoders >= 4
        stats = {s.participant_id: s for s in await call.room.stats()}
        alice_in = next(t for t in stats["alice"].tracks if t.label == "camera")
        assert alice_in.frames_forwarded > 20 and (alice_in.bytes_received or 0) > 1000
        bob_out = next(t for t in stats["bob"].tracks if t.source is not None and t.source.label == "camera")
        assert (bob_out.packets_sent or 0) > 20 and (bob_out.bytes_sent or 0) > 1000
        assert stats["bob"].selected_pair is not None
        # The SFU received every forwarded track on its lean path (signalling.sfu.receive), not aiortc's loop; the
        # statistics it keeps there are aiortc's (inbound-rtp) and feed the receiver reports the publishers get.
        assert (alice_in.packets_received or 0) > 20 and alice_in.packets_lost is not None
        for name in ("alice", "bob"):
            server_pc = call.room.peer(name).pc
            path = ReceivePath.of(server_pc.getTransceivers()[0].receiver.transport)
            assert path.taken > 40
            published = [t for t in server_pc.getTransceivers() if t.direction == "recvonly"]
            assert len(published) == 2
            for transceiver in published:
                lean = lean_receiver(transceiver.receiver)
                assert lean is not None and lean.packets > 10
        for _ in range(100):  # receiver reports every 0.5-1.5 s
            report = await alice.pc.getTransceivers()[0].sender.getStats()
            if any(getattr(s, "type", None) == "remote-inbound-rtp" for s in report.values()):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("no receiver report from the SFU reached alice")
        published = [e.track for e in call.log if isinstance(e, TrackPublished)]
        assert {(t.participant_id, t.label) for t in published} == {
            ("alice", "audio"),
            ("alice", "camera"),
            ("bob", "audio"),
            ("bob", "camera"),
        }
        assert PeerStateChanged("alice", "connected") in call.log
        # The msid stream id of each forwarded track names its publisher (docs/protocol.md).
        assert "a=msid:alice.camera " in bob.offers[-1].sdp
    finally:
        await call.close()


async def test_multi_packet_frames_leave_in_gso_sends_and_decode() -> None:
    call = Call()
    alice, bob = Client("alice", 1, textured=True), Client("bob", 2)
    before = udpsend.counts()
    try:
        await call.join(alice)
        await call.join(bob)
        await until(lambda: len(bob.from_tag(1)) >= 20, 10, "alice's textured video at bob")
        assert alice.camera is not None
        assert_numbers_sane(bob.from_tag(1), alice.camera.number, 20)
        stats = {s.participant_id: s for s in await call.room.stats()}
        to_bob = next(t for t in stats["bob"].tracks if t.source is not None and t.source.label == "camera")
        frames, packets = (
            next(t for t in stats["alice"].tracks if t.label == "camera").frames_forwarded,
            to_bob.packets_sent,
        )
        assert frames and packets and packets > 2 * frames, (frames, packets)  # several packets per frame
        after = udpsend.counts()
        assert udpsend.gso_enabled() and after["gso_sends"] > before["gso_sends"]
        assert after["gso_datagrams"] - before["gso_datagrams"] >= 2 * (after["gso_sends"] - before["gso_sends"])
    finally:
        await call.close()


async def test_h264_when_both_ends_offer_it() -> None:
    call = Call(
        MediaNetworkConfig(bind_addresses=("127.0.0.1",), allowed_networks=("127.0.0.0/8",), video_codecs=("H264",))
    )
    alice, bob = Client("alice", 1, audio=False), Client("bob", 2, audio=False, video=False)
    try:
        await call.join(alice)
        await call.join(bob)
        await until(lambda: len(bob.from_tag(1)) >= 15, 10, "H.264 video")
        assert alice.camera is not None
        assert_numbers_sane(bob.from_tag(1), alice.camera.number, 15)
        assert [t.codec for t in call.room.tracks] == ["video/H264"]
    finally:
        await call.close()


async def test_screen_share_added_removed_and_reused() -> None:
    call = Call()
    alice, bob = Client("alice", 1), Client("bob", 2)
    try:
        await call.join(alice)
        await call.join(bob)
        await until(lambda: len(bob.from_tag(1)) >= 5, 10, "camera")
        bob_mlines = len(bob.pc.getTransceivers())

        alice.start_screen()  # like getDisplayMedia(), before asking to publish
        mid = await call.room.request_publish("alice", "screen")
        await until(lambda: len(bob.from_tag(101)) >= 10, 10, "screen at bob")
        screen_mid = next(m for m, info in bob.offers[-1].subscribe.items() if info.label == "screen")
        assert len(bob.pc.getTransceivers()) == bob_mlines + 1  # the third track
        assert {tag for (tag, _, _) in bob.received[screen_mid].video} == {101}
        assert alice.screen is not None
        assert_numbers_sane(bob.from_tag(101), alice.screen.number, 10)

        await call.room.unpublish("alice", mid)
        await until(lambda: bob.transceiver(screen_mid).currentDirection == "inactive", 5, "screen inactive at bob")
        assert any(isinstance(e, TrackUnpublished) and e.track.label == "screen" for e in call.log)
        stopped_at = len(bob.from_tag(101))
        await asyncio.sleep(0.6)
        assert len(bob.from_tag(101)) <= stopped_at + 1
        assert [t.label for t in call.room.tracks if t.participant_id == "alice"] == ["audio", "camera"]
        await until(lambda: len(bob.from_tag(1)) >= stopped_at, 1, "camera keeps flowing")

        # Sharing again reuses the inactive m-sections on both peer connections.
        alice_mlines = len(alice.pc.getTransceivers())
        again = await call.room.request_publish("alice", "screen")
        assert again == mid
        await until(lambda: len(bob.from_tag(101)) >= stopped_at + 10, 10, "screen again")
        assert len(bob.pc.getTransceivers()) == bob_mlines + 1
        assert len(alice.pc.getTransceivers()) == alice_mlines
        assert_numbers_sane(bob.from_tag(101), alice.screen.number, stopped_at + 10)
    finally:
        await call.close()


async def test_three_party() -> None:
    call = Call()
    clients = [Client(name, tag) for tag, name in enumerate(("ann", "ben", "cat"), start=1)]
    try:
        for client in clients:
            await call.join(client)

        def everyone_sees_everyone() -> bool:
            return all(len(c.from_tag(o.tag)) >= 15 for c in clients for o in clients if o is not c)

        await until(everyone_sees_everyone, 15, "3-party video")
        for c in clients:
            for o in clients:
                if o is not c:
                    assert o.camera is not None
                    assert_numbers_sane(c.from_tag(o.tag), o.camera.number, 15)
    finally:
        await call.close()


async def test_eight_party() -> None:
    call = Call()
    names = [f"p{i}" for i in range(1, 9)]
    # Small, slow video keeps 8 encoders + 56 decoders sane on two cores; audio on two participants only.
    clients = [Client(n, i, size=(128, 96), fps=8, audio=i <= 2) for i, n in enumerate(names, start=1)]
    try:
        for client in clients:
            await call.join(client)
        assert len(call.room.participants) == 8

        def everyone_sees_everyone() -> bool:
            return all(len(c.from_tag(o.tag)) >= 6 for c in clients for o in clients if o is not c)

        await until(everyone_sees_everyone, 25, "8-party video")
        for c in clients:
            for o in clients:
                if o is not c:
                    assert o.camera is not None
                    assert_numbers_sane(c.from_tag(o.tag), o.camera.number, 6)
        # One m-section per remote track plus the two publishing ones; nothing leaked by renegotiations.
        assert len(clients[0].pc.getTransceivers()) == 2 + 7 + 1
    finally:
        await call.close()


async def test_rejoin_after_abrupt_drop_replaces_the_peer() -> None:
    call = Call()
    alice, bob = Client("alice", 1), Client("bob", 2)
    try:
        await call.join(alice)
        await call.join(bob)
        await until(lambda: len(bob.from_tag(1)) >= 5, 10, "first connection")

        # The browser tab dies: sockets gone, no DTLS close_notify, no RTCP BYE.
        connection = alice.pc.getTransceivers()[0].receiver.transport.transport._connection
        for protocol in connection._protocols:
            protocol.transport.close()
        await alice.close()

        alice2 = Client("alice", 3)  # a new tab: new tag, so its frames are told apart
        rejoined = time.monotonic()
        await call.join(alice2)
        await until(lambda: len(bob.from_tag(3)) >= 5 and len(alice2.from_tag(2)) >= 5, 5, "media after rejoin")
        assert time.monotonic() - rejoined < 5
        assert call.room.participants == ["bob", "alice"]
        assert sorted((t.participant_id, t.label) for t in call.room.tracks) == [
            ("alice", "audio"),
            ("alice", "camera"),
            ("bob", "audio"),
            ("bob", "camera"),
        ]
        # No ghost: bob carries exactly alice's two new tracks, its old m-sections were reused.
        carried = [s.publication for s in call.room.peer("bob")._send if s.publication is not None]
        assert len(carried) == 2 and all(p.live for p in carried)
        assert len(bob.pc.getTransceivers()) == 4
        assert_numbers_sane(bob.from_tag(3), alice2.camera.number if alice2.camera else 0, 5)
    finally:
        await call.close()


async def test_a_participant_whose_answer_never_comes_is_dropped_and_can_rejoin() -> None:
    call = Call(dataclasses.replace(CONFIG, answer_timeout=1.0))
    alice, bob, carol = Client("alice", 1), Client("bob", 2), Client("carol", 3)
    alice2 = Client("alice", 4)
    try:
        await call.join(alice)
        await call.join(bob)
        await until(lambda: len(bob.from_tag(1)) >= 3 and len(alice.from_tag(2)) >= 3, 10, "alice and bob")
        call.clients.pop("alice")  # alice's answers are lost from now on
        await call.join(carol)  # offers to alice and bob: bob answers, alice does not
        await until(
            lambda: PeerStateChanged("alice", "failed") in call.log,
            10,
            "alice's connection given up",
        )
        await until(lambda: call.room.participants == ["bob", "carol"], 5, "alice dropped")
        # Bob answered in time: his connection stays, and bob and carol see each other.
        await until(lambda: len(bob.from_tag(3)) >= 3 and len(carol.from_tag(2)) >= 3, 10, "bob and carol")
        await asyncio.sleep(1.2)  # past bob's and carol's answer timeouts
        assert call.room.participants == ["bob", "carol"]
        assert not [
            e
            for e in call.log
            if isinstance(e, PeerStateChanged) and e.participant_id != "alice" and e.state in ("failed", "closed")
        ]
        # Alice rejoins with a new connection (what media.state failed tells a client to do) and gets everything.
        await call.join(alice2)
        await until(
            lambda: all(len(alice2.from_tag(t)) >= 3 for t in (2, 3)) and len(bob.from_tag(4)) >= 3,
            10,
            "alice back",
        )
    finally:
        await call.close()
        await alice.close()


async def test_client_closing_its_connection_leaves_the_room() -> None:
    call = Call()
    alice, bob = Client("alice", 1), Client("bob", 2)
    try:
        await call.join(alice)
        await call.join(bob)
        await until(lambda: len(bob.from_tag(1)) >= 3, 10, "connection")
        await alice.pc.close()  # DTLS close_notify reaches the server
        await until(lambda: call.room.participants == ["bob"], 5, "alice dropped")
        assert any(
            isinstance(e, PeerStateChanged) and e.participant_id == "alice" and e.state == "closed" for e in call.log
        )
        await until(lambda: all(s.publication is None for s in call.room.peer("bob")._send), 5, "bob renegotiated")
        assert call.room.tracks == [t for t in call.room.tracks if t.participant_id == "bob"]
    finally:
        await call.close()


async def test_late_subscriber_gets_a_keyframe_quickly() -> None:
    call = Call()
    alice = Client("alice", 1, audio=False)
    bob = Client("bob", 2, audio=False, video=False)
    try:
        await call.join(alice)
        # aiortc's VP8 encoder makes a keyframe only at the start, on request (kf_max_dist 3000) and when the
        # SFU's first REMB (within 1.5 s) changes its bitrate by more than 10 % (it then restarts the encoder).
        await until(lambda: alice.camera is not None and alice.camera.number >= 75, 10, "alice streaming")
        publication = next(p for p in call.room.peer("alice").publications if p.info.label == "camera")
        before = publication.track.keyframes
        assert 1 <= before <= 2
        await call.join(bob)
        # Without the subscriber's keyframe request the next keyframe would be ~100 s away: a picture within the
        # bounded wait, with a keyframe made after the join, is the request at work (how fast: bench/sfu_forward.py).
        await until(lambda: len(bob.from_tag(1)) >= 1, 5, "first decodable frame")
        assert publication.track.keyframes > before  # the PLI reached alice's encoder
        assert publication.requester.sent >= 1
        # The publication's frame buffer asks for keyframes through the same rate limit (a packet lost for good).
        receiver = next(
            t.receiver for t in call.room.peer("alice").pc.getTransceivers() if t.mid == publication.info.mid
        )
        buffer = video_frame_buffer(receiver)
        assert buffer is not None and buffer.keyframe_request == publication.requester.request
        # Nothing undecodable was forwarded ahead of the keyframe.
        assert all(r.unreadable == 0 for r in bob.received.values())
    finally:
        await call.close()


async def test_fir_and_pli_from_a_subscriber_reach_the_publisher() -> None:
    call = Call(keyframe_interval=0.2)
    alice = Client("alice", 1, audio=False)
    bob = Client("bob", 2, audio=False, video=False)
    try:
        await call.join(alice)
        await call.join(bob)
        await until(lambda: len(bob.from_tag(1)) >= 5, 10, "video")
        publication = call.room.peer("alice").publications[0]
        slot = next(s for s in call.room.peer("bob")._send if s.publication is publication)
        server_ssrc = slot.transceiver.sender._ssrc
        receiver = next(
            t.receiver for t in bob.pc.getTransceivers() if t.receiver.track is not None and t.kind == "video"
        )
        rtcp_ssrc = getattr(receiver, "_RTCRtpReceiver__rtcp_ssrc")  # noqa: B009

        before = publication.track.keyframes
        requested = publication.requester.requested
        # FIR (RFC 5104 section 4.3.1): media SSRC 0, target in the FCI.
        fir = RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=rtcp_ssrc, media_ssrc=0, fci=struct.pack("!IBxxx", server_ssrc, 1))
        await receiver._send_rtcp(fir)
        await until(lambda: publication.requester.requested > requested, 3, "FIR routed to the sender")
        await until(lambda: publication.track.keyframes > before, 3, "keyframe after FIR")

        # PLI (RFC 4585 section 6.3.1) bursts are rate-limited to one per interval per published track.
        sent = publication.requester.sent
        for _ in range(10):
            await receiver._send_rtcp_pli(server_ssrc)
        await asyncio.sleep(0.5)
        assert 1 <= publication.requester.sent - sent <= 3
        assert len(bob.from_tag(1)) >= 5
    finally:
        await call.close()


def test_config_used_by_the_harness_is_loopback_only() -> None:
    assert CONFIG.bind_addresses == ("127.0.0.1",)
    assert CONFIG.rtc_configuration().iceServers == []
