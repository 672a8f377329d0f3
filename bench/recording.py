"""Recording benchmark: CPU per recorded stream, remux (ours) against aiortc's MediaRecorder; composite speed.

Everything is local files in a temporary folder; no network.

1. **Input.** ``--seconds`` (20) of 640x480 VP8 video at ``--fps`` (15; a
   moving test picture, a keyframe every 2 s) and of 48 kHz Opus audio (a
   tone, 20 ms packets), encoded once with PyAV before anything is measured,
   as the SFU receives them from a browser.
2. **Remux (CloudWindow).** The encoded frames go through
   :class:`recordings.segments.TrackSegmenter` (10 s segments, each closed
   with ``fsync`` and a SHA-256, manifest rewritten atomically), as fast as
   they can: CPU seconds (this process, ``time.process_time``) per second of
   media, per stream.
3. **Baseline: aiortc's MediaRecorder.** To record a forwarded stream with
   it, the server has to decode the frames (aiortc's decoder for the
   stream's codec, as its receiver would) and MediaRecorder encodes them
   again (libvpx / libopus into WebM). Same frames, same measure.
   Ratio = baseline CPU / remux CPU (target >= 25x).
4. **Composite.** Two participants' joined 640x480 files of ``--seconds``
   each, rendered by ``python -m recordings.composite`` (the process the
   post-session job starts; here at normal priority): media seconds per
   wall-clock second (target >= 1, real time), and its CPU.

Run: ``.venv/bin/python bench/recording.py [--seconds N] [--smoke]``.  ``--smoke``
(2 s of media) is what ``tests/bench/test_recording_bench_smoke.py`` runs.
Results: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
from aiortc.contrib.media import MediaRecorder  # noqa: E402
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack  # noqa: E402

from recordings.join import join_tracks  # noqa: E402
from recordings.segments import TrackManifest, TrackSegmenter  # noqa: E402
from signalling.sfu import EncodedFrame  # noqa: E402

W, H = 640, 480
VIDEO_CLOCK, AUDIO_RATE = 90000, 48000


def picture(i: int, tag: int) -> av.VideoFrame:
    """A moving diagonal gradient (so the encoder has real work), different per participant ``tag``."""
    base = bytes((x * 3 + tag * 60) & 0xFF for x in range(2 * W + 2 * H))
    shift = (i * 4) % (W + H)
    luma = b"".join(base[shift + y : shift + y + W] for y in range(H))
    frame = av.VideoFrame(W, H, "yuv420p")
    _fill(frame.planes[0], luma, W)
    chroma = bytes([(128 + tag * 20) & 0xFF]) * (W // 2)
    for plane in frame.planes[1:]:
        _fill(plane, chroma * (H // 2), W // 2)
    return frame


def _fill(plane: av.video.plane.VideoPlane, data: bytes, width: int) -> None:
    if plane.line_size == width:
        plane.update(data)
    else:
        rows = len(data) // width
        plane.update(b"".join(data[r * width : (r + 1) * width].ljust(plane.line_size, b"\0") for r in range(rows)))


def encode_video(seconds: float, fps: int, tag: int) -> list[EncodedFrame]:
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = W, H, "yuv420p"  # type: ignore[attr-defined]
    enc.time_base = Fraction(1, VIDEO_CLOCK)
    enc.bit_rate = 1_000_000
    enc.options = {"deadline": "realtime", "cpu-used": "8", "g": str(2 * fps)}
    out: list[EncodedFrame] = []
    for i in range(int(seconds * fps)):
        frame = picture(i, tag)
        frame.pts, frame.time_base = i * (VIDEO_CLOCK // fps), Fraction(1, VIDEO_CLOCK)
        for p in enc.encode(frame):  # type: ignore[attr-defined]
            out.append(EncodedFrame.from_receiver("video/VP8", VIDEO_CLOCK, bytes(p), int(p.pts)))
    return out


def encode_audio(seconds: float) -> list[EncodedFrame]:
    import math
    from array import array

    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.format, enc.layout = AUDIO_RATE, "s16", "mono"  # type: ignore[attr-defined]
    enc.time_base = Fraction(1, AUDIO_RATE)
    out: list[EncodedFrame] = []
    for i in range(int(seconds * 50)):
        pcm = array("h", (int(6000 * math.sin(2 * math.pi * 440 * (i * 960 + n) / AUDIO_RATE)) for n in range(960)))
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, i * 960, Fraction(1, AUDIO_RATE)
        for p in enc.encode(frame):  # type: ignore[attr-defined]
            out.append(EncodedFrame.from_receiver("audio/opus", AUDIO_RATE, bytes(p), int(p.pts)))
    return out


def cpu() -> float:
    return time.process_time()


def remux(frames: list[EncodedFrame], folder: Path, kind: str, label: str, mime: str, rate: int) -> tuple[float, Path]:
    manifest = TrackManifest("bench", "p", label, kind, label, mime, rate, recording_start=0.0)
    seg = TrackSegmenter(folder, manifest, segment_seconds=10.0)
    arrivals = [(f, float(f.pts * f.time_base)) for f in frames]  # as if each arrived on time (not measured)
    start = cpu()
    for f, arrival in arrivals:
        seg.write(f, arrival)
    seg.close()
    return cpu() - start, folder


class Decoded(MediaStreamTrack):
    """What MediaRecorder would need from the SFU: the encoded frames decoded (with aiortc's own decoders)."""

    def __init__(self, kind: str, frames: list[EncodedFrame]) -> None:
        super().__init__()
        self.kind = kind
        self.frames = iter(frames)
        from aiortc.codecs import get_decoder
        from aiortc.rtcrtpparameters import RTCRtpCodecParameters

        codec = (
            RTCRtpCodecParameters(mimeType="video/VP8", clockRate=VIDEO_CLOCK, payloadType=96)
            if kind == "video"
            else RTCRtpCodecParameters(mimeType="audio/opus", clockRate=AUDIO_RATE, channels=2, payloadType=111)
        )
        self.decoder = get_decoder(codec)
        self.pending: list[av.frame.Frame] = []
        self.done = asyncio.Event()

    async def recv(self) -> av.frame.Frame:
        from aiortc.jitterbuffer import JitterFrame

        while not self.pending:
            frame = next(self.frames, None)
            if frame is None:
                self.done.set()
                raise MediaStreamError
            self.pending.extend(self.decoder.decode(JitterFrame(data=frame.data, timestamp=frame.pts)))
        return self.pending.pop(0)


async def media_recorder(kind: str, frames: list[EncodedFrame], path: Path) -> float:
    track = Decoded(kind, frames)
    recorder = MediaRecorder(str(path))
    recorder.addTrack(track)
    start = cpu()
    await recorder.start()
    await track.done.wait()
    await asyncio.sleep(0)
    await recorder.stop()
    return cpu() - start


def composite(inputs: list[tuple[Path, float]], out: Path) -> dict[str, float]:
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    cmd = [sys.executable, "-m", "recordings.composite", str(out), *(f"{p}@{o}" for p, o in inputs), "--nice", "0"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800, check=False)
    wall = time.perf_counter() - wall0
    if run.returncode != 0:
        raise SystemExit(f"composite failed: {run.stderr[-2000:]}")
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    child_cpu = usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime
    return {"duration": result["duration"], "wall": wall, "cpu": child_cpu}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--smoke", action="store_true", help="2 s of media (for CI; targets not judged)")
    args = p.parse_args(argv)
    if args.smoke:
        args.seconds = 2.0
    if not 1 <= args.seconds <= 600:
        p.error("--seconds must be 1..600")
    tmp = Path(tempfile.mkdtemp(prefix="cw-bench-rec-"))
    t0 = time.perf_counter()
    video = {tag: encode_video(args.seconds, args.fps, tag) for tag in (1, 2)}
    audio = encode_audio(args.seconds)
    took = time.perf_counter() - t0
    print(f"input: {args.seconds:.0f} s of {W}x{H} VP8 at {args.fps} fps and Opus, encoded in {took:.1f} s")

    ours_v, vfolder = remux(video[1], tmp / "p1" / "camera-v", "video", "camera", "video/vp8", VIDEO_CLOCK)
    ours_a, afolder = remux(audio, tmp / "p1" / "audio-a", "audio", "audio", "audio/opus", AUDIO_RATE)
    base_v = asyncio.run(media_recorder("video", video[1], tmp / "mr-video.webm"))
    base_a = asyncio.run(media_recorder("audio", audio, tmp / "mr-audio.webm"))

    # Two participants' joined files for the composite.
    _, v2 = remux(video[2], tmp / "p2" / "camera-v", "video", "camera", "video/vp8", VIDEO_CLOCK)
    _, a2 = remux(audio, tmp / "p2" / "audio-a", "audio", "audio", "audio/opus", AUDIO_RATE)
    joined = []
    for name, folders in (("p1", (vfolder, afolder)), ("p2", (v2, a2))):
        tracks = [(f, TrackManifest.load(f)) for f in folders]
        result = join_tracks(tracks, tmp / f"{name}.webm")
        joined.append((result.path, result.offset))
    comp = composite(joined, tmp / "composite.webm")

    s = args.seconds
    print()
    print(f"{'stream':<8} {'remux CPU/s':>12} {'MediaRecorder CPU/s':>20} {'ratio':>8}")
    for name, ours, base in (("video", ours_v, base_v), ("audio", ours_a, base_a)):
        print(f"{name:<8} {ours / s * 1000:>10.2f}ms {base / s * 1000:>18.2f}ms {base / max(ours, 1e-9):>7.1f}x")
    both = (base_v + base_a) / max(ours_v + ours_a, 1e-9)
    print(f"{'a+v':<8} {(ours_v + ours_a) / s * 1000:>10.2f}ms {(base_v + base_a) / s * 1000:>18.2f}ms {both:>7.1f}x")
    speed = comp["duration"] / comp["wall"]
    print(
        f"composite 2 x {W}x{H}: {comp['duration']:.1f} s of media in {comp['wall']:.2f} s wall "
        f"({speed:.1f}x real time), {comp['cpu']:.2f} s CPU"
    )
    if not args.smoke:
        worst = min(base_v / max(ours_v, 1e-9), base_a / max(ours_a, 1e-9))
        print(f"target remux >= 25x cheaper per stream: {'met' if worst >= 25 else 'MISSED'} (worst {worst:.1f}x)")
        print(f"target composite >= 1x real time: {'met' if speed >= 1 else 'MISSED'} ({speed:.1f}x)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
