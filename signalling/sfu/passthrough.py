"""Forwarding encoded media through aiortc without decoding it.

How a published track flows::

    publisher --RTP--> LeanReceiver (signalling.sfu.receive, in aioice's datagram callback): SRTP, header fields,
                         RTCP statistics, NACK/RTX, depacketiser, frame assembly (signalling.sfu.jitter)
                         | put((codec, JitterFrame))       (complete VP8/H264 frame, one Opus packet)
                         v
                       PassthroughQueue (stands in for the decoder queue)
                         | EncodedFrame, on the event-loop thread
                         v
                       EncodedTrack (one per published track): packetises each frame once
                         | --fan-out--> RelayTrack (one per subscriber): keyframe gating, timestamp rebasing
                         v
                       RtpForwarder (one per subscriber sender): RTP header, SRTP, sendto --> subscriber

aiortc's receiver hands every reassembled frame to a decoder thread through a
``queue.Queue``.  For the SFU's receivers that queue is a
:class:`PassthroughQueue`: its ``put`` turns the frame into an
:class:`EncodedFrame` and forwards it; the decoder thread only ever receives
the stop sentinel, so no decoder is ever constructed.  The receiver's jitter
buffer is replaced by one that releases a video frame at its marker packet
and audio at once (:mod:`signalling.sfu.jitter`), and its bitrate estimator
is switched off (REMB once per receiver report instead).  On the way out,
each SFU sender runs an :class:`~signalling.sfu.forwarder.RtpForwarder`
instead of aiortc's RTP loop: the publication packetises a frame once (VP8
per RFC 7741, H.264 per RFC 6184 packetization-mode 1, Opus per RFC 7587,
:mod:`signalling.sfu.packetiser`) and every subscriber's forwarder sends the
same payloads under its own header, synchronously, as the frame arrives.
Before a sender has started (DTLS not yet up), its relay queues the frames
(a new subscriber's keyframe) and flushes them when it starts.  A relay
without a forwarder (a recorder's) is read with ``recv()`` as an
``av.Packet`` track.

Back-pressure: each subscriber has its own bound.  A subscriber that falls
behind loses frames, never the publisher or the other subscribers: audio
drops its oldest packets, video drops the whole backlog (or, once its
sender runs, a frame its socket cannot take) and waits for the next keyframe
(a video frame is useless without its references), asking the publisher
for one.  Each ICE connection's receive queue is bounded too
(:func:`bound_receive_queue`), so an overloaded event loop loses packets
instead of queueing seconds of them.

Keyframes: a subscriber's PLI (RFC 4585 section 6.3.1) or FIR (RFC 5104
section 4.3.1) arriving at its sender, a new subscriber and a subscriber
waiting after overflow all end in :meth:`EncodedTrack.request_keyframe`,
which a :class:`KeyframeRequester` turns into at most one PLI per interval
to the publisher's media SSRC (RFC 5104 section 4.3.1.2 asks for such
restraint; the trailing request is deferred, not lost).  A new subscriber
waiting for its first keyframe asks *urgently*: its request only keeps a
short interval (0.1 s) from the previous one.

The aiortc patch (this package only, per instance, never global):
``adopt_receiver`` replaces one receiver's private decoder queue, jitter
buffer and bitrate estimator, wraps its ``_send_rtcp``, ``receive`` and
``stop``, and takes its RTP packets off aiortc's receive loop
(:class:`~signalling.sfu.receive.ReceivePath` patches ``data_received`` of
the transport's aioice connection); ``adopt_sender``
wraps one sender's RTCP handler to observe PLI/FIR, that sender's transport's
RTP router to deliver FIR, whose media SSRC is 0 and whose target is in the
FCI (aiortc 1.16 routes feedback by media SSRC only and so drops FIR), and
replaces the sender's ``_run_rtp`` and ``_retransmit`` with its forwarder's;
``bound_receive_queue`` replaces one aioice connection's receive queue.
Client peers in the same process are untouched.  :func:`check_aiortc` runs
at import and refuses an aiortc or aioice whose internals no longer match.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from struct import unpack_from
from typing import Any, Protocol

import aioice
import aiortc
import av
from aioice.ice import Connection as _IceConnection
from aioice.ice import StunProtocol as _IceStunProtocol
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc import jitterbuffer as _jitterbuffer
from aiortc import rtcpeerconnection as _rtcpeerconnection
from aiortc.codecs.h264 import H264Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket, RtcpRrPacket, pack_remb_fci

from .forwarder import RtpForwarder, ntp_now
from .jitter import AudioPacketBuffer, VideoFrameBuffer
from .packetiser import Packetiser, packetiser_for
from .receive import LeanReceiver, ReceivePath

__all__ = [
    "AIOICE_SUPPORTED",
    "AIORTC_SUPPORTED",
    "DEFAULT_ICE_QUEUE",
    "DEFAULT_REMB_BITRATE",
    "AiortcCompatibilityError",
    "Clock",
    "DroppingQueue",
    "EncodedFrame",
    "EncodedTrack",
    "KeyframeRequester",
    "PassthroughQueue",
    "RelayTrack",
    "adopt_receiver",
    "adopt_sender",
    "bound_receive_queue",
    "check_aiortc",
    "is_keyframe",
    "lean_receiver",
    "video_frame_buffer",
]

logger = logging.getLogger(__name__)

AIORTC_SUPPORTED = ">=1.16,<1.17"
"""aiortc versions whose private internals this module was checked against."""
AIOICE_SUPPORTED = ">=0.10.2,<0.14"
"""aioice versions whose ``Connection`` receive queue :func:`bound_receive_queue` was checked against."""

DEFAULT_VIDEO_QUEUE = 30
"""Frames a subscriber may lag behind on video (about 1 s at 30 fps) before it is reset to the next keyframe."""
DEFAULT_AUDIO_QUEUE = 25
"""Opus packets (20 ms each, so 0.5 s) a subscriber may lag behind before the oldest are dropped."""
DEFAULT_ICE_QUEUE = 128
"""Datagrams one ICE connection may hold unread before the oldest are dropped (:func:`bound_receive_queue`)."""
DEFAULT_REMB_BITRATE = 2_500_000
"""Bit/s announced to video publishers by REMB, about once per second (:func:`adopt_receiver`)."""

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_DECODER_THREAD = "_RTCRtpReceiver__decoder_thread"
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_BITRATE_ESTIMATOR = "_RTCRtpReceiver__remote_bitrate_estimator"
_RTCP_SSRC = "_RTCRtpReceiver__rtcp_ssrc"
_KIND = "_RTCRtpReceiver__kind"
_LEAN_ATTRIBUTE = "_cloudwindow_lean_receiver"
_RECEIVER_CODECS = "_RTCRtpReceiver__codecs"
_RECEIVER_RTX_SSRC = "_RTCRtpReceiver__rtx_ssrc"
_RECEIVER_STREAMS = "_RTCRtpReceiver__remote_streams"
_RECEIVER_ACTIVE_SSRC = "_RTCRtpReceiver__active_ssrc"
_RECEIVER_NACK = "_RTCRtpReceiver__nack_generator"
_DTLS_RX_BYTES = "_RTCDtlsTransport__rx_bytes"
_DTLS_RX_PACKETS = "_RTCDtlsTransport__rx_packets"
_PC_CONNECT = vars(_rtcpeerconnection.RTCPeerConnection).get("_RTCPeerConnection__connect")
_SENDER_STATE = (
    "_RTCRtpSender__rtp_started",
    "_RTCRtpSender__rtp_exited",
    "_RTCRtpSender__rtp_header_extensions_map",
    "_RTCRtpSender__mid",
    "_RTCRtpSender__rtx_payload_type",
    "_RTCRtpSender__rtx_sequence_number",
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__octet_count",
    "_RTCRtpSender__packet_count",
)


# --- the aiortc patch ------------------------------------------------------------------------------------------------


class AiortcCompatibilityError(ImportError):
    """The installed aiortc does not have the internals the passthrough relies on."""


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != part:
            break
    return tuple(parts)


def _version_in(version: str, spec: str) -> bool:
    current = _version_tuple(version)
    for clause in spec.split(","):
        clause = clause.strip()
        op = clause[:2] if clause[:2] in (">=", "<=", "==") else clause[:1]
        bound = _version_tuple(clause[len(op) :])
        checks = {
            ">=": current >= bound,
            "<=": current <= bound,
            "==": current == bound,
            ">": current > bound,
            "<": current < bound,
        }
        if not checks[op]:
            return False
    return True


def _missing_names(func: Any, *names: str) -> list[str]:
    code = getattr(func, "__code__", None)
    have = set(code.co_names) if code is not None else set()
    return [f"{getattr(func, '__qualname__', func)} no longer uses {name}" for name in names if name not in have]


def check_aiortc() -> None:
    """Raise :class:`AiortcCompatibilityError` unless aiortc's and aioice's internals are the ones patched here.

    Checked: the versions are within :data:`AIORTC_SUPPORTED` and
    :data:`AIOICE_SUPPORTED`; the receiver creates, starts and feeds
    ``__decoder_queue``/``__decoder_thread``, assembles frames with
    ``__jitter_buffer.add``, feeds ``__remote_bitrate_estimator`` only when it
    is set, and sends RTCP through ``_send_rtcp``; aiortc's ``JitterBuffer``
    has the ring the video buffer extends; the receiver can send PLI; the
    sender starts ``_run_rtp`` from ``send()``, answers NACKs with
    ``_retransmit``, keeps the state :class:`~signalling.sfu.forwarder.RtpForwarder`
    updates (attributes set in ``__init__``) and handles
    RTCP in ``_handle_rtcp_packet``; the DTLS transport protects with
    ``_tx_srtp`` and routes RTCP through its ``_rtp_router.route_rtcp``; the
    ICE connection queues datagrams on ``_queue`` and sends on ``_nominated``
    pairs; aiortc's H.264 packetiser is there; the msid of an m-section comes
    from ``sender._stream_id``.
    """
    problems: list[str] = []
    version = getattr(aiortc, "__version__", "0")
    if not _version_in(version, AIORTC_SUPPORTED):
        problems.append(f"aiortc {version} is outside {AIORTC_SUPPORTED}")
    ice_version = getattr(aioice, "__version__", "0")
    if not _version_in(ice_version, AIOICE_SUPPORTED):
        problems.append(f"aioice {ice_version} is outside {AIOICE_SUPPORTED}")
    problems += _missing_names(RTCRtpReceiver.__init__, _DECODER_QUEUE, _DECODER_THREAD, _JITTER_BUFFER)
    problems += _missing_names(RTCRtpReceiver.__init__, _BITRATE_ESTIMATOR, _RTCP_SSRC, _KIND)
    problems += _missing_names(RTCRtpReceiver.receive, _DECODER_QUEUE, _DECODER_THREAD, "decoder_worker")
    problems += _missing_names(
        RTCRtpReceiver._handle_rtp_packet, _DECODER_QUEUE, "put", _JITTER_BUFFER, "add", _BITRATE_ESTIMATOR
    )
    problems += _missing_names(RTCRtpReceiver._run_rtcp, "_send_rtcp", "RtcpRrPacket")
    problems += _missing_names(
        _jitterbuffer.JitterBuffer.add, "_origin", "_packets", "_capacity", "_remove_frame", "smart_remove"
    )
    problems += _missing_names(_jitterbuffer.JitterBuffer.remove, "_origin", "_packets")
    problems += _missing_names(RTCRtpSender._next_encoded_frame, "pack")
    problems += _missing_names(RTCRtpSender.send, "_run_rtp", "_RTCRtpSender__rtx_payload_type")
    problems += _missing_names(RTCRtpSender._handle_rtcp_packet, "_retransmit")
    problems += _missing_names(RTCRtpSender._run_rtcp, "_RTCRtpSender__ntp_timestamp", "_RTCRtpSender__packet_count")
    problems += _missing_names(RTCDtlsTransport.__init__, "_rtp_router")
    problems += _missing_names(RTCDtlsTransport._send_rtp, "_tx_srtp", "protect", "_state", "_send")
    problems += _missing_names(RTCDtlsTransport._handle_rtcp_data, "route_rtcp", "_handle_rtcp_packet")
    problems += _missing_names(RtpRouter.__init__, "senders")
    problems += _missing_names(_IceConnection.__init__, "_queue", "_nominated")
    problems += _missing_names(_IceConnection.data_received, "_queue", "put_nowait")
    problems += _missing_names(_IceConnection.recvfrom, "_queue", "get")
    problems += _missing_names(_IceConnection.sendto, "_nominated", "protocol", "send_data", "remote_addr")
    problems += _missing_names(_rtcpeerconnection.create_media_description_for_transceiver, "_stream_id")
    # The lean receive path (signalling.sfu.receive).
    problems += _missing_names(
        RTCRtpReceiver.__init__,
        _RECEIVER_CODECS,
        _RECEIVER_RTX_SSRC,
        _RECEIVER_STREAMS,
        _RECEIVER_ACTIVE_SSRC,
        _RECEIVER_NACK,
    )
    problems += _missing_names(
        RTCRtpReceiver._handle_rtp_packet,
        "_enabled",
        _RECEIVER_ACTIVE_SSRC,
        _RECEIVER_STREAMS,
        "StreamStatistics",
        "unwrap_rtx",
        _RECEIVER_NACK,
        "_send_rtcp_nack",
        "depayload",
        "_send_rtcp_pli",
    )
    problems += _missing_names(RTCRtpReceiver.receive, _RECEIVER_CODECS, _RECEIVER_RTX_SSRC, "_register_rtp_receiver")
    problems += _missing_names(RTCRtpReceiver._run_rtcp, _RECEIVER_STREAMS, "fraction_lost", "packets_lost", "jitter")
    problems += _missing_names(RTCRtpReceiver.getStats, _RECEIVER_STREAMS, "packets_received", "packets_lost")
    problems += _missing_names(RTCRtpReceiver.getSynchronizationSources, _RECEIVER_ACTIVE_SSRC)
    problems += _missing_names(
        StreamStatistics.__init__,
        "base_seq",
        "max_seq",
        "cycles",
        "packets_received",
        "_clockrate",
        "_jitter_q4",
        "_last_arrival",
        "_last_timestamp",
    )
    problems += _missing_names(StreamStatistics.add, "time", "_clockrate", "_jitter_q4", "cycles")
    problems += _missing_names(NackGenerator.add, "max_seq", "missing", "truncate")
    problems += _missing_names(RTCDtlsTransport.__init__, "_rx_srtp", "_state", _DTLS_RX_BYTES, _DTLS_RX_PACKETS)
    problems += _missing_names(
        RTCDtlsTransport._recv_next, "_rx_srtp", "unprotect", "_handle_rtp_data", _DTLS_RX_BYTES, _DTLS_RX_PACKETS
    )
    problems += _missing_names(RTCDtlsTransport._handle_rtp_data, "route_rtp", "_handle_rtp_packet")
    problems += _missing_names(RtpRouter.__init__, "ssrc_table", "payload_type_table")
    problems += _missing_names(RtpRouter.route_rtp, "ssrc_table", "payload_type_table", "ssrc", "payload_type")
    problems += _missing_names(_IceStunProtocol.datagram_received, "data_received")
    problems += _missing_names(RTCIceTransport.__init__, "_connection")
    problems += _missing_names(RTCRtpTransceiver.stop, "stop")
    problems += _missing_names(_PC_CONNECT, "receive")
    for name in ("_packetize", "_split_bitstream"):
        if not callable(getattr(H264Encoder, name, None)):
            problems.append(f"aiortc's H264Encoder.{name} is gone")
    if not inspect.iscoroutinefunction(getattr(RTCRtpReceiver, "_send_rtcp_pli", None)):
        problems.append("RTCRtpReceiver._send_rtcp_pli is gone")
    if not inspect.iscoroutinefunction(getattr(RTCRtpSender, "_handle_rtcp_packet", None)):
        problems.append("RTCRtpSender._handle_rtcp_packet is gone")
    for name in ("_run_rtp", "_retransmit"):
        if not inspect.iscoroutinefunction(getattr(RTCRtpSender, name, None)):
            problems.append(f"RTCRtpSender.{name} is gone")
    problems += _missing_names(RTCRtpSender.__init__, *_SENDER_STATE)
    if problems:
        raise AiortcCompatibilityError(
            "signalling.sfu.passthrough patches aiortc internals for " + AIORTC_SUPPORTED + ": " + "; ".join(problems)
        )


check_aiortc()


class PassthroughQueue(queue.Queue[Any]):
    """Takes the place of an ``RTCRtpReceiver``'s decoder queue.

    ``put((codec, frame))`` is called by aiortc on the event-loop thread for
    each reassembled frame; it becomes an :class:`EncodedFrame` for ``sink``
    (dropped while ``sink`` is ``None``).  Only the ``None`` stop sentinel is
    really queued, for aiortc's decoder thread, which then ends the
    receiver's ``RemoteStreamTrack`` as usual.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sink: Callable[[EncodedFrame], None] | None = None
        self.frames = 0
        self.bytes = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(item, block, timeout)
            return
        try:
            codec, jitter_frame = item
            frame = EncodedFrame.from_receiver(
                codec.mimeType, codec.clockRate, jitter_frame.data, jitter_frame.timestamp, self.frames
            )
            self.frames += 1
            self.bytes += len(frame.data)
            if self.sink is not None:
                self.sink(frame)
        except Exception:
            # Never let a forwarding bug escape into aiortc's DTLS receive loop.
            logger.exception("forwarding an encoded frame failed")


