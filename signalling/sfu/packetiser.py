"""RTP payloads of an encoded frame, computed once per frame for every subscriber of a publication.

aiortc's senders repacketise each frame separately for each subscriber
(``Encoder.pack``).  The SFU packetises a frame once, when its publication
forwards it, and every subscriber's :class:`~signalling.sfu.forwarder.RtpForwarder`
sends the same payloads under its own RTP header.

The payloads depend only on the frame and on its ``sequence`` (the VP8
picture id is the frame's sequence number modulo 2^15), so every subscriber
sees the same picture id for the same frame, a subscriber that received
frames from a queue (before its sender started) sees the ids those frames
had, and a gap in picture ids at a subscriber means exactly that it missed
frames (it then restarts at a keyframe).

Sizes follow aiortc's (at most 1300 bytes of payload per packet), so the SFU's
packets are no larger than aiortc's own.
"""

from __future__ import annotations

from collections.abc import Callable
from struct import Struct

from aiortc.codecs.h264 import H264Encoder

__all__ = ["PAYLOAD_MAX", "Packetiser", "packetise_h264", "packetise_opus", "packetise_vp8", "packetiser_for"]

PAYLOAD_MAX = 1300
"""Largest RTP payload (codec payload header included), as aiortc's packetisers use."""

Packetiser = Callable[[bytes, int], list[bytes]]
"""``packetise(frame_data, sequence)`` -> RTP payloads of the frame, in order (the last one carries the marker)."""

_VP8_DESCRIPTOR = Struct("!BBH")


def packetise_vp8(data: bytes, sequence: int) -> list[bytes]:
    """RFC 7741 section 4.2 payloads: X=1, S=1 on the first packet, PID 0, I=1 with a 15-bit picture id (M=1)."""
    picture_id = 0x8000 | (sequence & 0x7FFF)
    first = _VP8_DESCRIPTOR.pack(0x90, 0x80, picture_id)
    rest = _VP8_DESCRIPTOR.pack(0x80, 0x80, picture_id)
    size = PAYLOAD_MAX - len(first)
    length = len(data)
    if length <= size:
        return [first + data]
    view = memoryview(data)
    payloads = [first + view[:size]]
    for pos in range(size, length, size):
        payloads.append(rest + view[pos : pos + size])
    return payloads


def packetise_h264(data: bytes, sequence: int) -> list[bytes]:
    """RFC 6184 packetization-mode 1 (single NAL units, STAP-A, FU-A), by aiortc's own packetiser."""
    return H264Encoder._packetize(H264Encoder._split_bitstream(data))


def packetise_opus(data: bytes, sequence: int) -> list[bytes]:
    """RFC 7587 section 4.2: one Opus packet per RTP packet, as is."""
    return [data]


def packetiser_for(mime_type: str) -> Packetiser:
    """The packetiser of a codec (``video/vp8``, ``video/h264``; anything else is sent one frame per packet)."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return packetise_vp8
    if mime == "video/h264":
        return packetise_h264
    return packetise_opus
