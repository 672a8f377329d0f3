"""The SFU's RTP receive path: one received packet to the frame buffer, without aiortc's per-packet loop.

aiortc receives a datagram like this: aioice's ``Connection.data_received``
puts it on an ``asyncio.Queue``; the DTLS transport's receive task wakes up,
reads the ``datetime`` clock (``clock.current_ms()``), unprotects it, parses a
whole ``RtpPacket`` (header extensions included), routes it, and the
receiver's ``_handle_rtp_packet`` reads the ``datetime`` clock again
(``getSynchronizationSources``), feeds its RTCP statistics and NACK
generator, depacketises and hands the packet to its jitter buffer.  For a
receiver adopted by the SFU nothing of that is needed per packet but the
SRTP, a few header fields, the statistics, the gap check and the frame
buffer.  :class:`ReceivePath` (one per DTLS transport) and
:class:`LeanReceiver` (one per adopted receiver) do just that:

* the datagram is taken in aioice's ``data_received`` callback itself (an
  instance patch on the transport's ICE connection), synchronously: no
  queue, no task wake-up.  Only SRTP packets (RFC 7983 first byte 128-191)
  that are not RTCP (RFC 5761 section 4), once the DTLS transport is
  connected, and whose receiver (routed on the clear-text SSRC and payload
  type with aiortc's own ``RtpRouter``, the same rules and table) is a
  :class:`LeanReceiver`, take this path.  Everything else (DTLS, RTCP, a
  packet for a receiver that is not adopted, anything before the handshake)
  goes on aioice's queue to aiortc's receive loop as before, so RTCP
  (sender reports; PLI, FIR, NACK and receiver reports for the SFU's
  senders) is handled by aiortc unchanged.  Until this path has taken a
  first packet, RTP queues behind whatever that queue holds, so a packet
  never overtakes an earlier one (the first packets of a keyframe queued
  while DTLS was finishing, say); aiortc's ``_handle_rtp_packet`` then
  feeds the same frame buffer.  Once an RTP packet has found the queue
  empty, RTP for a lean receiver is always taken, whatever the queue
  holds: no RTP of a lean receiver can be in the queue
  any more (only RTCP, DTLS and other receivers' packets, whose order
  relative to it does not matter), and under load, when aiortc's loop lags
  behind the RTCP it has to read, RTP stays on this path instead of
  following the RTCP into aiortc's.  A packet no receiver is registered for yet (aiortc
  registers a receiver in ``receive()``, after DTLS is up, so the first
  packets of a track can come first) is held (at most
  :data:`HELD_PACKETS`, :data:`HELD_SECONDS`) and routed again when the
  next receiver is registered; aiortc would have discarded it;
* the RTP header is read with one ``unpack_from``: marker, payload type,
  sequence number, timestamp, the CSRC count, the extension length (header
  extensions are skipped: the SFU uses none on receive, aiortc's bitrate
  estimator that read ``abs-send-time`` is off) and padding (RFC 3550
  section 5.1);
* the receiver's own RTCP statistics (``__remote_streams``, which aiortc's
  RTCP task turns into receiver reports about once per second, and
  ``getStats()`` into ``inbound-rtp``) are kept by
  :class:`LeanStreamStatistics`, aiortc's ``StreamStatistics`` with the same
  arithmetic (RFC 3550 appendix A.1, A.3 and A.8) on the header fields and
  one ``time.time()`` per packet;
* RTX (RFC 4588) is unwrapped, video packets go through the receiver's own
  ``NackGenerator`` (in-order packets skip it with one comparison; a gap sends
  a NACK at once, RFC 4585 section 6.2.1, as aiortc does), VP8's payload
  descriptor (RFC 7741 section 4.2) is skipped without building an object,
  and the packet goes to the receiver's frame buffer
  (:mod:`signalling.sfu.jitter`); a complete frame goes to its
  :class:`~signalling.sfu.passthrough.PassthroughQueue`;
* ``getSynchronizationSources()`` still works: the ``datetime`` of an SSRC is
  refreshed once per :data:`ACTIVE_SSRC_REFRESH` seconds instead of per
  packet (its cutoff is 10 s).

A receiver's REMB and receiver reports stay on aiortc's RTCP task (about one
per second, :func:`~signalling.sfu.passthrough.adopt_receiver`).  The
transport's received byte and packet counters (``getStats()``
``transport``) are kept.  :func:`~signalling.sfu.passthrough.check_aiortc`
checks every aiortc/aioice internal used here.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from struct import Struct
from typing import Any, NamedTuple

import pylibsrtp
from aiortc import RTCRtpReceiver
from aiortc.codecs import depayload
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics

from .jitter import AudioPacketBuffer, VideoFrameBuffer

__all__ = [
    "ACTIVE_SSRC_REFRESH",
    "HELD_PACKETS",
    "HELD_SECONDS",
    "READ_BATCH",
    "LeanPacket",
    "LeanReceiver",
    "LeanStreamStatistics",
    "ReceivePath",
    "fast_reads",
    "vp8_descriptor_length",
]

logger = logging.getLogger(__name__)

READ_BATCH = 32
"""Datagrams read from one socket per event-loop pass at most (:func:`fast_reads`)."""

HELD_PACKETS = 256
"""Packets without a receiver kept until the next receiver registration (:meth:`ReceivePath.replay`)."""
HELD_SECONDS = 2.0
"""Held packets older than this are dropped at a replay, not routed."""

ACTIVE_SSRC_REFRESH = 1.0
"""Seconds between refreshes of an SSRC's ``getSynchronizationSources()`` time (aiortc: every packet)."""

