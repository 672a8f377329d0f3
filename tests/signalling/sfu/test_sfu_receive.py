"""The SFU's lean receive path (signalling.sfu.receive) against aiortc's own parsing, statistics and routing.

A real ``RTCPeerConnection`` receiver is adopted and started with real
receive parameters; packets are protected with a real libsrtp session and
handed to the transport's ICE connection as aioice would.  No network.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aioice
import aioice.ice
import aioice.stun
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver
from aiortc import rtcrtpreceiver as aiortc_receiver
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
)
from aiortc.rtp import RtcpPacket, RtpPacket, wrap_rtx
from pylibsrtp import Policy, Session

from signalling.sfu.passthrough import (
    AiortcCompatibilityError,
    EncodedFrame,
    adopt_receiver,
    check_aiortc,
    lean_receiver,
)
from signalling.sfu.receive import LeanStreamStatistics, ReceivePath, fast_reads, vp8_descriptor_length

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
RTX = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=97, parameters={"apt": 96})
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
SSRC, RTX_SSRC = 0x1111, 0x2222
KEY = bytes(range(30))  # AES_CM_128_HMAC_SHA1_80: 16-byte key + 14-byte salt


# --- header and descriptor parsing -----------------------------------------------------------------------------------


def _descriptors() -> list[bytes]:
    out = [b"\x10"]
    for i, m, lflag, t, k in itertools.product((0, 1), (0, 1), (0, 1), (0, 1), (0, 1)):
        extended = bytes([0x90, (i << 7) | (lflag << 6) | (t << 5) | (k << 4)])
        picture = (b"\x81\x02" if m else b"\x05") if i else b""
        out.append(extended + picture + (b"\x07" if lflag else b"") + (b"\xe3" if t or k else b""))
    return out


@pytest.mark.parametrize("descriptor", _descriptors())
def test_vp8_descriptor_length_agrees_with_aiortc(descriptor: bytes) -> None:
    payload = descriptor + b"\x9d\x01\x2a"
    _, rest = VpxPayloadDescriptor.parse(payload)
    assert payload[vp8_descriptor_length(payload) :] == rest
    for cut in range(len(descriptor)):
        truncated = descriptor[:cut]
        try:
            VpxPayloadDescriptor.parse(truncated)
        except ValueError:
            with pytest.raises(ValueError):
                vp8_descriptor_length(truncated)
        else:
            assert truncated[vp8_descriptor_length(truncated) :] == VpxPayloadDescriptor.parse(truncated)[1]


def test_statistics_agree_with_aiortc(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    sequence, timestamp, now = 65500, 1000, 100.0
    arrivals: list[tuple[int, int, float]] = []
    for _ in range(400):
        step = rng.choice((1, 1, 1, 1, 2, 3, 0, -2, -40))  # in order, gaps, duplicates, reordering
        sequence = (sequence + step) & 0xFFFF
        timestamp += rng.choice((0, 0, 3000))
        now += rng.random() / 50
        arrivals.append((sequence, timestamp, now))
    reference = aiortc_receiver.StreamStatistics(90000)
    lean = LeanStreamStatistics(90000)
    for sequence, timestamp, now in arrivals:
        monkeypatch.setattr(time, "time", lambda now=now: now)  # what aiortc's StreamStatistics.add reads
        reference.add(RtpPacket(sequence_number=sequence, timestamp=timestamp))
        lean.received(sequence, timestamp, now)
        assert (lean.packets_received, lean.cycles, lean.max_seq, lean.jitter, lean.packets_lost) == (
            reference.packets_received,
            reference.cycles,
            reference.max_seq,
            reference.jitter,
            reference.packets_lost,
        )
    assert lean.fraction_lost == reference.fraction_lost


# --- a started, adopted receiver -------------------------------------------------------------------------------------


@dataclass
class Receiving:
    pc: RTCPeerConnection
    receiver: RTCRtpReceiver
    dtls: RTCDtlsTransport
    frames: list[EncodedFrame] = field(default_factory=list)
    nacks: list[tuple[int, list[int]]] = field(default_factory=list)
    plis: list[int] = field(default_factory=list)
    tx: Session = field(default_factory=lambda: Session(_policy(Policy.SSRC_ANY_OUTBOUND)))

    def send(self, packet: RtpPacket) -> None:
        """What aioice does with a datagram from the nominated pair."""
        self.dtls.transport._connection.data_received(self.tx.protect(packet.serialize()), 1)

    @property
    def queued(self) -> int:
        return int(self.dtls.transport._connection._queue.qsize())


def _policy(ssrc_type: int) -> Policy:
    policy = Policy(key=KEY, ssrc_type=ssrc_type)
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return policy


async def _receiving(kind: str, codecs: list[RTCRtpCodecParameters], rtx: bool) -> Receiving:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = pc.addTransceiver(kind, direction="recvonly").receiver
    adopt_receiver(receiver).sink = None
    state = Receiving(pc, receiver, receiver.transport)
    queue = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]
    queue.sink = state.frames.append

    async def send_nack(media_ssrc: int, lost: list[int]) -> None:
        state.nacks.append((media_ssrc, lost))

    async def send_pli(media_ssrc: int) -> None:
        state.plis.append(media_ssrc)

    receiver._send_rtcp_nack = send_nack  # type: ignore[method-assign]
    receiver._send_rtcp_pli = send_pli  # type: ignore[method-assign]
    # The state DTLS leaves behind once connected: SRTP sessions keyed from the handshake.
    state.dtls._rx_srtp = Session(_policy(Policy.SSRC_ANY_INBOUND))
    state.dtls._tx_srtp = Session(_policy(Policy.SSRC_ANY_OUTBOUND))
    state.dtls._state = State.CONNECTED
    receiver._track = aiortc_receiver.RemoteStreamTrack(kind=kind)  # set by setRemoteDescription
    encoding = RTCRtpDecodingParameters(
        ssrc=SSRC, payloadType=96, rtx=RTCRtpRtxParameters(ssrc=RTX_SSRC) if rtx else None
    )
    await receiver.receive(RTCRtpReceiveParameters(codecs=codecs, encodings=[encoding], muxId="0"))
    return state


@pytest.fixture
async def video() -> AsyncIterator[Receiving]:
    state = await _receiving("video", [VP8, RTX], rtx=True)
    yield state
    state.dtls._state = State.CLOSED
    await state.pc.close()


def _vp8(sequence: int, timestamp: int, payload: bytes, *, marker: bool, start: bool) -> RtpPacket:
    packet = RtpPacket(payload_type=96, marker=int(marker), sequence_number=sequence, timestamp=timestamp, ssrc=SSRC)
    packet.payload = (b"\x90\x80\x05" if start else b"\x80\x80\x05") + payload
    return packet


KEYFRAME = b"\x10\x02\x00\x9d\x01\x2a" + bytes(30)


async def test_frames_are_assembled_at_the_marker_without_aiortc_s_loop(video: Receiving) -> None:
    handled: list[Any] = []
    original = video.receiver._handle_rtp_packet

    async def spy(packet: Any, arrival_time_ms: int) -> None:
        handled.append(packet)
        await original(packet, arrival_time_ms)

    video.receiver._handle_rtp_packet = spy  # type: ignore[method-assign]
    lean = lean_receiver(video.receiver)
    assert lean is not None
    probed: list[tuple[int, int]] = []
    lean.probe = lambda timestamp, payload: probed.append((timestamp, len(payload)))
    video.send(_vp8(100, 3000, KEYFRAME[:20], marker=False, start=True))
    second = _vp8(101, 3000, KEYFRAME[20:], marker=True, start=False)
    second.csrc = [7, 8]
    second.padding_size = 5
    video.send(second)
    assert [(f.pts, f.keyframe, f.data) for f in video.frames] == [(3000, True, KEYFRAME)]
    assert handled == [] and video.queued == 0 and lean.packets == 2
    assert probed == [(3000, 23), (3000, len(KEYFRAME) - 17)]
    # What aiortc's RTCP task and getStats() read.
    report = await video.receiver.getStats()
    inbound = next(s for s in report.values() if s.type == "inbound-rtp")
    assert (inbound.ssrc, inbound.packetsReceived, inbound.packetsLost) == (SSRC, 2, 0)
    assert [s.source for s in video.receiver.getSynchronizationSources()] == [SSRC]
    transport = next(s for s in report.values() if s.type == "transport")
    assert transport.packetsReceived == 2


async def test_a_gap_sends_a_nack_and_rtx_fills_it(video: Receiving) -> None:
    video.send(_vp8(200, 3000, KEYFRAME[:10], marker=False, start=True))
    lost = _vp8(201, 3000, KEYFRAME[10:20], marker=False, start=False)
    video.send(_vp8(202, 3000, KEYFRAME[20:], marker=True, start=False))
    await asyncio.sleep(0)
    assert video.nacks == [(SSRC, [201])] and video.frames == []
    video.send(wrap_rtx(lost, payload_type=97, sequence_number=5, ssrc=RTX_SSRC))
    assert [f.data for f in video.frames] == [KEYFRAME]
    video.send(_vp8(203, 6000, b"\x31" + bytes(9), marker=True, start=True))
    assert len(video.frames) == 2 and not video.frames[1].keyframe
    streams = video.receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    # As aiortc counts: the retransmission is received on the RTX stream, so the media stream still lacks 201.
    assert streams[SSRC].packets_received == 3 and streams[SSRC].packets_lost == 1
    assert streams[RTX_SSRC].packets_received == 1


async def test_rtcp_and_unknown_packets_keep_aiortc_s_path(video: Receiving) -> None:
    path = ReceivePath.of(video.dtls)
    rtcp = bytes(RtcpPacket.parse(bytes.fromhex("80c9000100001111"))[0])  # an empty receiver report
    video.dtls.transport._connection.data_received(video.tx.protect_rtcp(rtcp), 1)
    assert video.queued == 1  # RTCP goes to aiortc's loop
    # While aiortc's loop has datagrams pending, RTP queues behind them (never overtakes them).
    video.send(_vp8(300, 3000, KEYFRAME, marker=True, start=True))
    assert video.queued == 2 and video.frames == []
    video.dtls.transport._connection._queue.get_nowait()
    video.dtls.transport._connection._queue.get_nowait()
    # A payload type no receiver has is held, and dropped at the next registration if still unroutable.
    stray = _vp8(301, 3000, KEYFRAME, marker=True, start=True)
    stray.payload_type, stray.ssrc = 100, 0x3333
    video.send(stray)
    assert video.queued == 0 and path.unrouted == 0
    path.replay()
    assert path.unrouted == 1 and video.frames == []


async def test_once_caught_up_rtp_passes_queued_rtcp(video: Receiving) -> None:
    """After the first packet this path took, RTP never follows RTCP into aiortc's loop (that is how it fell
    behind under load): none of a lean receiver's RTP can be in that queue any more."""
    lean = lean_receiver(video.receiver)
    assert lean is not None
    video.send(_vp8(400, 3000, KEYFRAME, marker=True, start=True))
    assert video.queued == 0 and len(video.frames) == 1
    rtcp = bytes(RtcpPacket.parse(bytes.fromhex("80c9000100001111"))[0])
    video.dtls.transport._connection.data_received(video.tx.protect_rtcp(rtcp), 1)
    assert video.queued == 1
    video.send(_vp8(401, 6000, b"\x31" + bytes(9), marker=True, start=True))
    assert video.queued == 1 and len(video.frames) == 2 and lean.packets == 2


