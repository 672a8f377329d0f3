"""The SFU's RTP send path: one subscriber's share of a forwarded frame, without aiortc's per-packet loop.

aiortc's ``RTCRtpSender._run_rtp`` is one task per sender that awaits the
track, repacketises the frame, builds an ``RtpPacket`` per packet, serialises
its header extensions through ``HeaderExtensionsMap`` and reads the
``datetime`` clock twice per packet.  For a forwarded track all of that is the
same for every subscriber except the SSRC, the sequence number, the timestamp
offset and the mid.  :class:`RtpForwarder` replaces ``_run_rtp`` on one SFU
sender (an instance patch, see :func:`~signalling.sfu.passthrough.adopt_sender`):

* the publication hands it the frame's payloads, packetised once for all
  subscribers (:mod:`signalling.sfu.packetiser`), and one NTP time read once
  per frame (the ``abs-send-time`` extension and the RTCP SR time);
* the header layout (RFC 3550 section 5.1 fixed header, RFC 8285 one-byte or
  two-byte extension block) is computed once per sender from aiortc's own
  ``HeaderExtensionsMap``; per frame only the 3 ``abs-send-time`` bytes
  change, per packet the marker and the sequence number;
* each packet is protected with the sender's DTLS transport's SRTP session
  (``_tx_srtp``) and written to the nominated ICE pair's datagram transport
  synchronously, on the caller's (the publisher's receive) task: no task, no
  queue and no wake-up per subscriber; the packets of a frame go out in one
  UDP GSO ``sendmsg`` where the kernel allows (:mod:`signalling.sfu.udpsend`);
* the plaintext packets are kept (the last ``RTP_HISTORY_SIZE``) so that
  aiortc's RTCP handler can still answer NACKs (RFC 4585 section 6.2.1),
  through RTX (RFC 4588) when negotiated: ``_retransmit`` is replaced too;
* the counters aiortc's RTCP task puts in its sender reports (packets,
  octets, NTP and RTP time of the last packet) and the transport's byte
  counters are kept up to date, once per frame.

Overload: when the datagram transport's write buffer holds more than
:data:`WRITE_BUFFER_LIMIT` bytes (the kernel refused earlier datagrams), the
frame is not sent and :meth:`RtpForwarder.send_frame` returns ``False``; the
relay then waits for the next keyframe, as its bounded queue does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from struct import Struct
from typing import Any, Protocol

from aiortc import RTCRtpSender
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RTP_HISTORY_SIZE, HeaderExtensions, HeaderExtensionsMap, RtpPacket, wrap_rtx

from .udpsend import send_datagrams

__all__ = ["NTP_OFFSET", "WRITE_BUFFER_LIMIT", "FrameSource", "RtpForwarder", "header_layout", "ntp_now"]

logger = logging.getLogger(__name__)

WRITE_BUFFER_LIMIT = 256 * 1024
"""Bytes queued in user space for one subscriber's socket beyond which frames are dropped (see the module docstring)."""


class FrameSource(Protocol):
    """What a forwarder needs of the relay it sends for (``passthrough.RelayTrack``): to be bound and unbound.

    Declared here, by the consumer, so the forwarder does not import the relay's module (which imports it).
    """

    def bind(self, forwarder: RtpForwarder) -> None: ...

    def unbind(self, forwarder: RtpForwarder) -> None: ...


NTP_OFFSET = 2208988800
"""Seconds from the NTP epoch (1900) to the Unix epoch (RFC 5905 section 6)."""

_HEADER = Struct("!BBHII")
_SENDER = "_RTCRtpSender__"
_DTLS_TX_BYTES = "_RTCDtlsTransport__tx_bytes"
_DTLS_TX_PACKETS = "_RTCDtlsTransport__tx_packets"


def ntp_now() -> int:
    """The 64-bit NTP time now (RFC 3550 section 4), as aiortc's ``clock.current_ntp_time`` without ``datetime``."""
    now = time.time() + NTP_OFFSET
    seconds = int(now)
    return (seconds << 32) | int((now - seconds) * (1 << 32))


def header_layout(extensions_map: HeaderExtensionsMap, mid: str | None) -> tuple[bytes, int | None]:
    """The RTP header extension block of a sender, and the offset of its 3 ``abs-send-time`` bytes in it.

    The block (``b""`` when nothing is negotiated) is what aiortc would
    serialise for a packet carrying ``mid`` and ``abs-send-time``; the offset
    is found by serialising two different times with aiortc's own map, so the
    layout always matches aiortc's.  ``None``: ``abs-send-time`` was not
    negotiated.
    """
    blocks: list[bytes] = []
    for value in (0, 0xFFFFFF):
        values = HeaderExtensions()
        values.mid = mid
        values.abs_send_time = value
        profile, body = extensions_map.set(values)
        blocks.append(Struct("!HH").pack(profile, len(body) >> 2) + body if body else b"")
    low, high = blocks
    if not low:
        return b"", None
    changed = [i for i in range(len(low)) if low[i] != high[i]]
    if not changed:
        return low, None
    offset = changed[0]
    if changed != list(range(offset, offset + len(changed))) or len(changed) > 3 or offset + 3 > len(low):
        raise ValueError("unexpected abs-send-time layout in aiortc's header extensions")
    return low, offset