def adopt_receiver(
    receiver: RTCRtpReceiver, *, remb_bitrate: int | None = DEFAULT_REMB_BITRATE, lean: bool = True
) -> PassthroughQueue:
    """Make ``receiver`` forward encoded frames instead of decoding them.

    Must run before the receiver starts (``receive()``, called by the peer
    connection once negotiation makes it receive); the returned queue's
    ``sink`` decides where frames go.  Also, for this receiver only:

    * frames are assembled by :class:`~signalling.sfu.jitter.VideoFrameBuffer`
      (video, released at the marker bit) or
      :class:`~signalling.sfu.jitter.AudioPacketBuffer` (audio, no prefetch);
    * aiortc's ``RemoteBitrateEstimator`` is switched off: it ran on every
      video packet and sent REMB (RFC draft-alvestrand-rmcat-remb) on most of
      them, while the SFU adapts nothing to it.  Instead, with each receiver
      report (every 0.5-1.5 s) a video receiver sends one REMB announcing
      ``remb_bitrate`` bit/s (``None``: no REMB at all), so that a browser
      publisher, whose congestion control caps its rate at the REMB value,
      may ramp up to it on loss-based estimation alone;
    * with ``lean`` (the default), its RTP packets skip aiortc's receive
      loop and ``_handle_rtp_packet``: :class:`~signalling.sfu.receive.LeanReceiver`
      does the same work on the header fields, in aioice's datagram callback
      (installed on the receiver's DTLS transport when it starts).
    """
    if getattr(receiver, _DECODER_THREAD) is not None:
        raise RuntimeError("the receiver has already started decoding")
    passthrough = PassthroughQueue()
    setattr(receiver, _DECODER_QUEUE, passthrough)
    video = getattr(receiver, _KIND) == "video"
    frame_buffer = VideoFrameBuffer() if video else AudioPacketBuffer()
    setattr(receiver, _JITTER_BUFFER, frame_buffer)
    setattr(receiver, _BITRATE_ESTIMATOR, None)
    if video and remb_bitrate is not None:
        _send_remb_with_reports(receiver, remb_bitrate)
    if lean:
        _receive_lean(receiver, LeanReceiver(receiver, frame_buffer, passthrough.put))
    return passthrough


