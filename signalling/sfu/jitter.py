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
  as aiortc does.  A missing packet that can no longer be repaired ends the
  wait: once :data:`UNREPAIRABLE` packets have arrived after it (aiortc's
  ``NackGenerator`` stops asking for a packet that old, RFC 4585 section
  6.2.1 NACKs being its only repair), the frames up to the first frame that
  starts after the hole are dropped, the frames after it are released, and
  the buffer asks for a keyframe.  aiortc's buffer waits until its ring
  (512 packets, about 5 s of 1 Mbit/s video) overflows: every packet lost
  for good stalled the track for seconds and then released the backlog in
  one burst.
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

from collections.abc import Callable

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket

__all__ = ["SSRC_SWITCH", "UNREPAIRABLE", "AudioPacketBuffer", "SsrcFilter", "VideoFrameBuffer"]

SSRC_SWITCH = 16
"""Consecutive packets of a new SSRC (none of the current one between them) after which a buffer follows it."""

UNREPAIRABLE = RTP_HISTORY_SIZE
"""Packets after a missing one from which it is given up (aiortc's ``NackGenerator`` forgets it then)."""


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

    def __init__(self, capacity: int = 512, unrepairable: int = UNREPAIRABLE) -> None:
        super().__init__(capacity=capacity, prefetch=0, is_video=True)
        self.ssrc = SsrcFilter()
        self._scan_first: RtpPacket | None = None
        self._scan_origin = 0
        self._scanned = 0
        self._unrepairable = min(unrepairable, capacity - 1)
        self._skip_origin: int | None = None
        self._skip_hole = 0
        self._skip_resume = 0
        self.holes_skipped = 0
        self.packets_skipped = 0
        self.resets = 0  # aiortc's own keyframe requests: ring overflow or a packet far older than the origin
        #: Called instead of returning the PLI flag when set (the SFU: the publication's rate-limited requester,
        #: so that a burst of losses asks the publisher for one keyframe, not one per hole).
        self.keyframe_request: Callable[[], None] | None = None

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
            return self._keyframe_needed(), frame
        pli, frame = super().add(packet)
        self.resets += pli
        if frame is None and self._origin is not None:
            hole = self._hole()
            if hole is not None and self._unrepairable <= (packet.sequence_number - hole) & 0xFFFF < 0x8000:
                skipped, frame = self._skip(hole, packet.sequence_number)
                pli = pli or skipped
        return pli and self._keyframe_needed(), frame

    def _keyframe_needed(self) -> bool:
        """The PLI flag to return: ``True``, unless :attr:`keyframe_request` takes the request."""
        request = self.keyframe_request
        if request is None:
            return True
        request()
        return False

    def _hole(self) -> int | None:
        """The sequence number of the first missing packet from the origin on (``None``: none is known)."""
        origin = self._origin
        assert origin is not None
        packets = self._packets
        capacity = self._capacity
        if packets[origin % capacity] is None:
            return origin
        if packets[origin % capacity] is not self._scan_first or origin != self._scan_origin:
            return None
        hole = (origin + self._scanned) & 0xFFFF
        return hole if packets[hole % capacity] is None else None

    def _skip(self, hole: int, newest: int) -> tuple[bool, JitterFrame | None]:
        """Give up ``hole``: drop up to the first frame that starts after it, then release that frame if complete.

        A frame start is a packet whose predecessor is present and carries the marker or another timestamp; the
        packet right after the hole cannot be told apart from the middle of a frame.  Without a start yet, nothing
        is dropped and the search resumes there with the next packet.
        """
        packets = self._packets
        capacity = self._capacity
        start = (hole + 1) & 0xFFFF
        if self._skip_origin == self._origin and self._skip_hole == hole:
            start = self._skip_resume
        self._skip_origin, self._skip_hole = self._origin, hole
        previous = packets[(start - 1) % capacity] if start != (hole + 1) & 0xFFFF else None
        sequence = start
        while (newest - sequence) & 0xFFFF < 0x8000:
            packet = packets[sequence % capacity]
            if (
                packet is not None
                and previous is not None
                and (previous.marker or previous.timestamp != packet.timestamp)
            ):
                assert self._origin is not None
                count = (sequence - self._origin) & 0xFFFF
                self.packets_skipped += sum(
                    1 for i in range(count) if packets[(self._origin + i) % capacity] is not None
                )
                self.holes_skipped += 1
                self.remove(count)
                self._scan_first = None
                self._skip_origin = None
                return True, self._remove_frame(sequence)
            previous = packet
            sequence = (sequence + 1) & 0xFFFF
        self._skip_resume = sequence
        return False, None

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