_RECEIVER = "_RTCRtpReceiver__"
_DTLS_RX_BYTES = "_RTCDtlsTransport__rx_bytes"
_DTLS_RX_PACKETS = "_RTCDtlsTransport__rx_packets"
_PATH_ATTRIBUTE = "_cloudwindow_receive_path"
_HEADER = Struct("!BBHII")
_CONNECTED = State.CONNECTED
_NO_RECEIVERS: frozenset[Any] = frozenset()
_SELECTOR_DATAGRAM_TRANSPORT: Any = vars(asyncio.selector_events).get("_SelectorDatagramTransport")

#: ``probe(timestamp, payload)``: called for each packet as it arrives (after SRTP, before RTX unwrapping).
Probe = Callable[[int, bytes], None]


class LeanPacket:
    """The fields of an RTP packet the frame buffers read (duck-typed ``aiortc.rtp.RtpPacket``)."""

    __slots__ = ("_data", "marker", "payload_type", "sequence_number", "ssrc", "timestamp")

    def __init__(self, ssrc: int, payload_type: int, sequence_number: int, timestamp: int, marker: int) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.marker = marker
        self._data = b""


class LeanStreamStatistics(StreamStatistics):
    """aiortc's per-SSRC receive statistics, fed from header fields and a clock read by the caller."""

    def received(self, sequence: int, timestamp: int, now: float) -> None:
        """``StreamStatistics.add`` for a packet with ``sequence`` and ``timestamp`` arriving at ``now``."""
        max_seq = self.max_seq
        self.packets_received += 1
        if self.base_seq is None:
            self.base_seq = sequence
        if max_seq is not None and not 0 < (sequence - max_seq) & 0xFFFF < 0x8000:
            return  # not newer than the highest sequence number (aiortc's uint16_gt)
        arrival = int(now * self._clockrate)
        if max_seq is not None and sequence < max_seq:
            self.cycles += 1 << 16
        self.max_seq = sequence
        last_timestamp = self._last_timestamp
        if timestamp != last_timestamp and self.packets_received > 1:
            assert self._last_arrival is not None and last_timestamp is not None
            diff = abs((arrival - self._last_arrival) - (timestamp - last_timestamp))
            self._jitter_q4 += diff - ((self._jitter_q4 + 8) >> 4)
        self._last_arrival = arrival
        self._last_timestamp = timestamp


def vp8_descriptor_length(payload: bytes) -> int:
    """Bytes of the VP8 payload descriptor at the start of ``payload`` (RFC 7741 section 4.2).

    Raises ``ValueError`` for a truncated descriptor, as aiortc's
    ``VpxPayloadDescriptor.parse`` does.
    """
    size = len(payload)
    if size < 1:
        raise ValueError("VPX descriptor is too short")
    if not payload[0] & 0x80:
        return 1
    if size < 2:
        raise ValueError("VPX descriptor has truncated extended bits")
    bits = payload[1]
    length = 2
    if bits & 0x80:  # I: PictureID, 7 or 15 bits
        if size < 3:
            raise ValueError("VPX descriptor has truncated PictureID")
        length += 2 if payload[2] & 0x80 else 1
    if bits & 0x40:  # L: TL0PICIDX
        length += 1
    if bits & 0x30:  # T or K: TID/Y/KEYIDX
        length += 1
    if length > size:
        raise ValueError("VPX descriptor is truncated")
    return length


