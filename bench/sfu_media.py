"""Pre-encoded media, tagged frames and receive probes for the SFU benchmark (``bench/sfu_forward.py``).

Publishers must not spend the bench machine's two cores on encoding, and
subscribers must not spend them on decoding, so:

* a short numbered 640x480 clip is encoded **once** to VP8 (libvpx via PyAV,
  ~1 Mbit/s CBR at 30 fps, like aiortc's own encoder settings) together with
  an intra-only copy of every frame, plus one second of Opus; the clip is
  cached in a file the worker processes load.  :class:`ClipVideoTrack` and
  :class:`ClipAudioTrack` loop it as ``av.Packet``s with running
  timestamps, the path ``MediaPlayer(decode=False)`` uses: the sender only
  packetises.  A PLI/FIR from the far end (aiortc sets the sender's private
  ``__force_keyframe`` flag) makes the video track send the intra copy of
  the next frame, as a browser's encoder would answer with a keyframe.
* every encoded frame carries a 20-byte **trailer** appended after the codec
  payload: ``b"CWB1"``, a stream id, a per-stream sequence number and the
  ``CLOCK_MONOTONIC`` time in ns at which the track handed the frame to its
  sender.  ``CLOCK_MONOTONIC`` is system-wide on Linux, so a subscriber in
  another process computes the one-way latency directly.  The trailer sits
  at the end of the frame, so it travels in the last RTP packet of the frame
  (the one with the marker bit); a packet probe on the subscriber's receiver
  (``sfu_client.Probe``) reads it on arrival (before the subscriber's own jitter buffer, which
  holds a video frame until the next one starts).  The SFU and Janus forward
  the bytes unchanged; nothing on those paths decodes them.
* subscribers' receivers get :func:`signalling.sfu.passthrough.adopt_receiver`
  (the SFU's own "no decoder" hook), so they never decode either.  Only the
  aiortc relay baseline re-encodes (the trailer is lost): there the
  subscriber decodes and reads the frame number drawn in the picture
  (:func:`read_number`).
"""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import random
import struct
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from aiortc import RTCRtpSender
from aiortc.codecs.vpx import PACKET_MAX
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

WIDTH, HEIGHT, FPS = 640, 480, 30
VIDEO_BITRATE = 1_000_000
KEYFRAME_BITRATE = 3_000_000
CLIP_FRAMES = 150  # 5 s of video; the drawn number is the index in the clip
AUDIO_PACKETS = 50  # 1 s of 20 ms Opus packets
VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000

MAGIC = b"CWB1"
TRAILER = struct.Struct("!4sIIQ")  # magic, stream id, sequence, send time (CLOCK_MONOTONIC ns)
CLIP_VERSION = 4

COLS, ROWS = 8, 4
GRID_HEIGHT = HEIGHT // 2  # the number grid fills the top half; the bottom half is noise (bitrate)


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# --- the picture -----------------------------------------------------------------------------------------------------


def _check(number: int) -> int:
    return (number * 7 + (number >> 8) * 13 + 0x5A) & 0xFF


def _bits(number: int) -> list[int]:
    word = 0xC3 << 24 | (number & 0xFFFF) << 8 | _check(number)
    return [(word >> (31 - i)) & 1 for i in range(32)]


def draw(number: int, noise: bytes) -> av.VideoFrame:
    """A 640x480 frame: the 32-bit number grid in the top half, ``noise`` (luma bytes) below."""
    frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
    luma = frame.planes[0]
    stride = luma.line_size
    block_w, block_h = WIDTH // COLS, GRID_HEIGHT // ROWS
    bits = _bits(number)
    rows = []
    for r in range(ROWS):
        line = b"".join((b"\xeb" if bits[r * COLS + c] else b"\x10") * block_w for c in range(COLS))
        rows.append(line.ljust(stride, b"\x10") * block_h)
    bottom = b"".join(noise[i * WIDTH : (i + 1) * WIDTH].ljust(stride, b"\x80") for i in range(HEIGHT - GRID_HEIGHT))
    luma.update((b"".join(rows) + bottom).ljust(luma.buffer_size, b"\x80")[: luma.buffer_size])
    for plane in frame.planes[1:]:
        plane.update(b"\x80" * plane.buffer_size)
    return frame


