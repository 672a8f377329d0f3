"""One track's encoded frames into crash-safe segment files, by remux (never decoded or re-encoded).

A :class:`TrackSegmenter` receives :class:`~signalling.sfu.EncodedFrame` s in
order with the wall-clock time each arrived, and writes them into a
sequence of small container files (VP8/Opus: WebM; H.264: Matroska).  A
segment is closed when it has lasted ``segment_seconds`` and the next frame
may start one (any audio packet; a video keyframe, which it asks the
publisher for as soon as the segment is due), so every segment decodes on
its own.  Closing a segment means: the muxer's trailer written, the file
``fsync``ed, its size and SHA-256 computed from the bytes on disk, and the
track's manifest rewritten atomically (temporary file, ``fsync``, rename,
``fsync`` of the folder).  The manifest therefore only ever lists complete,
durable segments; a crash loses at most the open one (its partial file is
left with a ``.part`` suffix and ignored).

Timestamps: every frame gets a position on the recording's timeline,
``t = (arrival of the track's first frame - recording start) + (pts - first
pts) * time_base``; the anchor is the wall clock, the progression is the
sender's RTP clock, so the tracks of one participant (and of all
participants) stay aligned however their RTP timestamps were offset.
Positions are written in milliseconds (WebM's unit).  The manifest records
for each segment its wall-clock and RTP range, frames, size and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.container import OutputContainer
from av.stream import Stream
from av.video.stream import VideoStream

from signalling.sfu import EncodedFrame

__all__ = ["MANIFEST", "SegmentInfo", "TrackManifest", "TrackSegmenter", "add_stream", "container_for", "vp8_size"]

MANIFEST = "manifest.json"
MS = Fraction(1, 1000)

#: mime type -> (container format, file suffix, PyAV stream codec name)
_CONTAINERS: dict[str, tuple[str, str, str]] = {
    "video/vp8": ("webm", ".webm", "libvpx"),
    "audio/opus": ("webm", ".webm", "libopus"),
    "video/h264": ("matroska", ".mkv", "h264"),
}


def container_for(mime_type: str) -> tuple[str, str, str]:
    try:
        return _CONTAINERS[mime_type.lower()]
    except KeyError:
        raise ValueError(f"cannot record {mime_type}") from None


def vp8_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe's header (RFC 6386 section 9.1), or None for an interframe."""
    if len(data) < 10 or data[0] & 1 or data[3:6] != b"\x9d\x01\x2a":
        return None
    return int.from_bytes(data[6:8], "little") & 0x3FFF, int.from_bytes(data[8:10], "little") & 0x3FFF


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class SegmentInfo:
    index: int
    file: str
    #: Position of the first and last frame on the recording's timeline (seconds).
    start: float
    end: float
    #: Wall-clock (Unix seconds) of the first and last frame's arrival.
    wall_start: float
    wall_end: float
    #: RTP timestamps (the track's clock) of the first and last frame.
    rtp_start: int
    rtp_end: int
    frames: int
    size: int
    sha256: str


