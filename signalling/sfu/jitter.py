"""Receive-side frame assembly for forwarded tracks, without aiortc's added frame of delay.

aiortc's :class:`~aiortc.jitterbuffer.JitterBuffer` releases a frame only when
the first packet of the *next* frame arrives (a timestamp change), and holds
audio back by ``prefetch=4`` packets: 33 ms per video frame at 30 fps and 80 ms
of audio that an SFU adds for nothing, since the subscriber runs its own
jitter buffer.

* :class:`VideoFrameBuffer` keeps aiortc's ring, reordering and overflow
  handling (it subclasses it) and additionally releases a frame as soon as the
  packet carrying the **marker bit** is in and every packet from the frame's
  first one up to it is present.  RFC 7741 section 4.1 (VP8) and RFC 6184
  section 5.1 (H.264) set the marker on the last packet of a frame, RFC 3550
  section 5.1 leaves it to the profile.  A frame is known to start at the
  buffer's origin because the origin always follows the last packet released.
  A frame whose marker was lost is still released when the next frame starts,
  as aiortc does.
* :class:`AudioPacketBuffer` releases every packet at once (one Opus packet is
  one frame, RFC 7587 section 4.2) and drops a packet older than one already
  released: forwarding it after its successor would only reach the
  subscriber's jitter buffer too late.

Both keep to one SSRC.  aiortc routes a packet of an SSRC it does not know yet
by payload type, so the first packets of a track being added (a screen share)
can land on the receiver of another track with the same codec before its own
receiver is registered; aiortc's buffer happened to discard such a packet
(a sequence jump resets it), but released at its marker it would be forwarded
as a frame of the wrong track.  A packet of another SSRC is dropped, unless
:data:`SSRC_SWITCH` of them arrive in a row with none of the current SSRC:
then the sender really changed its SSRC and the buffer follows.

Both are installed per receiver by :func:`~signalling.sfu.passthrough.adopt_receiver`
in place of the receiver's private ``__jitter_buffer``; the receiver calls
``add(packet)`` and expects ``(pli_flag, frame_or_None)``.
"""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

__all__ = ["SSRC_SWITCH", "AudioPacketBuffer", "SsrcFilter", "VideoFrameBuffer"]

SSRC_SWITCH = 16
"""Consecutive packets of a new SSRC (none of the current one between them) after which a buffer follows it."""


class SsrcFilter:
    """Keeps a buffer to one SSRC (see the module docstring); ``stray`` counts the packets dropped."""

    def __init__(self) -> None:
        self.ssrc: int | None = None
        self._other: int | None = None
        self._other_count = 0
        self.stray = 0

    def accept(self, ssrc: int) -> bool | None:
        """``True``: the current SSRC; ``False``: drop the packet; ``None``: a new SSRC is now current."""
        if ssrc == self.ssrc:
            self._other_count = 0
            return True
        if self.ssrc is None:
            self.ssrc = ssrc
            return True
        if ssrc == self._other:
            self._other_count += 1
        else:
            self._other, self._other_count = ssrc, 1
        if self._other_count >= SSRC_SWITCH:
            self.ssrc, self._other, self._other_count = ssrc, None, 0
            return None
        self.stray += 1
        return False


class VideoFrameBuffer(JitterBuffer):
    """aiortc's video jitter buffer, plus release at the marker bit (see the module docstring)."""

    def __init__(self, capacity: int = 512) -> None:
        super().__init__(capacity=capacity, prefetch=0, is_video=True)
        self.ssrc = SsrcFilter()
        self._scan_first: RtpPacket | None = None
        self._scan_origin = 0
        self._scanned = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        accepted = self.ssrc.accept(packet.ssrc)
        if accepted is False:
            return False, None
        if accepted is None:
            # A new stream: start afresh, and ask for a keyframe (it cannot be decoded from the middle).
            if self._origin is not None:
                self.remove(self.capacity)
            self._origin = None
            _, frame = super().add(packet)
            return True, frame
        return super().add(packet)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        # Incremental: the contiguous packets already checked for the frame at the origin are not checked again,
        # so a frame of n packets costs O(n), not O(n^2) (aiortc rescans from the origin on every packet).
        origin = self._origin
        if origin is None:
            return None
        packets = self._packets
        capacity = self._capacity
        first = packets[origin % capacity]
        if first is None:
            return None
        if first is not self._scan_first or origin != self._scan_origin:
            self._scan_first, self._scan_origin, self._scanned = first, origin, 0
        timestamp = first.timestamp
        count = self._scanned
        while count < capacity:
            packet = packets[(origin + count) % capacity]
            if packet is None:
                self._scanned = count
                return None
            if packet.timestamp != timestamp:
                # The frame ended without a marker: release it at the next frame's first packet, as aiortc does.
                return self._release(origin, count, timestamp)
            if packet.marker:
                return self._release(origin, count + 1, timestamp)
            count += 1
        self._scanned = count
        return None

    def _release(self, origin: int, length: int, timestamp: int) -> JitterFrame:
        packets = self._packets
        capacity = self._capacity
        data = b"".join(packets[(origin + i) % capacity]._data for i in range(length))  # type: ignore[union-attr]
        self.remove(length)
        self._scan_first = None
        return JitterFrame(data=data, timestamp=timestamp)


class AudioPacketBuffer:
    """Releases each audio packet as it arrives; late (reordered) packets are dropped (see the module docstring)."""

    def __init__(self) -> None:
        self._last: int | None = None
        self.late = 0
        self.ssrc = SsrcFilter()

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        accepted = self.ssrc.accept(packet.ssrc)
        if accepted is False:
            return False, None
        sequence = packet.sequence_number
        last = None if accepted is None else self._last
        if last is not None:
            delta = (sequence - last) & 0xFFFF
            if delta == 0 or delta >= 0x8000:
                self.late += 1
                return False, None
        self._last = sequence
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]