def lean_receiver(receiver: RTCRtpReceiver) -> LeanReceiver | None:
    """The :class:`~signalling.sfu.receive.LeanReceiver` of an adopted receiver (``None``: aiortc's path)."""
    lean = receiver.__dict__.get(_LEAN_ATTRIBUTE)
    return lean if isinstance(lean, LeanReceiver) else None


def video_frame_buffer(receiver: RTCRtpReceiver) -> VideoFrameBuffer | None:
    """The :class:`~signalling.sfu.jitter.VideoFrameBuffer` of an adopted video receiver (``None``: not one)."""
    buffer = receiver.__dict__.get(_JITTER_BUFFER)
    return buffer if isinstance(buffer, VideoFrameBuffer) else None


def _receive_lean(receiver: RTCRtpReceiver, lean: LeanReceiver) -> None:
    # The receive path is installed now, before the transport can receive anything, and again on the transport the
    # receiver has when it starts: with a BUNDLE answer aiortc may have replaced the one it was made with
    # (``setTransport``).  Packets that arrive before aiortc registers the receiver are held and replayed after.
    original_receive = receiver.receive
    original_stop = receiver.stop
    paths = [ReceivePath.of(receiver.transport)]
    paths[0].add(lean)

    async def receive(parameters: Any) -> None:
        path = ReceivePath.of(receiver.transport)
        if path is not paths[0]:
            paths[0].remove(lean)
            paths[0] = path
            path.add(lean)
        await original_receive(parameters)
        path.replay()
        path.speed_up_datagrams()

    async def stop() -> None:
        paths[0].remove(lean)
        await original_stop()

    setattr(receiver, _LEAN_ATTRIBUTE, lean)
    setattr(receiver, "receive", receive)  # noqa: B010 - instance patch, see module docstring
    setattr(receiver, "stop", stop)  # noqa: B010