async def test_packets_before_registration_are_replayed() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        receiver = pc.addTransceiver("audio", direction="recvonly").receiver
        frames: list[EncodedFrame] = []
        adopt_receiver(receiver).sink = frames.append
        dtls = receiver.transport
        dtls._rx_srtp = Session(_policy(Policy.SSRC_ANY_INBOUND))
        dtls._tx_srtp = Session(_policy(Policy.SSRC_ANY_OUTBOUND))
        dtls._state = State.CONNECTED
        tx = Session(_policy(Policy.SSRC_ANY_OUTBOUND))
        for sequence in (1, 2):
            packet = RtpPacket(payload_type=111, sequence_number=sequence, timestamp=960 * sequence, ssrc=SSRC)
            packet.payload = os.urandom(40)
            dtls.transport._connection.data_received(tx.protect(packet.serialize()), 1)
        assert frames == []  # aiortc has not registered the receiver yet
        receiver._track = aiortc_receiver.RemoteStreamTrack(kind="audio")
        await receiver.receive(
            RTCRtpReceiveParameters(codecs=[OPUS], encodings=[RTCRtpDecodingParameters(ssrc=SSRC, payloadType=111)])
        )
        assert [f.pts for f in frames] == [960, 1920] and all(f.mime_type == "audio/opus" for f in frames)
        dtls._state = State.CLOSED
    finally:
        await pc.close()