class _RoutingKey(NamedTuple):
    """What ``RtpRouter.route_rtp`` reads of a packet."""

    ssrc: int
    payload_type: int


class LeanReceiver:
    """The receive work of one adopted ``RTCRtpReceiver`` (see the module docstring).

    Made by :func:`~signalling.sfu.passthrough.adopt_receiver`; shares the
    receiver's own codec table, RTX map, statistics, NACK generator and
    active-SSRC table, so aiortc's RTCP task, ``getStats()`` and
    ``getSynchronizationSources()`` read what this class writes.
    ``deliver(codec, frame)`` receives each complete frame.
    """

    def __init__(
        self,
        receiver: RTCRtpReceiver,
        frame_buffer: VideoFrameBuffer | AudioPacketBuffer,
        deliver: Callable[[tuple[RTCRtpCodecParameters, Any]], None],
    ) -> None:
        state = receiver.__dict__
        self.receiver = receiver
        self._codecs: dict[int, RTCRtpCodecParameters] = state[_RECEIVER + "codecs"]
        self._rtx_ssrc: dict[int, int] = state[_RECEIVER + "rtx_ssrc"]
        self._streams: dict[int, StreamStatistics] = state[_RECEIVER + "remote_streams"]
        self._active: dict[int, datetime.datetime] = state[_RECEIVER + "active_ssrc"]
        self._nack: NackGenerator | None = state[_RECEIVER + "nack_generator"]
        self._buffer = frame_buffer
        self._deliver = deliver
        self._seen: dict[int, float] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self._kinds: dict[int, tuple[RTCRtpCodecParameters, int, int | None]] = {}
        self.probe: Probe | None = None
        self.packets = 0
        self.malformed = 0
        self.nacks = 0
        self.plis = 0

    # --- per packet --------------------------------------------------------------------------------------------------

    def handle(self, data: bytes, now: float) -> None:
        """One unprotected RTP packet of this receiver (``data``), arrived at ``now`` (``time.time()``)."""
        receiver = self.receiver
        if not receiver._enabled:
            return
        size = len(data)
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        payload_type = second & 0x7F
        kind = self._kinds.get(payload_type)
        if kind is None:
            kind = self._codec_kind(payload_type)
            if kind is None:
                return
        codec, depacketiser, apt = kind
        start = 12 + ((first & 0x0F) << 2)
        if first & 0x10:
            if size < start + 4:
                self.malformed += 1
                return
            start += 4 + (int.from_bytes(data[start + 2 : start + 4], "big") << 2)
        end = size
        if first & 0x20:
            padding = data[-1]
            if not padding or padding > size - start:
                self.malformed += 1
                return
            end -= padding
        if start > end or first >> 6 != 2:
            self.malformed += 1
            return
        payload = data[start:end]
        self.packets += 1

        stats = self._streams.get(ssrc)
        if stats is None:
            stats = self._streams[ssrc] = LeanStreamStatistics(codec.clockRate)
        if isinstance(stats, LeanStreamStatistics):
            stats.received(sequence, timestamp, now)
        else:  # made by aiortc before adoption took effect
            stats.add(LeanPacket(ssrc, payload_type, sequence, timestamp, second >> 7))  # type: ignore[arg-type]
        seen = self._seen.get(ssrc)
        if seen is None or now - seen >= ACTIVE_SSRC_REFRESH:
            self._seen[ssrc] = now
            self._active[ssrc] = datetime.datetime.fromtimestamp(now, datetime.UTC)
        probe = self.probe
        if probe is not None:
            probe(timestamp, payload)

        if depacketiser == _RTX:
            # RFC 4588 section 4: the original sequence number, then the original payload.
            original_ssrc = self._rtx_ssrc.get(ssrc)
            if original_ssrc is None or apt is None or len(payload) < 2:
                return
            original = self._kinds.get(apt) or self._codec_kind(apt)
            if original is None or original[1] == _RTX:
                return
            ssrc = original_ssrc
            sequence = (payload[0] << 8) | payload[1]
            payload = payload[2:]
            payload_type = apt
            codec, depacketiser, _ = original

        packet = LeanPacket(ssrc, payload_type, sequence, timestamp, second >> 7)
        nack = self._nack
        if nack is not None:
            highest = nack.max_seq
            if highest is not None and not nack.missing and (sequence - highest) & 0xFFFF == 1:
                nack.max_seq = sequence
            elif nack.add(packet):  # type: ignore[arg-type]
                self.nacks += 1
                self._spawn(receiver._send_rtcp_nack(ssrc, sorted(nack.missing)))

        if payload:
            try:
                if depacketiser == _VP8:
                    packet._data = payload[vp8_descriptor_length(payload) :]
                elif depacketiser == _OTHER:
                    packet._data = depayload(codec, payload)
                else:
                    packet._data = payload
            except ValueError:
                self.malformed += 1
                return

        pli, frame = self._buffer.add(packet)  # type: ignore[arg-type]
        if pli:
            self.plis += 1
            self._spawn(receiver._send_rtcp_pli(ssrc))
        if frame is not None:
            self._deliver((codec, frame))

    # --- helpers -----------------------------------------------------------------------------------------------------

    def _codec_kind(self, payload_type: int) -> tuple[RTCRtpCodecParameters, int, int | None] | None:
        codec = self._codecs.get(payload_type)
        if codec is None:
            return None
        name = codec.name.lower()
        apt: int | None = None
        if name == "rtx":
            depacketiser = _RTX
            value = codec.parameters.get("apt")
            apt = value if isinstance(value, int) and value in self._codecs else None
        elif name == "vp8":
            depacketiser = _VP8
        elif name == "h264":
            depacketiser = _OTHER  # aiortc's depayloader: STAP-A/FU-A to Annex B
        else:
            depacketiser = _PLAIN  # Opus and other audio: the payload is the frame
        kind = self._kinds[payload_type] = (codec, depacketiser, apt)
        return kind

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