def _send_remb_with_reports(receiver: RTCRtpReceiver, bitrate: int) -> None:
    original = receiver._send_rtcp

    async def send_rtcp(packet: Any) -> None:
        await original(packet)
        if isinstance(packet, RtcpRrPacket) and packet.reports:
            ssrcs = [report.ssrc for report in packet.reports]
            remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=packet.ssrc, media_ssrc=0, fci=pack_remb_fci(bitrate, ssrcs))
            await original(remb)

    setattr(receiver, "_send_rtcp", send_rtcp)  # noqa: B010 - instance patch, see module docstring


def adopt_sender(sender: RTCRtpSender, on_keyframe_request: Callable[[], None]) -> RtpForwarder | None:
    """Call ``on_keyframe_request`` whenever the remote receiver sends PLI or FIR for ``sender``.

    When the sender's track is a :class:`RelayTrack`, the sender also gets an
    :class:`~signalling.sfu.forwarder.RtpForwarder` in place of aiortc's RTP
    loop (returned; must happen before the sender starts).
    """
    original = sender._handle_rtcp_packet

    async def handle_rtcp_packet(packet: Any) -> None:
        await original(packet)
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            try:
                on_keyframe_request()
            except Exception:
                logger.exception("keyframe request handler failed")

    setattr(sender, "_handle_rtcp_packet", handle_rtcp_packet)  # noqa: B010 - instance patch, see module docstring
    _route_fir(sender.transport)
    track = sender.track
    if not isinstance(track, RelayTrack):
        return None
    forwarder = RtpForwarder(sender, track)
    forwarder.install()
    return forwarder


