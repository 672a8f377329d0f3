"""The session composite: every participant's joined file in one grid video with the audio mixed.

Unlike the live path this transcodes (decode, scale, tile, mix, encode
VP8/Opus into WebM), so it runs outside the call: as its own process at a
lower CPU priority (``python -m recordings.composite``, started with
``os.nice``), after the session has ended.  Inputs are placed on the
session's timeline by their offsets (seconds from the session's first
frame), so a participant who joined late appears late; inputs naming the
same ``TILE`` (one person's pieces across rejoins and restarts) share one
tile, the later piece continuing it; a tile is black while
its participant has no picture, and a participant's last picture stays until
their file ends.

Usage: ``python -m recordings.composite OUT.webm IN1.webm@OFFSET1[#TILE] IN2.webm@OFFSET2[#TILE] ... [--size 640x480]
[--fps 15] [--nice 10]``; prints one JSON line with the output's duration, frames and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av import AudioFrame, VideoFrame

__all__ = ["CompositeResult", "Input", "compose", "grid"]

RATE = 48000
CHUNK = 960  # 20 ms of audio per output frame


@dataclass(frozen=True)
class Input:
    path: Path
    #: Where the file's zero sits on the session timeline (seconds).
    offset: float
    #: Inputs with the same tile share one tile: one person's pieces across rejoins (default: one tile per file).
    tile: str = ""


@dataclass(frozen=True)
class CompositeResult:
    path: Path
    duration: float
    video_frames: int
    audio_frames: int
    seconds: float
    tiles: int = 0


def grid(n: int, width: int, height: int) -> tuple[int, int, int, int]:
    """(columns, rows, tile width, tile height) for ``n`` tiles in a ``width`` x ``height`` picture (even sizes)."""
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    return cols, rows, (width // cols) & ~1, (height // rows) & ~1


def _duration(path: Path) -> float:
    with av.open(str(path)) as c:
        return float(c.duration or 0) / 1_000_000


def _video(path: Path, offset: float, size: tuple[int, int]) -> Iterator[tuple[float, list[bytes]]]:
    """(time on the session timeline, the three yuv420p planes scaled to ``size`` without row padding)."""
    w, h = size
    with av.open(str(path)) as c:
        if not c.streams.video:
            return
        for frame in c.decode(video=0):
            if frame.pts is None:
                continue
            scaled = frame.reformat(width=w, height=h, format="yuv420p")
            planes = []
            for i, plane in enumerate(scaled.planes):
                pw, ph = (w, h) if i == 0 else (w // 2, h // 2)
                data, stride = bytes(plane), plane.line_size
                planes.append(data if stride == pw else b"".join(data[r * stride : r * stride + pw] for r in range(ph)))
            yield offset + float(frame.pts * (frame.time_base or 0)), planes


def _audio(path: Path, offset: float) -> Iterator[tuple[int, array[int]]]:
    """(first sample's index on the session timeline at 48 kHz, mono s16 samples)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return
        position: int | None = None
        for frame in c.decode(audio=0):
            for out in resampler.resample(frame):
                if position is None:
                    assert frame.pts is not None
                    position = round((offset + float(frame.pts * (frame.time_base or 0))) * RATE)
                samples = array("h", bytes(out.planes[0])[: out.samples * 2])
                yield position, samples
                position += out.samples


class _AudioSource:
    """Hands out an input's samples chunk by chunk on the output's sample clock (silence where it has none)."""

    def __init__(self, frames: Iterator[tuple[int, array[int]]]) -> None:
        self.frames = frames
        self.buffer = array("h")
        self.start = 0  # timeline index of buffer[0]
        self.ended = False

    def take(self, at: int, n: int) -> array[int]:
        """The ``n`` samples from timeline index ``at`` (zeros where this input has none); drops what is before."""
        while not self.ended and self.start + len(self.buffer) < at + n:
            try:
                position, samples = next(self.frames)
            except StopIteration:
                self.ended = True
                break
            end = self.start + len(self.buffer)
            if not self.buffer and end <= position:
                self.start, self.buffer = position, array("h", samples)
                continue
            gap = position - end
            if gap > 0:
                self.buffer.extend(array("h", bytes(2 * gap)))
            self.buffer.extend(samples if gap >= 0 else samples[-gap:])
        out = array("h", bytes(2 * n))
        lo, hi = max(at, self.start), min(at + n, self.start + len(self.buffer))
        if hi > lo:
            out[lo - at : hi - at] = self.buffer[lo - self.start : hi - self.start]
        cut = min(max(0, at + n - self.start), len(self.buffer))
        del self.buffer[:cut]
        self.start += cut
        return out


def compose(inputs: list[Input], out: Path, *, size: tuple[int, int] = (640, 480), fps: int = 15) -> CompositeResult:
    """Render the composite of ``inputs`` into ``out`` (WebM, VP8 + Opus)."""
    if not inputs:
        raise ValueError("no inputs")
    started = time.perf_counter()
    width, height = size
    keys = list(dict.fromkeys(i.tile or str(i.path) for i in inputs))  # tiles in the order they first appear
    tile_of = [keys.index(i.tile or str(i.path)) for i in inputs]
    cols, _rows, tw, th = grid(len(keys), width, height)
    duration = max(i.offset + _duration(i.path) for i in inputs)
    total = max(1, math.ceil(duration * fps))
    videos = [_video(i.path, i.offset, (tw, th)) for i in inputs]
    pending: list[tuple[float, list[bytes]] | None] = [next(v, None) for v in videos]
    # Per tile: the picture shown.  A person's later piece (a rejoin) takes over the tile their earlier one held.
    current: list[list[bytes] | None] = [None] * len(keys)
    audios = [_AudioSource(_audio(i.path, i.offset)) for i in inputs]
    black = [bytes(width * height), bytes([128]) * (width * height // 4), bytes([128]) * (width * height // 4)]
    tmp = out.with_name(out.name + ".part")
    vframes = aframes = 0
    with av.open(str(tmp), "w", format="webm") as container:
        vs = container.add_stream("libvpx", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"deadline": "realtime", "cpu-used": "8", "b": "800k"}
        aus = container.add_stream("libopus", rate=RATE)
        aus.layout = "mono"
        sample = 0
        for k in range(total):
            t = k / fps
            for i, video in enumerate(videos):
                while pending[i] is not None and pending[i][0] <= t:  # type: ignore[index]
                    current[tile_of[i]] = pending[i][1]  # type: ignore[index]
                    pending[i] = next(video, None)
            planes = [bytearray(p) for p in black]
            for i, tile in enumerate(current):
                if tile is None:
                    continue
                x, y = (i % cols) * tw, (i // cols) * th
                for p in range(3):
                    sub = 1 if p == 0 else 2  # chroma planes are half size both ways
                    pw, ph, px, py, full = tw // sub, th // sub, x // sub, y // sub, width // sub
                    src, dst = tile[p], planes[p]
                    for r in range(ph):
                        start = (py + r) * full + px
                        dst[start : start + pw] = src[r * pw : (r + 1) * pw]
            frame = VideoFrame(width, height, "yuv420p")
            for p, data in enumerate(planes):
                _update(frame, p, bytes(data), width if p == 0 else width // 2)
            frame.pts, frame.time_base = k, Fraction(1, fps)
            for packet in vs.encode(frame):
                container.mux(packet)
            vframes += 1
            # Audio up to the end of this video frame, in 20 ms chunks, mixed with clipping.
            while sample < round((k + 1) / fps * RATE):
                mixed = [sum(v) for v in zip(*(a.take(sample, CHUNK) for a in audios), strict=True)]
                pcm = array("h", (32767 if v > 32767 else -32768 if v < -32768 else v for v in mixed))
                aframe = AudioFrame(format="s16", layout="mono", samples=CHUNK)
                aframe.planes[0].update(pcm.tobytes())
                aframe.sample_rate, aframe.pts, aframe.time_base = RATE, sample, Fraction(1, RATE)
                for packet in aus.encode(aframe):
                    container.mux(packet)
                aframes += 1
                sample += CHUNK
        for stream in (vs, aus):
            for packet in stream.encode(None):
                container.mux(packet)
    tmp.replace(out)
    return CompositeResult(out, total / fps, vframes, aframes, time.perf_counter() - started, len(keys))


def _update(frame: VideoFrame, index: int, data: bytes, width: int) -> None:
    plane = frame.planes[index]
    if plane.line_size == width:
        plane.update(data)
        return
    rows = len(data) // width
    padded = b"".join(data[r * width : (r + 1) * width].ljust(plane.line_size, b"\0") for r in range(rows))
    plane.update(padded)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Render a session composite (grid video, mixed audio).")
    p.add_argument("out", type=Path)
    p.add_argument(
        "inputs", nargs="+", help="FILE@OFFSET[#TILE] (offset in seconds on the session timeline; TILE: one person)"
    )
    p.add_argument("--size", default="640x480")
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--nice", type=int, default=10, help="lower this process's CPU priority by this much")
    args = p.parse_args(argv)
    if args.nice:
        os.nice(args.nice)
    w, h = (int(v) for v in args.size.lower().split("x"))
    inputs = []
    for spec in args.inputs:
        path, _, rest = spec.rpartition("@")
        offset, _, tile = rest.partition("#")
        inputs.append(Input(Path(path), float(offset), tile))
    result = compose(inputs, args.out, size=(w, h), fps=args.fps)
    print(
        json.dumps(
            {
                "path": str(result.path),
                "duration": result.duration,
                "video_frames": result.video_frames,
                "audio_frames": result.audio_frames,
                "tiles": result.tiles,
                "seconds": round(result.seconds, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