async def test_a_disabled_receiver_drops_packets(video: Receiving) -> None:
    video.receiver._enabled = False
    video.send(_vp8(400, 3000, KEYFRAME, marker=True, start=True))
    assert video.frames == []


def test_check_refuses_a_changed_receive_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    async def recv_next(self: Any) -> None:
        await self.transport._recv()

    monkeypatch.setattr(RTCDtlsTransport, "_recv_next", recv_next)
    with pytest.raises(AiortcCompatibilityError, match="recv_next no longer uses _rx_srtp"):
        check_aiortc()


def test_check_refuses_changed_receiver_statistics(monkeypatch: pytest.MonkeyPatch) -> None:
    def init(self: Any, clockrate: int) -> None:
        self.received = 0

    monkeypatch.setattr(aiortc_receiver.StreamStatistics, "__init__", init)
    with pytest.raises(AiortcCompatibilityError, match="base_seq"):
        check_aiortc()


# --- socket reads ----------------------------------------------------------------------------------------------------


async def test_fast_reads_batch_media_and_leave_stun_to_aioice() -> None:
    loop = asyncio.get_running_loop()
    connection = aioice.Connection(ice_controlling=True)
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: aioice.ice.StunProtocol(connection), local_addr=("127.0.0.1", 0)
    )
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        port = transport.get_extra_info("sockname")[1]
        protocol.local_candidate = aioice.Candidate("1", 1, "udp", 1, "127.0.0.1", port, "host")
        requests: list[Any] = []
        connection.request_received = lambda message, addr, protocol: requests.append(message)  # type: ignore[method-assign]
        assert fast_reads(protocol) == 1
        reader, _ = loop._selector.get_key(transport.get_extra_info("socket").fileno()).data  # type: ignore[attr-defined]
        assert reader._callback.__qualname__ == "fast_reads.<locals>.read_ready"
        media = [bytes([0x80, 96]) + bytes([i]) * 20 for i in range(40)]
        for datagram in media:
            sender.sendto(datagram, ("127.0.0.1", port))
        stun = aioice.stun.Message(aioice.stun.Method.BINDING, aioice.stun.Class.REQUEST)
        sender.sendto(bytes(stun), ("127.0.0.1", port))
        for _ in range(200):
            if connection._queue.qsize() == len(media) and requests:
                break
            await asyncio.sleep(0.01)
        assert [connection._queue.get_nowait() for _ in media] == [(d, 1) for d in media]  # in order, none lost
        assert [r.transaction_id for r in requests] == [stun.transaction_id]  # STUN still parsed by aioice
    finally:
        sender.close()
        transport.close()
        await connection.close()
