"""H.264 is recorded into Matroska segments by remux (the codec Chromium may negotiate instead of VP8)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

from recordings.join import join_tracks
from recordings.segments import TrackManifest, TrackSegmenter
from signalling.sfu import EncodedFrame


def h264_frames(n: int, fps: int = 15) -> list[EncodedFrame]:
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 320, 240, "yuv420p"  # type: ignore[attr-defined]
    enc.time_base = Fraction(1, 90000)
    enc.options = {"tune": "zerolatency", "preset": "ultrafast", "g": str(fps)}
    out = []
    for i in range(n):
        frame = av.VideoFrame(320, 240, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 5) % 256]) * plane.buffer_size)
        frame.pts, frame.time_base = i * (90000 // fps), Fraction(1, 90000)
        for packet in enc.encode(frame):  # type: ignore[attr-defined]
            out.append(EncodedFrame.from_receiver("video/H264", 90000, bytes(packet), int(packet.pts)))
    return out


def test_h264_segments_and_join(tmp_path: Path) -> None:
    frames = h264_frames(60)
    assert frames[0].keyframe and sum(f.keyframe for f in frames) == 4
    manifest = TrackManifest("s", "p", "x", "video", "camera", "video/h264", 90000, recording_start=0.0)
    seg = TrackSegmenter(tmp_path / "camera", manifest, segment_seconds=1.0)
    for f in frames:
        seg.write(f, float(f.pts * f.time_base))
    seg.close()
    assert [s.file for s in manifest.segments] == ["000001.mkv", "000002.mkv", "000003.mkv", "000004.mkv"]
    for s in manifest.segments:
        with av.open(str(tmp_path / "camera" / s.file)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            assert sum(1 for _ in c.decode(video=0)) == s.frames
    joined = join_tracks([(tmp_path / "camera", manifest)], tmp_path / "joined.mkv")
    with av.open(str(joined.path)) as c:
        decoded = list(c.decode(video=0))
    assert len(decoded) == 60 and (decoded[0].width, decoded[0].height) == (320, 240)