@dataclass
class TrackManifest:
    """What is durable of one track's recording (``manifest.json`` next to its segments)."""

    session: str
    participant_id: str
    stream_id: str
    kind: str
    label: str
    mime_type: str
    clock_rate: int
    recording_start: float
    width: int = 0
    height: int = 0
    segments: list[SegmentInfo] = field(default_factory=list)
    dropped_frames: int = 0
    ended: bool = False

    def save(self, directory: Path) -> None:
        tmp = directory / (MANIFEST + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(asdict(self), f, ensure_ascii=False, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / MANIFEST)
        _fsync_dir(directory)

    @classmethod
    def load(cls, directory: Path) -> TrackManifest:
        raw: dict[str, Any] = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        segments = [SegmentInfo(**s) for s in raw.pop("segments")]
        return cls(**raw, segments=segments)

    @property
    def duration(self) -> float:
        return self.segments[-1].end - self.segments[0].start if self.segments else 0.0


def add_stream(container: OutputContainer, codec: str, manifest: TrackManifest) -> Stream:
    """A stream to mux ``manifest``'s encoded packets into (its encoder is opened for the header, never fed)."""
    stream: Stream
    if manifest.kind == "video":
        video = container.add_stream(codec, rate=30)
        assert isinstance(video, VideoStream)
        video.width, video.height = manifest.width or 640, manifest.height or 480
        video.pix_fmt = "yuv420p"
        stream = video
    else:
        stream = container.add_stream(codec, rate=manifest.clock_rate)
    stream.time_base = MS
    return stream


class _OpenSegment:
    def __init__(self, path: Path, fmt: str, codec: str, manifest: TrackManifest, first_t: float) -> None:
        self.final = path
        self.path = path.with_name(path.name + ".part")
        self.container = av.open(str(self.path), "w", format=fmt)
        self.stream = add_stream(self.container, codec, manifest)
        self.first_t = first_t
        self.last_ms = -1
        self.frames = 0
        self.wall_start = self.wall_end = 0.0
        self.rtp_start = self.rtp_end = 0
        self.start = self.end = 0.0


class TrackSegmenter:
    """See the module docstring.  Not thread-safe: one writer (thread) per track."""

    def __init__(
        self,
        directory: Path,
        manifest: TrackManifest,
        *,
        segment_seconds: float = 10.0,
        request_keyframe: Callable[[], None] | None = None,
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.segment_seconds = segment_seconds
        self._request_keyframe = request_keyframe
        self._fmt, self._suffix, self._codec = container_for(manifest.mime_type)
        self._open: _OpenSegment | None = None
        self._first: tuple[float, int] | None = None  # (timeline position of the first frame, its pts)
        self._asked = False
        directory.mkdir(parents=True, exist_ok=True)
        manifest.save(directory)

    def position(self, frame: EncodedFrame, arrival: float) -> float:
        if self._first is None:
            self._first = (arrival - self.manifest.recording_start, frame.pts)
        t0, pts0 = self._first
        tb = frame.time_base  # 1/clock rate: plain float arithmetic, no Fraction per frame
        return t0 + (frame.pts - pts0) * tb.numerator / tb.denominator

    def write(self, frame: EncodedFrame, arrival: float) -> None:
        """Add one frame that arrived at wall-clock ``arrival``; opens and closes segments as needed."""
        video = self.manifest.kind == "video"
        if video and self.manifest.mime_type == "video/vp8" and frame.keyframe:
            size = vp8_size(frame.data)
            if size is not None and size != (self.manifest.width, self.manifest.height):
                # A new resolution starts a new segment (a stream's size is fixed per file).
                if self._open is not None and self.manifest.width:
                    self._close()
                self.manifest.width, self.manifest.height = size
        if self._open is None and video and not frame.keyframe:
            self._ask()
            return  # a segment starts with a keyframe: wait for one
        t = self.position(frame, arrival)
        seg = self._open
        if seg is not None and t - seg.start >= self.segment_seconds:
            if not video or frame.keyframe:
                self._close()
                seg = None
            else:
                self._ask()
        if seg is None:
            index = len(self.manifest.segments) + 1
            name = f"{index:06d}{self._suffix}"
            seg = self._open = _OpenSegment(self.directory / name, self._fmt, self._codec, self.manifest, t)
            seg.start, seg.wall_start, seg.rtp_start = t, arrival, frame.pts
            self._asked = False
        ms = max(round(t * 1000), seg.last_ms + 1)  # strictly increasing in the file
        packet = av.Packet(frame.data)
        packet.pts = packet.dts = ms
        packet.time_base = MS
        packet.stream = seg.stream
        packet.is_keyframe = frame.keyframe
        seg.container.mux(packet)
        seg.last_ms = ms
        seg.frames += 1
        seg.end, seg.wall_end, seg.rtp_end = t, arrival, frame.pts

    def dropped(self, n: int = 1) -> None:
        self.manifest.dropped_frames += n

    def close(self) -> None:
        """Close the open segment (if any) and mark the track ended in its manifest."""
        if self._open is not None:
            self._close()
        self.manifest.ended = True
        self.manifest.save(self.directory)

    def _ask(self) -> None:
        if not self._asked and self._request_keyframe is not None:
            self._asked = True
            self._request_keyframe()

    def _close(self) -> None:
        seg, self._open = self._open, None
        assert seg is not None
        seg.container.close()
        with seg.path.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(seg.path, seg.final)
        _fsync_dir(self.directory)
        self.manifest.segments.append(
            SegmentInfo(
                index=len(self.manifest.segments) + 1,
                file=seg.final.name,
                start=round(seg.start, 6),
                end=round(seg.end, 6),
                wall_start=seg.wall_start,
                wall_end=seg.wall_end,
                rtp_start=seg.rtp_start,
                rtp_end=seg.rtp_end,
                frames=seg.frames,
                size=seg.final.stat().st_size,
                sha256=_sha256(seg.final),
            )
        )
        self.manifest.save(self.directory)
