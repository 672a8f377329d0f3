"""One tile per person in the composite, pieces placed on the session timeline (issue 19, items 16 and 17)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
from av import VideoFrame

from recordings.composite import Input, compose, main

FPS = 15


def _clip(path: Path, rgb: tuple[int, int, int], seconds: float) -> Path:
    """A small VP8 WebM of one colour (no audio)."""
    with av.open(str(path), "w", format="webm") as c:
        s = c.add_stream("libvpx", rate=FPS)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for k in range(round(seconds * FPS)):
            frame = _solid(rgb).reformat(format="yuv420p")
            frame.pts, frame.time_base = k, Fraction(1, FPS)
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    return path


def _solid(rgb: tuple[int, int, int]) -> VideoFrame:
    frame = VideoFrame(64, 48, "rgb24")
    plane = frame.planes[0]
    row = bytes(rgb) * 64
    plane.update(b"".join(row.ljust(plane.line_size, b"\0") for _ in range(48)))
    return frame


def _mean(frame: VideoFrame, x0: int, x1: int, y0: int, y1: int) -> tuple[int, int, int]:
    plane = frame.planes[0]
    data, stride = bytes(plane), plane.line_size
    sums, n = [0, 0, 0], 0
    for y in range(y0, y1):
        for x in range(x0, x1):
            i = y * stride + 3 * x
            for k in range(3):
                sums[k] += data[i + k]
            n += 1
    return (sums[0] // n, sums[1] // n, sums[2] // n)


def _tiles_at(path: Path, t: float) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The mean colour of the left and right halves of the composite's frame at ``t`` seconds."""
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            if frame.time is not None and frame.time >= t:
                rgb = frame.reformat(format="rgb24", width=64, height=48)
                return _mean(rgb, 8, 24, 12, 36), _mean(rgb, 40, 56, 12, 36)
    raise AssertionError(f"no frame at {t} s")


def _near(got: tuple[int, int, int], want: tuple[int, int, int]) -> bool:
    return all(abs(a - b) < 40 for a, b in zip(got, want, strict=True))


RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 30)


def test_one_person_rejoining_keeps_one_tile(tmp_path: Path) -> None:
    before = _clip(tmp_path / "a1.webm", RED, 1.0)  # person A, before a restart
    after = _clip(tmp_path / "a2.webm", BLUE, 1.0)  # person A again, 2 s into the session (a rejoin)
    other = _clip(tmp_path / "b.webm", GREEN, 3.0)  # person B throughout
    inputs = [Input(before, 0.0, "uA"), Input(other, 0.0, "uB"), Input(after, 2.0, "uA")]
    result = compose(inputs, tmp_path / "composite.webm")
    assert result.tiles == 2  # BUG: a tile per file, the rejoined person's old tile frozen beside the new one
    assert abs(result.duration - 3.0) <= 0.2  # the later piece is placed at 2 s, not at 0
    left, right = _tiles_at(result.path, 0.5)
    assert _near(left, RED) and _near(right, GREEN), (left, right)
    left, right = _tiles_at(result.path, 2.5)
    assert _near(left, BLUE) and _near(right, GREEN), (left, right)


def test_the_command_line_takes_the_tile(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    a1, a2 = _clip(tmp_path / "a1.webm", RED, 0.5), _clip(tmp_path / "a2.webm", BLUE, 0.5)
    out = tmp_path / "c.webm"
    assert main([str(out), f"{a1}@0#uA", f"{a2}@1.0#uA", "--nice", "0", "--size", "320x240"]) == 0
    assert '"tiles": 1' in capsys.readouterr().out