_PLAIN, _VP8, _OTHER, _RTX = range(4)


class ReceivePath:
    """Takes a DTLS transport's SRTP packets for :class:`LeanReceiver`\\ s out of aiortc's receive loop.

    One per ``RTCDtlsTransport`` (:meth:`of`); patches ``data_received`` of
    that transport's aioice ``Connection`` (an instance attribute, for this
    connection only).  See the module docstring for what is taken and what
    is left to aiortc.
    """

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        connection = dtls.transport._connection
        self._dtls = dtls
        self._connection = connection
        self._dtls_state: dict[str, Any] = dtls.__dict__
        self._router = dtls._rtp_router
        self._ssrc_table = self._router.ssrc_table
        self._pt_table = self._router.payload_type_table
        self._receivers: dict[Any, LeanReceiver] = {}
        self._queue = connection.data_received
        self._held: deque[tuple[float, bytes]] = deque()
        self._sped_up: set[Any] = set()
        self._caught_up = False
        self.taken = 0
        self.unrouted = 0
        self.failed = 0
        setattr(connection, "data_received", self.data_received)  # noqa: B010 - instance patch, see the module docstring

    @classmethod
    def of(cls, dtls: RTCDtlsTransport) -> ReceivePath:
        """The receive path of ``dtls``, installed on first use."""
        path = dtls.__dict__.get(_PATH_ATTRIBUTE)
        if path is None:
            path = cls(dtls)
            setattr(dtls, _PATH_ATTRIBUTE, path)
        return path

    def add(self, lean: LeanReceiver) -> None:
        self._receivers[lean.receiver] = lean

    def remove(self, lean: LeanReceiver) -> None:
        if self._receivers.get(lean.receiver) is lean:
            del self._receivers[lean.receiver]

    def speed_up_datagrams(self) -> int:
        """Read the connection's sockets in batches and skip aioice's STUN parse for RTP/RTCP (see :func:`fast_reads`).

        Runs once DTLS is up (the sockets exist from gathering on); returns how many sockets were changed now.
        """
        changed = 0
        for protocol in self._connection._protocols:
            if protocol not in self._sped_up:
                self._sped_up.add(protocol)
                changed += fast_reads(protocol)
        return changed

    def replay(self) -> None:
        """Route the packets held since the last replay again (a receiver was just registered); drop the rest."""
        held, self._held = self._held, deque()
        state = self._dtls_state
        oldest = time.monotonic() - HELD_SECONDS
        for arrived, data in held:
            if arrived < oldest:
                self.unrouted += 1
                continue
            state[_DTLS_RX_BYTES] -= len(data)  # counted again
            state[_DTLS_RX_PACKETS] -= 1
            self.data_received(data, 1)
        self.unrouted += len(self._held)
        self._held.clear()

    def _hold(self, data: bytes) -> None:
        # No receiver for this SSRC and payload type (yet): aiortc discards such a packet, but the first packets of a
        # track can arrive between DTLS being up and aiortc registering the receiver (``receive()``).
        held = self._held
        if len(held) >= HELD_PACKETS:
            held.popleft()
            self.unrouted += 1
        held.append((time.monotonic(), data))

    def data_received(self, data: bytes, component: int) -> None:
        if component == 1 and len(data) >= 12 and 127 < data[0] < 192 and not 191 < data[1] < 209:
            dtls = self._dtls
            srtp = dtls._rx_srtp
            if srtp is not None and dtls._state is _CONNECTED and (self._caught_up or self._connection._queue.empty()):
                self._caught_up = True
                ssrc = int.from_bytes(data[8:12], "big")
                payload_type = data[1] & 0x7F
                receiver = self._ssrc_table.get(ssrc)
                if receiver is None or receiver not in self._pt_table.get(payload_type, _NO_RECEIVERS):
                    receiver = self._router.route_rtp(_RoutingKey(ssrc, payload_type))  # type: ignore[arg-type]
                lean = self._receivers.get(receiver) if receiver is not None else None
                if lean is not None or receiver is None:
                    state = self._dtls_state
                    state[_DTLS_RX_BYTES] += len(data)
                    state[_DTLS_RX_PACKETS] += 1
                    if lean is None:
                        self._hold(data)
                        return
                    try:
                        plain = srtp.unprotect(data)
                    except pylibsrtp.Error:
                        self.failed += 1
                        return
                    self.taken += 1
                    try:
                        lean.handle(plain, time.time())
                    except Exception:
                        # Never let a forwarding bug escape into aioice's datagram callback.
                        logger.exception("handling a received RTP packet failed")
                    return
        self._queue(data, component)