def read_number(frame: av.VideoFrame) -> int | None:
    """The number drawn by :func:`draw`, or ``None`` when the check fails (decoded relay frames)."""
    if frame.format.name != "yuv420p" or frame.width != WIDTH or frame.height != HEIGHT:
        frame = frame.reformat(width=WIDTH, height=HEIGHT, format="yuv420p")
    luma = frame.planes[0]
    data = bytes(luma)
    stride = luma.line_size
    block_w, block_h = WIDTH // COLS, GRID_HEIGHT // ROWS
    word = 0
    for r in range(ROWS):
        for c in range(COLS):
            cx, cy = c * block_w + block_w // 2, r * block_h + block_h // 2
            total = sum(data[(cy + dy) * stride + cx + dx] for dy in (-4, 0, 4) for dx in (-4, 0, 4))
            word = word << 1 | (1 if total > 9 * 128 else 0)
    tag, number, check = word >> 24, (word >> 8) & 0xFFFF, word & 0xFF
    return number if tag == 0xC3 and check == _check(number) else None


# --- the clip --------------------------------------------------------------------------------------------------------


@dataclass
class Clip:
    delta: list[bytes]  # the clip as one VP8 stream (frame 0 is a keyframe)
    intra: list[bytes]  # every frame encoded alone (sent after a PLI/FIR)
    opus: list[bytes]  # 20 ms Opus packets of a tone

    @property
    def video_bitrate(self) -> float:
        return sum(len(f) for f in self.delta) * 8 * FPS / len(self.delta)


def _vp8_encoder(bitrate: int, keyframes_only: bool) -> Any:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.bit_rate = bitrate
    codec.framerate = Fraction(FPS, 1)
    codec.time_base = Fraction(1, FPS)
    codec.gop_size = 1 if keyframes_only else 3000
    codec.qmin, codec.qmax = 2, 56
    codec.options = {  # aiortc's Vp8Encoder settings (CBR, realtime)
        "bufsize": str(bitrate),
        "cpu-used": "-6",
        "deadline": "realtime",
        "lag-in-frames": "0",
        "minrate": str(bitrate),
        "maxrate": str(bitrate),
        "overshoot-pct": "15",
        "partitions": "0",
        "static-thresh": "1",
        "undershoot-pct": "100",
        # No entropy state carried between frames, so a keyframe from the intra-only encoder can stand in for any
        # frame of the clip (a decoder, like the relay baseline's, then continues with the following delta frames).
        "error-resilient": "default",
    }
    codec.thread_count = 2
    return codec


def _encode(codec: Any, frames: list[av.VideoFrame], force_intra: bool) -> list[bytes]:
    out: list[bytes] = []
    for index, frame in enumerate(frames):
        frame.pts = index
        if force_intra:
            frame.pict_type = av.video.frame.PictureType.I
        data = b"".join(bytes(p) for p in codec.encode(frame))
        out.append(data)
    tail = b"".join(bytes(p) for p in codec.encode(None))
    if tail:
        out[-1] += tail
    if len(out) != len(frames) or not all(out):
        raise RuntimeError("libvpx did not return one packet per frame")
    return out


def _opus_packets() -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_CLOCK
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = 32000
    codec.time_base = Fraction(1, AUDIO_CLOCK)
    samples = 960
    packets: list[bytes] = []
    tone = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / AUDIO_CLOCK)))
        for i in range(samples * (AUDIO_PACKETS + 4))
    )
    for k in range(AUDIO_PACKETS + 4):
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(tone[k * samples * 2 : (k + 1) * samples * 2])
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = k * samples
        frame.time_base = Fraction(1, AUDIO_CLOCK)
        packets += [bytes(p) for p in codec.encode(frame)]
    if len(packets) < AUDIO_PACKETS:
        raise RuntimeError("libopus returned too few packets")
    return packets[:AUDIO_PACKETS]


