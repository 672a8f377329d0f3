"""A real 2-party call through the SFU, recorded with 1 s segments, joined per participant and checked with PyAV.

Each client's camera is a numbered test pattern and its microphone beeps for
100 ms at every whole second, both from one shared start: so in a joined file
the position of video frame ``n`` and of beep ``k`` can be compared with when
they were made, which measures audio/video sync.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import struct
import time
from fractions import Fraction
from pathlib import Path

import av
import pytest
from av import AudioFrame, VideoFrame

from recordings.composite import Input, compose
from recordings.join import SegmentMismatch, join_tracks, participant_tracks, verify_segments
from recordings.recorder import SessionRecorder
from tests.media_harness import Call, Client, ToneAudioTrack, read, until

FPS = 15


class BeepTrack(ToneAudioTrack):
    """Silence with a 100 ms 440 Hz beep at the start of every second after ``start``."""

    def __init__(self, start: float) -> None:
        super().__init__()
        self._start = start
        self._silence = bytes(len(self._pcm))

    async def recv(self) -> AudioFrame:
        frame = await super().recv()
        if (self._count - 1) % 50 >= 5:
            frame.planes[0].update(self._silence)
        return frame


def _beeping_client(participant_id: str, tag: int) -> Client:
    client = Client(participant_id, tag, fps=FPS)
    start = time.monotonic() + 0.2
    assert client.camera is not None
    client.camera._start = start  # frame n is made at start + (n - 1) / FPS
    client.mic = BeepTrack(start)  # beep k at start + k
    return client


def _level(frame: AudioFrame, resampler: av.AudioResampler) -> tuple[float, int]:
    peak = 0
    for f in resampler.resample(frame):
        data = bytes(f.planes[0])[: f.samples * 2]
        samples = struct.unpack(f"<{len(data) // 2}h", data)
        if samples:
            peak = max(peak, max(abs(s) for s in samples))
    assert frame.pts is not None
    return float(frame.pts * frame.time_base), peak


def _check_joined(path: Path, tag: int, expected: float) -> float:
    """Open the joined file, check its streams and duration; returns the audio-video offset (seconds)."""
    with av.open(str(path)) as c:
        assert {s.type for s in c.streams} == {"audio", "video"}
        assert c.streams.video[0].codec_context.name == "vp8"
        assert c.streams.audio[0].codec_context.name == "opus"
        assert c.duration is not None
        assert abs(c.duration / 1_000_000 - expected) <= 0.5, (c.duration, expected)
    video: list[tuple[float, int]] = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            value = read(frame)
            assert value is not None and value[0] == tag
            assert frame.pts is not None
            video.append((float(frame.pts * frame.time_base), value[1]))
    numbers = [n for _, n in video]
    assert numbers == sorted(numbers) and len(numbers) >= FPS * (expected - 1)
    span = video[-1][0] - video[0][0]
    assert abs(span - (numbers[-1] - numbers[0]) / FPS) <= 0.2, "video plays at the rate it was made"
    v_offset = statistics.median(t - (n - 1) / FPS for t, n in video)

    resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
    levels: list[tuple[float, int]] = []
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            levels.append(_level(frame, resampler))
    onsets = [t for (t, p), (_, q) in zip(levels[1:], levels, strict=False) if p > 3000 and q < 1000]
    assert len(onsets) >= expected - 2, onsets
    errors = [t - round(t - v_offset) - v_offset for t in onsets]
    return statistics.median(errors)


def _seconds(path: Path) -> float:
    with av.open(str(path)) as c:
        return float(c.duration or 0) / 1e6


def _tile(frame: VideoFrame, index: int) -> VideoFrame:
    """The ``index``-th 320x480 tile of a 640x480 composite frame, as a frame of its own."""
    frame = frame.reformat(format="yuv420p")
    luma, stride = bytes(frame.planes[0]), frame.planes[0].line_size
    tile = VideoFrame(320, 480, "yuv420p")
    rows = b"".join(luma[r * stride + index * 320 : r * stride + index * 320 + 320] for r in range(480))
    tile.planes[0].update(rows if tile.planes[0].line_size == 320 else _pad(rows, 320, tile.planes[0].line_size))
    for plane in tile.planes[1:]:
        plane.update(b"\x80" * plane.buffer_size)
    return tile


def _pad(rows: bytes, width: int, stride: int) -> bytes:
    return b"".join(rows[i : i + width].ljust(stride, b"\x10") for i in range(0, len(rows), width))


@pytest.mark.parametrize("segment_seconds", [1.0])
async def test_two_party_call_recorded_in_segments(tmp_path: Path, segment_seconds: float) -> None:
    call = Call()
    recorder = SessionRecorder("test-session", tmp_path / "rec", segment_seconds=segment_seconds)
    recorder.attach(call.room)
    a, b = _beeping_client("a", 1), _beeping_client("b", 2)
    try:
        await call.join(a)
        await call.join(b)
        await until(lambda: len(a.from_tag(2)) >= 5 and len(b.from_tag(1)) >= 5, 20, "video both ways")
        await asyncio.sleep(4.5)
    finally:
        await call.close()
    await asyncio.wait_for(recorder.close(), 10)

    assert len(recorder.tracks) == 4
    inputs: list[Input] = []
    for participant, tag in (("a", 1), ("b", 2)):
        tracks = participant_tracks(tmp_path / "rec" / participant)
        assert sorted(m.label for _, m in tracks) == ["audio", "camera"]
        for folder, m in tracks:
            assert m.ended and m.dropped_frames == 0
            assert len(m.segments) >= 4, m.segments
            verify_segments(folder, m)
            # Every segment opens on its own, and (video) starts with a keyframe.
            for seg in m.segments:
                with av.open(str(folder / seg.file)) as c:
                    first = next(c.demux())
                    assert m.kind == "audio" or first.is_keyframe
                assert seg.end - seg.start <= segment_seconds + 0.6
            assert not list(folder.glob("*.part"))
        camera = next(m for _, m in tracks if m.label == "camera")
        assert camera.width == 320 and camera.height == 240
        expected = max(m.segments[-1].end for _, m in tracks) - min(m.segments[0].start for _, m in tracks)
        joined = join_tracks(tracks, tmp_path / f"{participant}.webm")
        assert abs(joined.duration - expected) < 1e-3
        sync = _check_joined(joined.path, tag, expected)
        assert abs(sync) <= 0.1, f"audio/video out of sync by {sync * 1000:.0f} ms"
        inputs.append(Input(joined.path, joined.offset))

    # The session composite: both participants side by side (tiles 320x480), audio mixed, 640x480 overall.
    result = compose(inputs, tmp_path / "composite.webm")
    end = max(i.offset + _seconds(i.path) for i in inputs)
    assert abs(result.duration - end) <= 0.2
    seen: dict[int, list[int]] = {1: [], 2: []}
    with av.open(str(result.path)) as c:
        assert (c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height) == (640, 480)
        assert abs(float(c.duration or 0) / 1e6 - result.duration) <= 0.2
        for frame in c.decode(video=0):
            for index in range(2):
                value = read(_tile(frame, index))
                if value is not None:
                    seen[value[0]].append(value[1])
    for tag in (1, 2):
        # Each tile shows its own participant's frames, in order, for (nearly) the whole call.
        assert seen[tag] == sorted(seen[tag]) and len(seen[tag]) >= FPS * (end - 1.5), (tag, len(seen[tag]))
    with av.open(str(result.path)) as c:
        loud = sum(1 for f in c.decode(audio=0) if _level(f, av.AudioResampler(format="s16", layout="mono"))[1] > 3000)
    assert loud >= 2 * (end - 1), "both participants' beeps are in the mix"


async def test_tampered_segment_is_refused(tmp_path: Path) -> None:
    call = Call()
    recorder = SessionRecorder("s", tmp_path / "rec", segment_seconds=1.0)
    recorder.attach(call.room)
    a = _beeping_client("a", 1)
    try:
        await call.join(a)
        await until(lambda: any(len(t.manifest.segments) >= 2 for t in recorder.tracks), 20, "two segments")
    finally:
        await call.close()
    await recorder.close()
    tracks = participant_tracks(tmp_path / "rec" / "a")
    folder, manifest = next((f, m) for f, m in tracks if m.kind == "video")
    seg = folder / manifest.segments[0].file
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(SegmentMismatch):
        join_tracks(tracks, tmp_path / "out.webm")
    assert not (tmp_path / "out.webm").exists()


def test_beep_track_shape() -> None:
    """The sync test's own source: 5 loud frames then 45 silent ones per second."""

    async def run() -> list[bool]:
        track = BeepTrack(time.monotonic() - 10)  # far in the past: no waiting
        out = []
        for _ in range(100):
            frame = await track.recv()
            out.append(any(bytes(frame.planes[0])))
        return out

    loud = asyncio.run(run())
    assert loud[:5] == [True] * 5 and not any(loud[5:50]) and loud[50:55] == [True] * 5
    assert math.isclose(Fraction(1, 48000) * 960, Fraction(1, 50))