class DroppingQueue(asyncio.Queue[Any]):
    """An ``asyncio.Queue`` that, when full, drops its oldest item to make room (``dropped`` counts them).

    The end-of-connection sentinel ``None`` is never dropped: putting it
    empties the queue first, and nothing is queued behind it.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.dropped = 0
        self._ended = False

    def put_nowait(self, item: Any) -> None:
        if self._ended:
            return
        if item is None:
            self._ended = True
            while not self.empty():
                self.get_nowait()
        elif self.full():
            self.get_nowait()
            self.dropped += 1
        super().put_nowait(item)


def bound_receive_queue(connection: _IceConnection, maxsize: int = DEFAULT_ICE_QUEUE) -> DroppingQueue:
    """Bound an aioice connection's queue of received datagrams, dropping the oldest beyond ``maxsize``.

    aioice queues every datagram on an unbounded ``asyncio.Queue`` until the
    DTLS transport reads it; when the event loop falls behind, the backlog (and
    the latency) grows without limit instead of the kernel dropping packets.
    Bounded, overload becomes loss, which RTCP, NACK and PLI handle.  Must run
    before the connection receives data; running it again returns the same
    queue.
    """
    current = connection._queue
    if isinstance(current, DroppingQueue):
        return current
    if not current.empty():
        raise RuntimeError("the ICE connection has already received data")
    bounded = DroppingQueue(maxsize)
    connection._queue = bounded
    return bounded


def _route_fir(transport: RTCDtlsTransport) -> None:
    router: RtpRouter = transport._rtp_router
    if getattr(router, "_cloudwindow_fir", False):
        return
    original = router.route_rtcp

    def route_rtcp(packet: Any) -> set[Any]:
        recipients = original(packet)
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_FIR:
            # FCI entries (RFC 5104 section 4.3.1.1): SSRC, sequence number, 3 reserved bytes.
            for offset in range(0, len(packet.fci) - 7, 8):
                sender = router.senders.get(unpack_from("!I", packet.fci, offset)[0])
                if sender is not None:
                    recipients.add(sender)
        return recipients

    setattr(router, "route_rtcp", route_rtcp)  # noqa: B010
    setattr(router, "_cloudwindow_fir", True)  # noqa: B010


# --- encoded frames --------------------------------------------------------------------------------------------------


def _vp8_is_keyframe(data: bytes) -> bool:
    # RFC 6386 section 9.1: P bit 0 in the frame tag, then the start code 9d 01 2a.
    return len(data) >= 10 and not data[0] & 0x01 and data[3:6] == b"\x9d\x01\x2a"


def _h264_is_keyframe(data: bytes) -> bool:
    # Annex B stream (aiortc's depacketiser writes start codes); IDR slice = nal_unit_type 5.
    index = data.find(b"\x00\x00\x01")
    while 0 <= index < len(data) - 3:
        if data[index + 3] & 0x1F == 5:
            return True
        index = data.find(b"\x00\x00\x01", index + 3)
    return False


def is_keyframe(mime_type: str, data: bytes) -> bool:
    """Whether a frame decodes on its own (audio packets always do)."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return _vp8_is_keyframe(data)
    if mime == "video/h264":
        return _h264_is_keyframe(data)
    return not mime.startswith("video/")


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One complete encoded frame: ``pts`` counts ``time_base`` units (the RTP clock) from the track's start.

    ``sequence`` numbers the frames of one receiver from 0; the VP8 picture id
    sent to subscribers is derived from it (:mod:`signalling.sfu.packetiser`).
    """

    data: bytes
    pts: int
    time_base: Fraction
    keyframe: bool
    mime_type: str
    sequence: int = 0

    @classmethod
    def from_receiver(cls, mime_type: str, clock_rate: int, data: bytes, pts: int, sequence: int = 0) -> EncodedFrame:
        mime = mime_type.lower()
        return cls(data, pts, _time_base(clock_rate), is_keyframe(mime, data), mime, sequence)

    def to_packet(self, pts: int | None = None) -> av.Packet[Any]:
        packet = av.Packet(self.data)
        packet.pts = self.pts if pts is None else pts
        packet.time_base = self.time_base
        packet.is_keyframe = self.keyframe
        return packet


_TIME_BASES: dict[int, Fraction] = {}


def _time_base(clock_rate: int) -> Fraction:
    time_base = _TIME_BASES.get(clock_rate)
    if time_base is None:
        time_base = _TIME_BASES[clock_rate] = Fraction(1, clock_rate)
    return time_base


# --- keyframe requests -----------------------------------------------------------------------------------------------


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the rate limiter needs of time (the event loop in production, a fake in tests)."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable: ...


class LoopClock:
    """:class:`Clock` of the running asyncio loop."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay, callback)