def fast_reads(protocol: Any) -> int:
    """Make one aioice ``StunProtocol`` cheaper per datagram; returns 1 if its socket reads were batched.

    * aioice tries ``stun.parse_message`` on every datagram and treats the
      ``ValueError`` as "media": a datagram whose first byte is 128-191 is
      RTP or RTCP (RFC 7983 section 7; a STUN message starts with two zero
      bits), so it goes straight to ``data_received``.
    * asyncio's selector datagram transport reads one datagram per loop
      iteration (one ``epoll_wait`` and one pass of the loop each); a video
      frame arrives as a burst of packets.  The socket's reader is replaced by
      one that reads up to :data:`READ_BATCH` datagrams while they are there,
      with the same error handling as ``_SelectorDatagramTransport._read_ready``.
      Only for asyncio's own selector loop and datagram transport (not a TURN
      relay's transport).
    """
    original = protocol.datagram_received
    receiver = protocol.receiver
    component = protocol.local_candidate.component

    def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
        if data and 127 < data[0] < 192:
            receiver.data_received(data, component)
        else:
            original(data, addr)

    setattr(protocol, "datagram_received", datagram_received)  # noqa: B010 - instance patch
    transport: Any = getattr(protocol, "transport", None)
    if _SELECTOR_DATAGRAM_TRANSPORT is None or type(transport) is not _SELECTOR_DATAGRAM_TRANSPORT:
        return 0
    loop: Any = transport._loop
    if not isinstance(transport._loop, asyncio.selector_events.BaseSelectorEventLoop) or transport._conn_lost:
        return 0
    sock = transport._sock
    fd = transport._sock_fd
    max_size = transport.max_size

    def read_ready() -> None:
        for _ in range(READ_BATCH):
            if transport._conn_lost:
                return
            try:
                data, addr = sock.recvfrom(max_size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                transport._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                transport._fatal_error(exc, "Fatal read error on datagram transport")
                return
            transport._protocol.datagram_received(data, addr)

    if not loop._remove_reader(fd):
        return 0
    loop._add_reader(fd, read_ready)
    return 1