def build_clip() -> Clip:
    rng = random.Random(7)
    # Fresh low-amplitude noise (luma 120..135) in every frame keeps the CBR encoder at its target rate
    # (~1 Mbit/s, like a camera picture) instead of the few kbit/s a static test pattern needs.
    amplitude = bytes(120 + b // 16 for b in range(256))
    size = WIDTH * (HEIGHT - GRID_HEIGHT)
    frames = [draw(index, rng.randbytes(size).translate(amplitude)) for index in range(CLIP_FRAMES)]
    delta = _encode(_vp8_encoder(VIDEO_BITRATE, False), frames, False)
    intra = _encode(_vp8_encoder(KEYFRAME_BITRATE, True), frames, True)
    return Clip(delta, intra, _opus_packets())


def load_clip(path: Path) -> Clip:
    """The cached clip at ``path``, encoding it first if missing or stale."""
    if path.exists():
        with path.open("rb") as handle:
            version, clip = pickle.load(handle)
        if version == CLIP_VERSION:
            return clip  # type: ignore[no-any-return]
    clip = build_clip()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        pickle.dump((CLIP_VERSION, clip), handle)
    tmp.replace(path)
    return clip


# --- sending ---------------------------------------------------------------------------------------------------------


@dataclass
class SendLog:
    """What a track sent: sequence numbers and CLOCK_MONOTONIC send times (ns)."""

    stream_id: int
    kind: str
    times: list[int] = field(default_factory=list)  # index = sequence number
    keyframes_on_request: int = 0

    def count_between(self, start_ns: int, end_ns: int) -> int:
        return sum(1 for t in self.times if start_ns <= t < end_ns)


# aiortc's VP8 packetiser cuts a frame into chunks of PACKET_MAX minus the payload descriptor (3 bytes, or 4 with
# a 15-bit picture id).  The trailer must end up whole in the last packet, so the frame is padded when the last
# chunk would be shorter than the trailer (libvpx ignores bytes after the last partition).
_CHUNKS = tuple(PACKET_MAX - descriptor for descriptor in (3, 4))


def padded(payload: bytes) -> bytes:
    pad = 0
    while any(0 < (len(payload) + pad + TRAILER.size) % chunk < TRAILER.size for chunk in _CHUNKS):
        pad += 1
    return payload + bytes(pad) if pad else payload


class _ClipTrack(MediaStreamTrack):
    def __init__(self, stream_id: int, period: float) -> None:
        super().__init__()
        self.log = SendLog(stream_id, self.kind)
        self._period = period
        self._start: float | None = None
        self.sender: RTCRtpSender | None = None

    async def _pace(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        seq = len(self.log.times)
        now = time.monotonic()
        if self._start is None:
            self._start = now
        target = self._start + seq * self._period
        if target > now:
            await asyncio.sleep(target - now)
        elif now - target > 1.0:  # starved for a long time: restart the schedule instead of bursting
            self._start = now - seq * self._period
        return seq

    def _packet(self, payload: bytes, seq: int, pts: int, clock: int, keyframe: bool) -> av.Packet:
        sent = now_ns()
        self.log.times.append(sent)
        packet = av.Packet(padded(payload) + TRAILER.pack(MAGIC, self.log.stream_id, seq, sent))
        packet.pts = pts
        packet.time_base = Fraction(1, clock)
        packet.is_keyframe = keyframe
        return packet


class ClipVideoTrack(_ClipTrack):
    """Loops the pre-encoded clip at 30 fps; answers a PLI/FIR with the intra copy of the next frame."""

    kind = "video"

    def __init__(self, clip: Clip, stream_id: int) -> None:
        super().__init__(stream_id, 1 / FPS)
        self._clip = clip

    def _keyframe_requested(self) -> bool:
        sender = self.sender
        if sender is None or not getattr(sender, "_RTCRtpSender__force_keyframe", False):
            return False
        sender._RTCRtpSender__force_keyframe = False  # type: ignore[attr-defined]
        return True

    async def recv(self) -> av.Packet:
        seq = await self._pace()
        index = seq % CLIP_FRAMES
        requested = self._keyframe_requested() and index != 0
        if requested:
            self.log.keyframes_on_request += 1
        intra = requested or index == 0  # frame 0 of the clip is a keyframe of the delta stream itself
        payload = self._clip.intra[index] if requested else self._clip.delta[index]
        return self._packet(payload, seq, seq * (VIDEO_CLOCK // FPS), VIDEO_CLOCK, intra)


class ClipAudioTrack(_ClipTrack):
    """Loops one second of Opus packets (20 ms each)."""

    kind = "audio"

    def __init__(self, clip: Clip, stream_id: int) -> None:
        super().__init__(stream_id, 0.02)
        self._clip = clip

    async def recv(self) -> av.Packet:
        seq = await self._pace()
        return self._packet(self._clip.opus[seq % len(self._clip.opus)], seq, seq * 960, AUDIO_CLOCK, True)