class KeyframeRequester:
    """Turns keyframe requests into at most one ``send()`` per ``min_interval`` seconds.

    A request inside the interval is deferred to its end (several coalesce
    into one), so the last subscriber to ask is always served.
    :meth:`request_urgent` (a new subscriber waiting for its first frame)
    only has to keep ``urgent_interval`` from the previous request sent, so
    subscribers joining one after another each get a keyframe at once
    instead of waiting up to ``min_interval``.
    """

    def __init__(
        self,
        send: Callable[[], None],
        *,
        min_interval: float = 0.5,
        urgent_interval: float = 0.1,
        clock: Clock | None = None,
    ) -> None:
        self._send = send
        self._min_interval = min_interval
        self._urgent_interval = min(urgent_interval, min_interval)
        self._clock = clock or LoopClock()
        self._last: float | None = None
        self._timer: Cancellable | None = None
        self._timer_due = 0.0
        self._closed = False
        self.requested = 0
        self.sent = 0

    def request(self) -> None:
        self._request(self._min_interval)

    def request_urgent(self) -> None:
        self._request(self._urgent_interval)

    def _request(self, interval: float) -> None:
        self.requested += 1
        if self._closed:
            return
        now = self._clock.time()
        due = now if self._last is None else self._last + interval
        if due <= now:
            self._cancel_timer()
            self._fire(now)
            return
        if self._timer is not None:
            if self._timer_due <= due:
                return
            self._cancel_timer()
        self._timer_due = due
        self._timer = self._clock.call_later(due - now, self._deferred)

    def close(self) -> None:
        self._closed = True
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deferred(self) -> None:
        self._timer = None
        if not self._closed:
            self._fire(self._clock.time())

    def _fire(self, now: float) -> None:
        self._last = now
        self.sent += 1
        try:
            self._send()
        except Exception:
            logger.exception("sending a keyframe request failed")


# --- tracks ----------------------------------------------------------------------------------------------------------