class RtpForwarder:
    """Forwards frames on one ``RTCRtpSender`` in place of its ``_run_rtp`` (see the module docstring).

    ``install()`` must run before the sender starts.  From the moment aiortc
    starts the sender (``send()``, after DTLS is connected) until it stops,
    the forwarder is bound to ``relay`` and receives its frames through
    :meth:`send_frame`; ``relay`` first flushes what it queued meanwhile.
    """

    def __init__(self, sender: RTCRtpSender, relay: FrameSource) -> None:
        self._sender = sender
        self._relay = relay
        self._state: dict[str, Any] = sender.__dict__
        self._payload_type = 0
        self._sequence = random.randrange(32768)  # noqa: S311 - lower half as aiortc (no early SRTP wrap)
        self._timestamp_origin = random.getrandbits(32)
        self._extensions = b""
        self._ast_offset: int | None = None
        self._first_byte = 0x80
        self._history: list[bytes | None] = [None] * RTP_HISTORY_SIZE
        self._extensions_map: HeaderExtensionsMap | None = None
        self._running = False
        self.packets = 0
        self.frames = 0
        self.congested = 0

    @property
    def running(self) -> bool:
        return self._running

    def install(self) -> None:
        sender = self._sender
        setattr(sender, "_run_rtp", self._run)  # noqa: B010 - instance patch, see the module docstring
        setattr(sender, "_retransmit", self._retransmit)  # noqa: B010

    def configure(self, payload_type: int, extensions_map: HeaderExtensionsMap, mid: str | None) -> None:
        """Set the negotiated payload type and header extensions (done by :meth:`_run`; direct use is for tests)."""
        self._payload_type = payload_type
        self._extensions_map = extensions_map
        self._extensions, self._ast_offset = header_layout(extensions_map, mid)
        self._first_byte = 0x90 if self._extensions else 0x80

    async def _run(self, codec: RTCRtpCodecParameters) -> None:
        state = self._state
        state[_SENDER + "rtp_started"].set()
        try:
            payload_type = codec.payloadType
            assert payload_type is not None
            self.configure(payload_type, state[_SENDER + "rtp_header_extensions_map"], state[_SENDER + "mid"])
            self._running = True
            self._relay.bind(self)
            await asyncio.get_running_loop().create_future()  # until stop() cancels the task
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("the SFU forwarder of a sender failed")
        finally:
            self._running = False
            self._relay.unbind(self)
            track = self._sender.track
            if track is not None:
                track.stop()
            state[_SENDER + "rtp_exited"].set()

    def send_frame(self, payloads: Sequence[bytes], pts: int, ntp: int) -> bool:
        """Send one frame (its RTP payloads, its timestamp on the RTP clock, the NTP time now).

        Returns ``False`` only when the subscriber's socket is congested (the
        frame was dropped); a frame for a sender that is disabled (direction
        without ``send``) or not connected is discarded and counts as handled.
        """
        sender = self._sender
        if not self._running or not sender._enabled:
            return True
        dtls = sender.transport
        if dtls._state is not State.CONNECTED:
            return True
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            return True
        udp: Any = pair.protocol.transport  # a selector datagram transport: it has get_write_buffer_size()
        if udp.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            self.congested += 1
            return False
        address = pair.remote_addr
        protect = dtls._tx_srtp.protect
        sendto = udp.sendto
        timestamp = (self._timestamp_origin + pts) & 0xFFFFFFFF
        extensions = self._extensions
        offset = self._ast_offset
        if offset is not None:
            extensions = extensions[:offset] + ((ntp >> 14) & 0xFFFFFF).to_bytes(3, "big") + extensions[offset + 3 :]
        first_byte = self._first_byte
        payload_type = self._payload_type
        ssrc = sender._ssrc
        history = self._history
        pack = _HEADER.pack
        sequence = self._sequence
        last = len(payloads) - 1
        octets = 0
        wire = 0
        datagrams: list[bytes] = []
        for index, payload in enumerate(payloads):
            second = payload_type | 0x80 if index == last else payload_type
            plain = pack(first_byte, second, sequence, timestamp, ssrc) + extensions + payload
            history[sequence % RTP_HISTORY_SIZE] = plain
            data = protect(plain)
            datagrams.append(data)
            octets += len(payload)
            wire += len(data)
            sequence = (sequence + 1) & 0xFFFF
        if len(datagrams) == 1:  # audio, and small video frames: no batching to look for
            sendto(datagrams[0], address)
        else:
            send_datagrams(udp, datagrams, address)
        self._sequence = sequence
        count = len(payloads)
        self.packets += count
        self.frames += 1
        state = self._state
        state[_SENDER + "ntp_timestamp"] = ntp
        state[_SENDER + "rtp_timestamp"] = timestamp
        state[_SENDER + "octet_count"] += octets
        state[_SENDER + "packet_count"] += count
        transport_state = dtls.__dict__
        transport_state[_DTLS_TX_BYTES] += wire
        transport_state[_DTLS_TX_PACKETS] += count
        return True

    def packet(self, sequence_number: int) -> bytes | None:
        """The plaintext RTP packet sent with ``sequence_number``, if it is still in the history."""
        plain = self._history[sequence_number % RTP_HISTORY_SIZE]
        if plain is None or int.from_bytes(plain[2:4], "big") != sequence_number:
            return None
        return plain

    async def _retransmit(self, sequence_number: int) -> None:
        """aiortc's NACK answer (``RTCRtpSender._retransmit``) on the forwarder's history."""
        plain = self.packet(sequence_number)
        if plain is None or self._extensions_map is None:
            return
        state = self._state
        rtx_payload_type = state.get(_SENDER + "rtx_payload_type")
        if rtx_payload_type is not None:
            original = RtpPacket.parse(plain, self._extensions_map)
            rtx_sequence = state[_SENDER + "rtx_sequence_number"]
            rtx = wrap_rtx(
                original, payload_type=rtx_payload_type, sequence_number=rtx_sequence, ssrc=self._sender._rtx_ssrc
            )
            state[_SENDER + "rtx_sequence_number"] = (rtx_sequence + 1) & 0xFFFF
            plain = rtx.serialize(self._extensions_map)
        try:
            await self._sender.transport._send_rtp(plain)
        except ConnectionError:
            pass
