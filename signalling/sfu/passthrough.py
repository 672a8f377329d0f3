"""Forwarding encoded media through aiortc without decoding it.

How a published track flows::

    publisher --RTP--> RTCRtpReceiver: SRTP, NACK/RTX, jitter buffer, depacketiser
                         | put((codec, JitterFrame))       (complete VP8/H264 frame, one Opus packet)
                         v
                       PassthroughQueue (stands in for the decoder queue)
                         | EncodedFrame, on the event-loop thread
                         v
                       EncodedTrack (one per published track) --fan-out--> RelayTrack (one per subscriber)
                                                                             | recv() -> av.Packet
                                                                             v
                       RTCRtpSender._next_encoded_frame: encoder.pack(packet) --RTP--> subscriber

aiortc's receiver hands every reassembled frame to a decoder thread through a
``queue.Queue``.  For the SFU's receivers that queue is a
:class:`PassthroughQueue`: its ``put`` turns the frame into an
:class:`EncodedFrame` and forwards it; the decoder thread only ever receives
the stop sentinel, so no decoder is ever constructed.  On the way out,
aiortc's sender already accepts ``av.Packet`` from a track (the path
``MediaPlayer(decode=False)`` uses) and only repacketises it: VP8 per RFC
7741, H.264 per RFC 6184 (packetization-mode 1), Opus per RFC 7587.

Back-pressure: each subscriber has its own bounded queue (:class:`RelayTrack`).
A subscriber that falls behind loses frames, never the publisher or the
other subscribers: audio drops its oldest packets, video drops the whole
backlog and waits for the next keyframe (a video frame is useless without
its references), asking the publisher for one.

Keyframes: a subscriber's PLI (RFC 4585 section 6.3.1) or FIR (RFC 5104
section 4.3.1) arriving at its sender, a new subscriber and a subscriber
waiting after overflow all end in :meth:`EncodedTrack.request_keyframe`,
which a :class:`KeyframeRequester` turns into at most one PLI per interval
to the publisher's media SSRC (RFC 5104 section 4.3.1.2 asks for such
restraint; the trailing request is deferred, not lost).

The aiortc patch (this module only, per instance, never global):
``adopt_receiver`` replaces one receiver's private decoder queue;
``adopt_sender`` wraps one sender's RTCP handler to observe PLI/FIR, and
that sender's transport's RTP router to deliver FIR, whose media SSRC is 0
and whose target is in the FCI (aiortc 1.16 routes feedback by media SSRC
only and so drops FIR).  Client peers in the same process are untouched.
:func:`check_aiortc` runs at import and refuses an aiortc whose internals
no longer match.
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

import aiortc
import av
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc import rtcpeerconnection as _rtcpeerconnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket

__all__ = [
    "AIORTC_SUPPORTED",
    "AiortcCompatibilityError",
    "Clock",
    "EncodedFrame",
    "EncodedTrack",
    "KeyframeRequester",
    "PassthroughQueue",
    "RelayTrack",
    "adopt_receiver",
    "adopt_sender",
    "check_aiortc",
    "is_keyframe",
]

logger = logging.getLogger(__name__)

AIORTC_SUPPORTED = ">=1.16,<1.17"
"""aiortc versions whose private internals this module was checked against."""

DEFAULT_VIDEO_QUEUE = 30
"""Frames a subscriber may lag behind on video (about 1 s at 30 fps) before it is reset to the next keyframe."""
DEFAULT_AUDIO_QUEUE = 25
"""Opus packets (20 ms each, so 0.5 s) a subscriber may lag behind before the oldest are dropped."""

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_DECODER_THREAD = "_RTCRtpReceiver__decoder_thread"


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
    """Raise :class:`AiortcCompatibilityError` unless aiortc's internals are the ones patched here.

    Checked: the version is within :data:`AIORTC_SUPPORTED`; the receiver
    creates, starts and feeds ``__decoder_queue``/``__decoder_thread``; the
    receiver can send PLI; the sender packs ``av.Packet``s and handles RTCP
    in ``_handle_rtcp_packet``; the DTLS transport routes RTCP through its
    ``_rtp_router.route_rtcp``; the msid of an m-section comes from
    ``sender._stream_id``.
    """
    problems: list[str] = []
    version = getattr(aiortc, "__version__", "0")
    if not _version_in(version, AIORTC_SUPPORTED):
        problems.append(f"aiortc {version} is outside {AIORTC_SUPPORTED}")
    problems += _missing_names(RTCRtpReceiver.__init__, _DECODER_QUEUE, _DECODER_THREAD)
    problems += _missing_names(RTCRtpReceiver.receive, _DECODER_QUEUE, _DECODER_THREAD, "decoder_worker")
    problems += _missing_names(RTCRtpReceiver._handle_rtp_packet, _DECODER_QUEUE, "put")
    problems += _missing_names(RTCRtpSender._next_encoded_frame, "pack")
    problems += _missing_names(RTCDtlsTransport.__init__, "_rtp_router")
    problems += _missing_names(RTCDtlsTransport._handle_rtcp_data, "route_rtcp", "_handle_rtcp_packet")
    problems += _missing_names(RtpRouter.__init__, "senders")
    problems += _missing_names(_rtcpeerconnection.create_media_description_for_transceiver, "_stream_id")
    if not inspect.iscoroutinefunction(getattr(RTCRtpReceiver, "_send_rtcp_pli", None)):
        problems.append("RTCRtpReceiver._send_rtcp_pli is gone")
    if not inspect.iscoroutinefunction(getattr(RTCRtpSender, "_handle_rtcp_packet", None)):
        problems.append("RTCRtpSender._handle_rtcp_packet is gone")
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
                codec.mimeType, codec.clockRate, jitter_frame.data, jitter_frame.timestamp
            )
            self.frames += 1
            self.bytes += len(frame.data)
            if self.sink is not None:
                self.sink(frame)
        except Exception:
            # Never let a forwarding bug escape into aiortc's DTLS receive loop.
            logger.exception("forwarding an encoded frame failed")


def adopt_receiver(receiver: RTCRtpReceiver) -> PassthroughQueue:
    """Make ``receiver`` forward encoded frames instead of decoding them.

    Must run before the receiver starts (``receive()``, called by the peer
    connection once negotiation makes it receive); the returned queue's
    ``sink`` decides where frames go.
    """
    if getattr(receiver, _DECODER_THREAD) is not None:
        raise RuntimeError("the receiver has already started decoding")
    passthrough = PassthroughQueue()
    setattr(receiver, _DECODER_QUEUE, passthrough)
    return passthrough


def adopt_sender(sender: RTCRtpSender, on_keyframe_request: Callable[[], None]) -> None:
    """Call ``on_keyframe_request`` whenever the remote receiver sends PLI or FIR for ``sender``."""
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
    """One complete encoded frame: ``pts`` counts ``time_base`` units (the RTP clock) from the track's start."""

    data: bytes
    pts: int
    time_base: Fraction
    keyframe: bool
    mime_type: str

    @classmethod
    def from_receiver(cls, mime_type: str, clock_rate: int, data: bytes, pts: int) -> EncodedFrame:
        mime = mime_type.lower()
        return cls(data, pts, Fraction(1, clock_rate), is_keyframe(mime, data), mime)

    def to_packet(self, pts: int | None = None) -> av.Packet[Any]:
        packet = av.Packet(self.data)
        packet.pts = self.pts if pts is None else pts
        packet.time_base = self.time_base
        packet.is_keyframe = self.keyframe
        return packet


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
    """

    def __init__(self, send: Callable[[], None], *, min_interval: float = 0.5, clock: Clock | None = None) -> None:
        self._send = send
        self._min_interval = min_interval
        self._clock = clock or LoopClock()
        self._last: float | None = None
        self._timer: Cancellable | None = None
        self._closed = False
        self.requested = 0
        self.sent = 0

    def request(self) -> None:
        self.requested += 1
        if self._closed or self._timer is not None:
            return
        now = self._clock.time()
        if self._last is None or now - self._last >= self._min_interval:
            self._fire(now)
        else:
            self._timer = self._clock.call_later(self._last + self._min_interval - now, self._deferred)

    def close(self) -> None:
        self._closed = True
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
        self._rebase = True
        self._offset = 0
        self._last_pts: int | None = None
        self.frames_forwarded = 0
        self.frames_dropped = 0

    @property
    def source(self) -> EncodedTrack | None:
        return self._source

    def attach(self, source: EncodedTrack) -> None:
        """Start relaying ``source`` (from its next keyframe for video); asks it for a keyframe."""
        if source.kind != self.kind:
            raise ValueError(f"cannot relay {source.kind} on a {self.kind} relay")
        if source is self._source:
            return
        self.detach()
        self._source = source
        self._source_ended = False
        self._rebase = True
        source._subscribe(self)
        self.require_keyframe()

    def detach(self) -> None:
        if self._source is not None:
            self._source._unsubscribe(self)
            self._source = None
        self._queue.clear()

    def require_keyframe(self) -> None:
        """Drop the backlog and restart from the next keyframe (video), asking the source for one now."""
        if self.kind != "video":
            return
        self.frames_dropped += len(self._queue)
        self._queue.clear()
        self._need_keyframe = True
        self.request_keyframe()

    def request_keyframe(self) -> None:
        if self._source is not None:
            self._source.request_keyframe()

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
    bound.  ``recv()`` (for a consumer that wants the track itself, e.g. a
    recorder) reads through a private relay created on first use.
    ``request_keyframe`` reaches the publisher through the callable given at
    construction (normally a :class:`KeyframeRequester`).
    """

    def __init__(self, kind: str, *, request_keyframe: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self._request_keyframe = request_keyframe
        self._relays: list[RelayTrack] = []
        self._sinks: list[Callable[[EncodedFrame], None]] = []
        self._tap: RelayTrack | None = None
        self.frames = 0
        self.bytes = 0
        self.keyframes = 0
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

    def request_keyframe(self) -> None:
        if self.kind == "video" and self._request_keyframe is not None and self.readyState == "live":
            self._request_keyframe()

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