class RelayTrack(MediaStreamTrack):
    """One subscriber's view of an :class:`EncodedTrack`: ``recv()`` returns ``av.Packet``.

    Bounded (see the module docstring).  A relay can be re-attached to
    another source of the same kind; timestamps then continue where the
    previous source left off, so the RTP stream of a reused sender stays
    monotonic.  With ``end_with_source`` the relay ends when its source
    does (recorders); without it the relay just waits for the next source
    (an SFU sender, which aiortc cannot restart once its track has ended).
    ``mime_type`` restricts it to one codec: a sender negotiated for VP8
    must never be handed H.264.

    While an :class:`~signalling.sfu.forwarder.RtpForwarder` is bound
    (:meth:`bind`, from the moment its sender starts), frames are not queued
    but handed to it as the source pushes them, with the source's shared
    packetisation; the queue then only holds frames from before the sender
    started (a new subscriber's first keyframe), which :meth:`bind` flushes.
    """

    def __init__(
        self,
        kind: str,
        *,
        max_queue: int | None = None,
        end_with_source: bool = True,
        mime_type: str | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.mime_type = mime_type.lower() if mime_type else None
        self._max_queue = max_queue or (DEFAULT_VIDEO_QUEUE if kind == "video" else DEFAULT_AUDIO_QUEUE)
        self._end_with_source = end_with_source
        self._queue: deque[EncodedFrame] = deque()
        self._wakeup = asyncio.Event()
        self._source: EncodedTrack | None = None
        self._source_ended = False
        self._need_keyframe = kind == "video"
        self._joining = kind == "video"
        self._rebase = True
        self._offset = 0
        self._last_pts: int | None = None
        self._forwarder: RtpForwarder | None = None
        self.frames_forwarded = 0
        self.frames_dropped = 0

    @property
    def source(self) -> EncodedTrack | None:
        return self._source

    @property
    def forwarder(self) -> RtpForwarder | None:
        return self._forwarder

    def attach(self, source: EncodedTrack) -> None:
        """Start relaying ``source`` (from its next keyframe for video); asks it for a keyframe at once."""
        if source.kind != self.kind:
            raise ValueError(f"cannot relay {source.kind} on a {self.kind} relay")
        if source is self._source:
            return
        self.detach()
        self._source = source
        self._source_ended = False
        self._rebase = True
        source._subscribe(self)
        self.require_keyframe(urgent=True)

    def detach(self) -> None:
        if self._source is not None:
            self._source._unsubscribe(self)
            self._source = None
        self._queue.clear()

    def require_keyframe(self, *, urgent: bool = False) -> None:
        """Drop the backlog and restart from the next keyframe (video), asking the source for one now.

        ``urgent``: the subscriber has nothing to show yet (a new
        subscription), so the request may bypass most of the rate limit
        (:meth:`KeyframeRequester.request_urgent`) until the keyframe comes.
        """
        if self.kind != "video":
            return
        self.frames_dropped += len(self._queue)
        self._queue.clear()
        self._need_keyframe = True
        self._joining = self._joining or urgent
        self.request_keyframe()

    def request_keyframe(self) -> None:
        if self._source is not None:
            self._source.request_keyframe(urgent=self._joining)

    def bind(self, forwarder: RtpForwarder) -> None:
        """Hand frames to ``forwarder`` from now on, starting with the ones queued so far."""
        self._forwarder = forwarder
        queued = list(self._queue)
        self._queue.clear()
        for frame in queued:
            if self._forwarder is not forwarder:
                break
            packetise = packetiser_for(frame.mime_type)
            self._forward(forwarder, frame, packetise(frame.data, frame.sequence), ntp_now())

    def unbind(self, forwarder: RtpForwarder) -> None:
        if self._forwarder is forwarder:
            self._forwarder = None

    def _deliver(self, frame: EncodedFrame) -> None:
        if self.readyState != "live" or (self.mime_type is not None and frame.mime_type != self.mime_type):
            self.frames_dropped += 1
            return
        if self._need_keyframe:
            if not frame.keyframe:
                self.frames_dropped += 1
                self.request_keyframe()
                return
            self._need_keyframe = False
            self._joining = False
        forwarder = self._forwarder
        if forwarder is not None and self._source is not None:
            payloads, ntp = self._source._packed(frame)
            self._forward(forwarder, frame, payloads, ntp)
            return
        if len(self._queue) >= self._max_queue:
            if self.kind == "video":
                self.frames_dropped += len(self._queue)
                self._queue.clear()
                if not frame.keyframe:
                    self.frames_dropped += 1
                    self._need_keyframe = True
                    self.request_keyframe()
                    return
            else:
                self._queue.popleft()
                self.frames_dropped += 1
        self._queue.append(frame)
        self._wakeup.set()

    def _forward(self, forwarder: RtpForwarder, frame: EncodedFrame, payloads: list[bytes], ntp: int) -> None:
        try:
            sent = forwarder.send_frame(payloads, self._map_pts(frame), ntp)
        except Exception:
            # One subscriber's failure must not reach the publisher's receive loop or the other subscribers.
            logger.exception("forwarding a frame to a subscriber failed")
            sent = False
        if sent:
            self.frames_forwarded += 1
            return
        self.frames_dropped += 1
        if self.kind == "video" and not self._need_keyframe:
            self._need_keyframe = True
            self.request_keyframe()

    def _source_stopped(self) -> None:
        self._source = None
        if self._end_with_source:
            self._source_ended = True
        else:
            self._queue.clear()
        self._wakeup.set()

    async def recv(self) -> av.Packet[Any]:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._queue:
                frame = self._queue.popleft()
                break
            if self._source_ended:
                self.stop()
                raise MediaStreamError
            self._wakeup.clear()
            await self._wakeup.wait()
        self.frames_forwarded += 1
        return frame.to_packet(self._map_pts(frame))

    def _map_pts(self, frame: EncodedFrame) -> int:
        if self._rebase:
            step = max(1, round(1 / (50 * frame.time_base)))  # 20 ms after the previous source's last frame
            start = 0 if self._last_pts is None else self._last_pts + step
            self._offset = start - frame.pts
            self._rebase = False
        pts = frame.pts + self._offset
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def stop(self) -> None:
        self.detach()
        super().stop()
        self._wakeup.set()


class EncodedTrack(MediaStreamTrack):
    """A published track as encoded frames, fanned out to any number of :class:`RelayTrack`.

    ``push`` never blocks and never queues here; each relay applies its own
    bound, or hands the frame straight to its forwarder.  A frame is
    packetised at most once, when the first forwarder needs it, and the
    NTP time read then is the one every subscriber's packets carry.
    ``recv()`` (for a consumer that wants the track itself, e.g. a
    recorder) reads through a private relay created on first use.
    ``request_keyframe`` reaches the publisher through the callables given
    at construction (normally :meth:`KeyframeRequester.request` and
    :meth:`KeyframeRequester.request_urgent`; without the urgent one, every
    request is an ordinary one).
    """

    def __init__(
        self,
        kind: str,
        *,
        request_keyframe: Callable[[], None] | None = None,
        request_keyframe_urgent: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self._request_keyframe = request_keyframe
        self._request_keyframe_urgent = request_keyframe_urgent or request_keyframe
        self._relays: list[RelayTrack] = []
        self._sinks: list[Callable[[EncodedFrame], None]] = []
        self._tap: RelayTrack | None = None
        self._packed_frame: EncodedFrame | None = None
        self._packed_value: tuple[list[bytes], int] = ([], 0)
        self._packetiser: Packetiser | None = None
        self._packetiser_mime: str | None = None
        self.frames = 0
        self.bytes = 0
        self.keyframes = 0
        self.packetised = 0
        self.mime_type: str | None = None
        #: ``False`` stops forwarding to subscribers (a host's server-side mute); sinks (recorders) still get frames.
        self.forwarding = True

    @property
    def relays(self) -> tuple[RelayTrack, ...]:
        return tuple(self._relays)

    def push(self, frame: EncodedFrame) -> None:
        if self.readyState != "live":
            return
        self.frames += 1
        self.bytes += len(frame.data)
        self.keyframes += frame.keyframe
        self.mime_type = frame.mime_type
        for relay in tuple(self._relays) if self.forwarding else ():
            relay._deliver(frame)
        for sink in tuple(self._sinks):
            try:
                sink(frame)
            except Exception:
                logger.exception("a frame sink failed; it is removed")
                self.remove_sink(sink)

    def _packed(self, frame: EncodedFrame) -> tuple[list[bytes], int]:
        """The RTP payloads of ``frame`` and the NTP time to send them with, computed once per frame."""
        if frame is self._packed_frame:
            return self._packed_value
        if self._packetiser is None or self._packetiser_mime != frame.mime_type:
            self._packetiser = packetiser_for(frame.mime_type)
            self._packetiser_mime = frame.mime_type
        self._packed_frame = frame
        self._packed_value = (self._packetiser(frame.data, frame.sequence), ntp_now())
        self.packetised += 1
        return self._packed_value

    def add_sink(self, sink: Callable[[EncodedFrame], None]) -> None:
        """Call ``sink(frame)`` for every frame pushed from now on, on the event loop, in order.

        For taps such as a recorder: ``sink`` must not block (queue the frame
        and return); it sees frames exactly as they arrive, with their own
        timestamps, before any subscriber's rebasing or dropping.  A sink that
        raises is removed.
        """
        self._sinks.append(sink)

    def remove_sink(self, sink: Callable[[EncodedFrame], None]) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def subscribe(self, *, max_queue: int | None = None) -> RelayTrack:
        """A new relay of this track that ends when the track does."""
        relay = RelayTrack(self.kind, max_queue=max_queue, end_with_source=True)
        relay.attach(self)
        return relay

    def request_keyframe(self, urgent: bool = False) -> None:
        if self.kind != "video" or self.readyState != "live":
            return
        request = self._request_keyframe_urgent if urgent else self._request_keyframe
        if request is not None:
            request()

    async def recv(self) -> av.Packet[Any]:
        if self._tap is None:
            self._tap = self.subscribe()
        return await self._tap.recv()

    def stop(self) -> None:
        if self.readyState != "live":
            return
        super().stop()
        relays, self._relays = self._relays, []
        self._sinks = []
        self._packed_frame = None
        for relay in relays:
            relay._source_stopped()

    def _subscribe(self, relay: RelayTrack) -> None:
        if self.readyState != "live":
            relay._source_stopped()
            return
        self._relays.append(relay)

    def _unsubscribe(self, relay: RelayTrack) -> None:
        if relay in self._relays:
            self._relays.remove(relay)
