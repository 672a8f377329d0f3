"""The SFU's own send path and receive-side buffers, without a network.

Covers: release of a video frame at its marker packet, audio without
prefetch, the urgent keyframe request of a new subscriber, one packetisation
per frame shared by every subscriber, the RTP packets a forwarder writes
(header, extensions, SRTP through the transport, NACK history, RTCP SR
counters), REMB once per receiver report, the bounded ICE receive queue and
the import-time checks of the new patches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import aioice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTP_HISTORY_SIZE,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtpPacket,
    unpack_remb_fci,
)

from signalling.sfu import passthrough
from signalling.sfu.forwarder import RtpForwarder, header_layout, ntp_now
from signalling.sfu.jitter import SSRC_SWITCH, UNREPAIRABLE, AudioPacketBuffer, VideoFrameBuffer
from signalling.sfu.packetiser import PAYLOAD_MAX, packetise_h264, packetise_vp8, packetiser_for
from signalling.sfu.passthrough import (
    AiortcCompatibilityError,
    DroppingQueue,
    EncodedFrame,
    EncodedTrack,
    KeyframeRequester,
    RelayTrack,
    adopt_receiver,
    adopt_sender,
    bound_receive_queue,
    check_aiortc,
)
from tests.signalling.sfu.loop_clock import FakeClock

VIDEO = Fraction(1, 90000)
KEY = b"\x10\x02\x00\x9d\x01\x2a" + bytes(10)


def rtp(seq: int, ts: int, data: bytes = b"x", marker: bool = False) -> RtpPacket:
    packet = RtpPacket(payload_type=97, sequence_number=seq & 0xFFFF, timestamp=ts, marker=int(marker))
    packet._data = data  # type: ignore[attr-defined]  # what aiortc's depayloader leaves on the packet
    return packet


def vp8(sequence: int, pts: int, key: bool = False, size: int = 20) -> EncodedFrame:
    data = KEY + bytes(size) if key else b"\x31" + bytes(size)
    return EncodedFrame(data, pts, VIDEO, key, "video/vp8", sequence)


# --- receive-side buffers --------------------------------------------------------------------------------------------


def test_video_frame_is_released_at_its_marker_packet() -> None:
    buffer = VideoFrameBuffer()
    assert buffer.add(rtp(10, 3000, b"a")) == (False, None)
    assert buffer.add(rtp(11, 3000, b"b")) == (False, None)
    pli, frame = buffer.add(rtp(12, 3000, b"c", marker=True))
    assert not pli and frame is not None
    assert (frame.data, frame.timestamp) == (b"abc", 3000)  # without waiting for the next frame's first packet
    pli, frame = buffer.add(rtp(13, 6000, b"d", marker=True))
    assert frame is not None and (frame.data, frame.timestamp) == (b"d", 6000)


def test_video_frame_with_a_gap_waits_for_the_missing_packet() -> None:
    buffer = VideoFrameBuffer()
    buffer.add(rtp(100, 3000, b"k", marker=True))
    assert buffer.add(rtp(101, 6000, b"a"))[1] is None
    assert buffer.add(rtp(103, 6000, b"c", marker=True))[1] is None  # 102 missing: not contiguous
    frame = buffer.add(rtp(102, 6000, b"b"))[1]  # retransmission fills the gap
    assert frame is not None and frame.data == b"abc"
    assert buffer.add(rtp(101, 6000, b"a"))[1] is None  # a late duplicate of a released packet is ignored


def frames_of(first_seq: int, count: int, size: int = 4, first_ts: int = 3000) -> list[RtpPacket]:
    """``count`` frames of ``size`` packets each (marker on the last), timestamps 3000 apart."""
    return [
        rtp(first_seq + k * size + i, first_ts + 3000 * k, bytes([k % 256, i]), marker=i == size - 1)
        for k in range(count)
        for i in range(size)
    ]


def test_a_packet_lost_for_good_costs_its_frame_not_seconds_of_video() -> None:
    # aiortc's buffer waits for a missing packet until its 512-packet ring overflows (about 5 s of 1 Mbit/s video),
    # then releases the backlog at once.  Once UNREPAIRABLE packets came after the hole, NACK no longer asks for it.
    buffer = VideoFrameBuffer(unrepairable=16)
    packets = frames_of(65500, 40)  # sequence numbers wrap
    lost = packets[5]  # frame 2, second packet
    released: list[tuple[int, int]] = []  # (timestamp, packets added when released)
    plis = 0
    for added, packet in enumerate(packets, 1):
        if packet is lost:
            continue
        pli, frame = buffer.add(packet)
        plis += pli
        if frame is not None:
            released.append((frame.timestamp, added))
    timestamps = [t for t, _ in released]
    assert timestamps == [3000 * (k + 1) for k in range(40) if k != 1]  # only the frame with the hole is dropped
    assert plis == 1 and buffer.holes_skipped == 1 and buffer.packets_skipped == 3
    # Frame 3 came out when the 16th packet after the hole arrived, and the backlog drained within a few packets.
    assert released[1] == (9000, 6 + 16)
    assert all(added - (k + 1) * 4 <= 16 for k, (_, added) in zip([0, *range(2, 40)], released, strict=True))
    assert released[-1][1] == len(packets)


def test_a_hole_is_repaired_by_a_retransmission_before_it_is_given_up() -> None:
    buffer = VideoFrameBuffer(unrepairable=16)
    packets = frames_of(100, 6)
    got = [buffer.add(p) for p in packets[:5] + packets[6:20]]  # packet 105 missing, 14 packets after it
    assert not any(pli for pli, _ in got) and [f.timestamp for _, f in got if f] == [3000]
    pli, frame = buffer.add(packets[5])  # the retransmission
    assert not pli and frame is not None and frame.timestamp == 6000
    assert buffer.holes_skipped == 0


def test_a_hole_in_a_long_frame_is_given_up_at_the_next_frame_start() -> None:
    buffer = VideoFrameBuffer(unrepairable=16)
    keyframe = [rtp(1000 + i, 3000, b"k", marker=i == 199) for i in range(200)]  # larger than UNREPAIRABLE
    after = frames_of(1200, 3, first_ts=6000)
    sent = keyframe[:10] + keyframe[11:] + after
    results = [buffer.add(p) for p in sent]
    assert [f.timestamp for _, f in results if f is not None] == [6000, 9000, 12000]  # only the keyframe is lost
    # Given up (and a keyframe asked for) at the first packet of the next frame, not before.
    assert [i for i, (pli, _) in enumerate(results) if pli] == [sent.index(after[0])]
    assert buffer.holes_skipped == 1 and buffer.packets_skipped == 199


def test_the_buffers_keyframe_requests_can_go_through_a_rate_limiter() -> None:
    clock = FakeClock()
    sent: list[float] = []
    requester = KeyframeRequester(lambda: sent.append(clock.now), min_interval=0.5, clock=clock)
    buffer = VideoFrameBuffer(unrepairable=16)
    buffer.keyframe_request = requester.request
    packets = frames_of(0, 60)
    lost = {packets[5], packets[90], packets[170]}  # three holes in a row, each given up
    results = [buffer.add(p) for p in packets if p not in lost]
    assert not any(pli for pli, _ in results)  # the requester has them, not the receiver's direct PLI
    assert buffer.holes_skipped == 3 and requester.requested == 3
    assert sent == [100.0]  # one now, the others coalesced ...
    clock.advance(0.5)
    assert sent == [100.0, 100.5]  # ... into one at the end of the interval


def test_unrepairable_is_where_nack_gives_up_and_below_the_ring() -> None:
    buffer = VideoFrameBuffer()
    assert UNREPAIRABLE == RTP_HISTORY_SIZE and buffer._unrepairable == UNREPAIRABLE < buffer.capacity


def test_a_large_frame_is_scanned_incrementally_and_released_whole() -> None:
    buffer = VideoFrameBuffer()
    parts = [bytes([i % 256]) * 3 for i in range(300)]
    order = list(range(300))
    order[100], order[200] = order[200], order[100]  # a gap filled late
    results = [buffer.add(rtp(1000 + i, 3000, parts[i], marker=i == 299))[1] for i in order]
    assert all(r is None for r in results[:-1])
    assert results[-1] is not None and results[-1].data == b"".join(parts)
    assert buffer._scanned == 0 or buffer._scan_first is None


def test_video_frame_without_marker_is_released_when_the_next_frame_starts() -> None:
    buffer = VideoFrameBuffer()
    buffer.add(rtp(0xFFFE, 3000, b"a"))
    assert buffer.add(rtp(0xFFFF, 3000, b"b"))[1] is None
    frame = buffer.add(rtp(0, 6000, b"c"))[1]  # marker lost; sequence numbers wrap
    assert frame is not None and (frame.data, frame.timestamp) == (b"ab", 3000)
    frame = buffer.add(rtp(1, 6000, b"d", marker=True))[1]
    assert frame is not None and frame.data == b"cd"


def test_a_stray_packet_of_another_track_is_not_released_as_a_frame() -> None:
    # aiortc routes a packet of a not yet registered SSRC by payload type: the first packet of a screen share
    # being added can reach the camera's receiver.  Released at its marker, it would be forwarded as a camera frame.
    buffer = VideoFrameBuffer()
    buffer.add(rtp(100, 3000, b"cam", marker=True))
    stray = rtp(8000, 99, b"screen", marker=True)
    stray.ssrc = 42
    assert buffer.add(stray) == (False, None)
    frame = buffer.add(rtp(101, 6000, b"cam2", marker=True))[1]
    assert frame is not None and frame.data == b"cam2" and buffer.ssrc.stray == 1
    # A sender that really changed its SSRC is followed after SSRC_SWITCH packets, with a keyframe request.
    results = []
    for i in range(SSRC_SWITCH):
        packet = rtp(9000 + i, 9000 + i, bytes([i]), marker=True)
        packet.ssrc = 42
        results.append(buffer.add(packet))
    assert all(r == (False, None) for r in results[:-1])
    pli, frame = results[-1]
    assert pli and frame is not None and frame.data == bytes([SSRC_SWITCH - 1])


def test_audio_packets_are_released_at_once_and_late_ones_dropped() -> None:
    buffer = AudioPacketBuffer()
    got = [buffer.add(rtp(seq, seq * 960, bytes([seq % 256])))[1] for seq in (65534, 65535, 0, 2)]
    assert [f.timestamp if f else None for f in got] == [65534 * 960, 65535 * 960, 0, 1920]
    assert buffer.add(rtp(1, 960))[1] is None  # older than one already forwarded
    assert buffer.add(rtp(2, 1920))[1] is None  # duplicate
    assert buffer.late == 2


async def test_adopted_receivers_get_the_sfu_buffers_and_no_bitrate_estimator() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        video = pc.addTransceiver("video", direction="recvonly").receiver
        audio = pc.addTransceiver("audio", direction="recvonly").receiver
        adopt_receiver(video)
        adopt_receiver(audio)
        assert isinstance(video._RTCRtpReceiver__jitter_buffer, VideoFrameBuffer)  # type: ignore[attr-defined]
        assert isinstance(audio._RTCRtpReceiver__jitter_buffer, AudioPacketBuffer)  # type: ignore[attr-defined]
        assert video._RTCRtpReceiver__remote_bitrate_estimator is None  # type: ignore[attr-defined]

        sent: list[bytes] = []

        async def send_rtp(data: bytes) -> None:
            sent.append(data)

        video.transport._send_rtp = send_rtp  # type: ignore[method-assign]
        report = RtcpReceiverInfo(
            ssrc=1234, fraction_lost=0, packets_lost=0, highest_sequence=1, jitter=0, lsr=0, dlsr=0
        )
        await video._send_rtcp(RtcpRrPacket(ssrc=99, reports=[report]))
        packets = [p for data in sent for p in RtcpPacket.parse(data)]
        assert isinstance(packets[0], RtcpRrPacket)
        remb = packets[1]
        assert isinstance(remb, RtcpPsfbPacket) and remb.fmt == RTCP_PSFB_APP and remb.ssrc == 99
        assert unpack_remb_fci(remb.fci) == (passthrough.DEFAULT_REMB_BITRATE, [1234])
    finally:
        await pc.close()


# --- keyframe requests -----------------------------------------------------------------------------------------------


def test_new_subscriber_bypasses_most_of_the_rate_limit() -> None:
    clock = FakeClock()
    sent: list[float] = []
    requester = KeyframeRequester(lambda: sent.append(clock.now), min_interval=0.5, urgent_interval=0.1, clock=clock)
    requester.request()
    clock.advance(0.2)
    requester.request()  # an ordinary request waits for the end of the interval...
    requester.request_urgent()  # ...a new subscriber does not
    assert sent == [100.0, pytest.approx(100.2)]
    clock.advance(0.05)
    requester.request_urgent()  # but still keeps 0.1 s from the last one
    assert len(sent) == 2
    clock.advance(0.05)
    assert sent[-1] == pytest.approx(100.3)
    clock.advance(1)
    assert len(sent) == 3  # the deferred ordinary request was served by the urgent ones


def test_relay_asks_urgently_until_its_first_keyframe_then_normally() -> None:
    ordinary: list[int] = []
    urgent: list[int] = []
    track = EncodedTrack(
        "video", request_keyframe=lambda: ordinary.append(1), request_keyframe_urgent=lambda: urgent.append(1)
    )
    relay = track.subscribe()
    track.push(vp8(0, 0))
    assert (len(urgent), len(ordinary)) == (2, 0)
    track.push(vp8(1, 3000, key=True))
    relay.request_keyframe()  # e.g. a PLI from the subscriber later on
    assert (len(urgent), len(ordinary)) == (2, 1)
    relay.require_keyframe(urgent=True)  # reused sender for a new subscription
    assert len(urgent) == 3


# --- packetising once per publication --------------------------------------------------------------------------------


class FakeForwarder:
    def __init__(self, accept: bool = True) -> None:
        self.sent: list[tuple[Sequence[bytes], int, int]] = []
        self.accept = accept

    def send_frame(self, payloads: Sequence[bytes], pts: int, ntp: int) -> bool:
        self.sent.append((payloads, pts, ntp))
        return self.accept


def test_vp8_payloads_follow_rfc_7741_with_the_frame_sequence_as_picture_id() -> None:
    data = bytes(range(256)) * 12  # 3072 bytes: 3 packets
    payloads = packetise_vp8(data, 0x8001)
    assert [len(p) for p in payloads] == [PAYLOAD_MAX, PAYLOAD_MAX, 3072 - 2 * (PAYLOAD_MAX - 4) + 4]
    assert payloads[0][:4] == b"\x90\x80\x80\x01"  # X, S, PID 0; I; M + picture id 1 (15 bits)
    assert all(p[:4] == b"\x80\x80\x80\x01" for p in payloads[1:])
    assert b"".join(p[4:] for p in payloads) == data
    assert packetise_vp8(b"abc", 5) == [b"\x90\x80\x80\x05abc"]


def test_h264_and_opus_packetisers() -> None:
    nal = b"\x00\x00\x00\x01\x65" + bytes(3000)
    assert [p[0] & 0x1F for p in packetise_h264(nal, 0)] == [28, 28, 28]  # FU-A
    assert packetiser_for("audio/opus")(b"opus", 7) == [b"opus"]


def test_one_packetisation_per_frame_is_shared_by_every_subscriber() -> None:
    track = EncodedTrack("video", request_keyframe=lambda: None)
    relays = [RelayTrack("video", end_with_source=False) for _ in range(3)]
    forwarders = [FakeForwarder() for _ in relays]
    for relay, forwarder in zip(relays, forwarders, strict=True):
        relay.attach(track)
        relay.bind(forwarder)  # type: ignore[arg-type]
    track.push(vp8(7, 3000, key=True))
    track.push(vp8(8, 6000))
    assert track.packetised == 2
    first = [f.sent[0][0] for f in forwarders]
    assert all(p is first[0] for p in first)  # the very same payload list
    assert first[0][0][2:4] == b"\x80\x07"
    assert len({f.sent[1][2] for f in forwarders}) == 1  # one NTP time per frame
    assert [pts for _, pts, _ in forwarders[0].sent] == [0, 3000]
    assert all(r.frames_forwarded == 2 for r in relays)


def test_frames_queued_before_the_sender_starts_are_flushed_with_their_own_picture_ids() -> None:
    track = EncodedTrack("video", request_keyframe=lambda: None)
    early = RelayTrack("video", end_with_source=False)
    early.attach(track)
    late = RelayTrack("video", end_with_source=False)
    late.attach(track)
    early_forwarder = FakeForwarder()
    early.bind(early_forwarder)  # type: ignore[arg-type]
    track.push(vp8(40, 3000, key=True))
    track.push(vp8(41, 6000))
    late_forwarder = FakeForwarder()
    late.bind(late_forwarder)  # type: ignore[arg-type]  # its sender starts now: keyframe and delta are sent at once
    track.push(vp8(42, 9000))
    ids = [[payloads[0][3] for payloads, _, _ in f.sent] for f in (early_forwarder, late_forwarder)]
    assert ids == [[40, 41, 42], [40, 41, 42]]
    assert track.packetised == 3  # the flushed frames were packetised for the late relay only


def test_a_congested_subscriber_waits_for_the_next_keyframe() -> None:
    requests: list[int] = []
    track = EncodedTrack("video", request_keyframe=lambda: requests.append(1))
    relay = RelayTrack("video", end_with_source=False)
    relay.attach(track)
    forwarder = FakeForwarder()
    relay.bind(forwarder)  # type: ignore[arg-type]
    track.push(vp8(0, 0, key=True))
    forwarder.accept = False
    track.push(vp8(1, 3000))
    forwarder.accept = True
    track.push(vp8(2, 6000))  # not sent: a delta after a dropped frame
    track.push(vp8(3, 9000, key=True))
    assert [pts for _, pts, _ in forwarder.sent] == [0, 3000, 9000]
    assert relay.frames_dropped == 2 and requests


# --- the forwarder's packets -----------------------------------------------------------------------------------------


class FakeUdp:
    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, tuple[str, int]]] = []
        self.buffered = 0

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        self.datagrams.append((data, address))

    def get_write_buffer_size(self) -> int:
        return self.buffered


class FakeSrtp:
    def protect(self, data: bytes) -> bytes:
        return b"S" + data


class FakePair:
    def __init__(self, udp: FakeUdp) -> None:
        self.protocol = type("Protocol", (), {"transport": udp})()
        self.remote_addr = ("127.0.0.1", 5000)


class FakeDtls:
    def __init__(self, udp: FakeUdp) -> None:
        self._state = State.CONNECTED
        self._tx_srtp = FakeSrtp()
        connection = type("Connection", (), {"_nominated": {1: FakePair(udp)}})()
        self.transport = type("Ice", (), {"_connection": connection})()
        self._RTCDtlsTransport__tx_bytes = 0
        self._RTCDtlsTransport__tx_packets = 0
        self.rtp: list[bytes] = []

    async def _send_rtp(self, data: bytes) -> None:
        self.rtp.append(data)


class FakeSender:
    """The attributes of ``RTCRtpSender`` the forwarder reads and keeps up to date."""

    def __init__(self, dtls: FakeDtls, relay: RelayTrack) -> None:
        self.transport = dtls
        self.track = relay
        self._enabled = True
        self._ssrc = 0x11223344
        self._rtx_ssrc = 0x55667788
        for name, value in {
            "rtp_started": asyncio.Event(),
            "rtp_exited": asyncio.Event(),
            "rtx_payload_type": 98,
            "rtx_sequence_number": 500,
            "ntp_timestamp": 0,
            "rtp_timestamp": 0,
            "octet_count": 0,
            "packet_count": 0,
        }.items():
            setattr(self, "_RTCRtpSender__" + name, value)


def extensions_map() -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
            ]
        )
    )
    return extensions


def make_forwarder() -> tuple[RtpForwarder, FakeSender, FakeUdp, HeaderExtensionsMap]:
    udp = FakeUdp()
    relay = RelayTrack("video", end_with_source=False)
    sender = FakeSender(FakeDtls(udp), relay)
    forwarder = RtpForwarder(sender, relay)  # type: ignore[arg-type]
    mapping = extensions_map()
    forwarder.configure(97, mapping, "4")
    forwarder._running = True
    return forwarder, sender, udp, mapping


def test_header_layout_matches_aiortc_serialisation() -> None:
    mapping = extensions_map()
    block, offset = header_layout(mapping, "12")
    packet = RtpPacket(payload_type=97, sequence_number=1, timestamp=2, ssrc=3)
    packet.extensions.mid = "12"
    packet.extensions.abs_send_time = 0xABCDEF
    reference = packet.serialize(mapping)
    assert offset is not None
    assert reference[12 : 12 + len(block)] == block[:offset] + b"\xab\xcd\xef" + block[offset + 3 :]
    assert header_layout(HeaderExtensionsMap(), "0") == (b"", None)


def test_forwarder_sends_one_srtp_packet_per_payload_with_aiortc_headers() -> None:
    forwarder, sender, udp, mapping = make_forwarder()
    ntp = ntp_now()
    assert forwarder.send_frame([b"p1", b"p2", b"p3"], 3000, ntp)
    assert forwarder.send_frame([b"q1"], 6000, ntp + (1 << 30))
    assert all(data.startswith(b"S") and address == ("127.0.0.1", 5000) for data, address in udp.datagrams)
    packets = [RtpPacket.parse(data[1:], mapping) for data, _ in udp.datagrams]
    assert [p.payload for p in packets] == [b"p1", b"p2", b"p3", b"q1"]
    assert [p.marker for p in packets] == [0, 0, 1, 1]
    assert [(p.sequence_number - packets[0].sequence_number) & 0xFFFF for p in packets] == [0, 1, 2, 3]
    assert {p.ssrc for p in packets} == {0x11223344} and {p.payload_type for p in packets} == {97}
    assert packets[3].timestamp - packets[0].timestamp == 3000
    assert {p.extensions.mid for p in packets} == {"4"}
    assert packets[0].extensions.abs_send_time == (ntp >> 14) & 0xFFFFFF
    state = sender.__dict__
    assert (state["_RTCRtpSender__packet_count"], state["_RTCRtpSender__octet_count"]) == (4, 8)
    assert state["_RTCRtpSender__ntp_timestamp"] == ntp + (1 << 30)
    assert state["_RTCRtpSender__rtp_timestamp"] == packets[3].timestamp
    assert sender.transport._RTCDtlsTransport__tx_packets == 4


async def test_forwarder_answers_nacks_through_rtx() -> None:
    forwarder, sender, udp, mapping = make_forwarder()
    forwarder.send_frame([b"p1", b"p2"], 3000, ntp_now())
    first = RtpPacket.parse(udp.datagrams[0][0][1:], mapping)
    await forwarder._retransmit(first.sequence_number)
    await forwarder._retransmit((first.sequence_number + 1000) & 0xFFFF)  # not in the history: ignored
    assert len(sender.transport.rtp) == 1
    rtx = RtpPacket.parse(sender.transport.rtp[0], mapping)
    assert (rtx.payload_type, rtx.ssrc, rtx.sequence_number) == (98, 0x55667788, 500)
    assert rtx.payload == first.sequence_number.to_bytes(2, "big") + b"p1"
    sender.__dict__["_RTCRtpSender__rtx_payload_type"] = None
    await forwarder._retransmit(first.sequence_number)
    assert sender.transport.rtp[1] == udp.datagrams[0][0][1:]  # without RTX: the same packet again


def test_forwarder_reports_congestion_and_ignores_a_closed_transport() -> None:
    forwarder, sender, udp, _ = make_forwarder()
    udp.buffered = 10**6
    assert not forwarder.send_frame([b"x"], 0, 0)
    udp.buffered = 0
    sender.transport._state = State.CLOSED
    assert forwarder.send_frame([b"x"], 0, 0)  # discarded, not congested
    sender._enabled = False
    assert forwarder.send_frame([b"x"], 0, 0)
    assert udp.datagrams == [] and forwarder.congested == 1


async def test_adopt_sender_replaces_the_rtp_loop_of_relay_senders_only() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        relay = RelayTrack("video", end_with_source=False)
        relayed = pc.addTransceiver(relay, direction="sendonly").sender
        forwarder = adopt_sender(relayed, lambda: None)
        assert forwarder is not None
        assert relayed._run_rtp == forwarder._run and relayed._retransmit == forwarder._retransmit
        plain = pc.addTransceiver("audio", direction="sendonly").sender
        assert adopt_sender(plain, lambda: None) is None
        assert plain._run_rtp.__func__ is RTCRtpSender._run_rtp  # type: ignore[attr-defined]
    finally:
        await pc.close()


# --- ICE receive queue -----------------------------------------------------------------------------------------------


async def test_ice_receive_queue_drops_the_oldest_datagrams_but_never_the_end() -> None:
    queue = DroppingQueue(3)
    for i in range(5):
        queue.put_nowait((bytes([i]), 1))
    assert queue.dropped == 2
    assert [queue.get_nowait()[0] for _ in range(3)] == [b"\x02", b"\x03", b"\x04"]
    for i in range(3):
        queue.put_nowait((bytes([i]), 1))
    queue.put_nowait(None)
    queue.put_nowait((b"late", 1))
    assert queue.get_nowait() is None and queue.empty()


async def test_bound_receive_queue_on_a_real_connection() -> None:
    connection = aioice.Connection(ice_controlling=True)
    try:
        bounded = bound_receive_queue(connection, 2)
        assert connection._queue is bounded and bound_receive_queue(connection) is bounded
        for i in range(4):
            connection.data_received(bytes([i]), 1)
        assert bounded.qsize() == 2 and bounded.dropped == 2
    finally:
        await connection.close()


# --- import-time checks ----------------------------------------------------------------------------------------------


def test_check_refuses_other_aioice_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice, "__version__", "0.14.0")
    with pytest.raises(AiortcCompatibilityError, match=r"aioice 0\.14\.0"):
        check_aiortc()


@pytest.mark.parametrize(
    ("owner", "name", "message"),
    [
        (RTCRtpSender, "_retransmit", "_retransmit"),
        (RTCRtpSender, "_run_rtp", "_run_rtp"),
    ],
)
def test_check_refuses_a_sender_without_the_replaced_methods(
    monkeypatch: pytest.MonkeyPatch, owner: type[Any], name: str, message: str
) -> None:
    monkeypatch.delattr(owner, name)
    with pytest.raises(AiortcCompatibilityError, match=message):
        check_aiortc()


def test_check_refuses_a_receiver_without_its_jitter_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    def handle_rtp_packet(self: Any, packet: Any, arrival_time_ms: int) -> None:
        self._RTCRtpReceiver__decoder_queue.put(packet)

    from aiortc import RTCRtpReceiver

    monkeypatch.setattr(RTCRtpReceiver, "_handle_rtp_packet", handle_rtp_packet)
    with pytest.raises(AiortcCompatibilityError, match="__jitter_buffer"):
        check_aiortc()
