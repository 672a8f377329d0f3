"""Recording segments from the spool into each object store: verified, retried with backoff, resumed, bounded."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable
from fractions import Fraction
from pathlib import Path

import av
import pytest

from recordings.segments import TrackManifest, TrackSegmenter
from recordings.upload import SpaceReport, SpoolUploader
from server.objectstore import ObjectStore
from signalling.sfu import EncodedFrame


def vp8_frames(seconds: float, fps: int = 15) -> list[EncodedFrame]:
    """Real VP8 frames (a keyframe every second) from PyAV's encoder, as the SFU would hand them on."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 160, 120, "yuv420p"  # type: ignore[attr-defined]
    enc.time_base = Fraction(1, 90000)
    enc.options = {"deadline": "realtime", "g": str(fps)}
    out = []
    for i in range(int(seconds * fps)):
        frame = av.VideoFrame(160, 120, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 7) % 256]) * plane.buffer_size)
        frame.pts = i * (90000 // fps)
        frame.time_base = Fraction(1, 90000)
        for packet in enc.encode(frame):  # type: ignore[attr-defined]
            out.append(EncodedFrame.from_receiver("video/VP8", 90000, bytes(packet), int(packet.pts)))
    return out


def make_spool(spool: Path, seconds: float = 3.5, *, ended: bool = True) -> Path:
    folder = spool / "session-7" / "p1" / "camera-s1"
    manifest = TrackManifest("7", "p1", "s1", "video", "camera", "video/vp8", 90000, recording_start=1000.0)
    seg = TrackSegmenter(folder, manifest, segment_seconds=1.0)
    for frame in vp8_frames(seconds):
        seg.write(frame, 1000.0 + float(frame.pts * frame.time_base))
    if ended:
        seg.close()
    return folder


class Flaky:
    """A store whose puts of keys ending in ``failing`` fail the first ``n`` times, then pass through."""

    def __init__(self, inner: ObjectStore, failing: str, n: int) -> None:
        self.inner, self.failing, self.n = inner, failing, n
        self.puts: list[str] = []

    async def put(self, key: str, data: AsyncIterable[bytes], **kw: object):  # type: ignore[no-untyped-def]
        self.puts.append(key)
        if key.endswith(self.failing) and self.puts.count(key) <= self.n:
            async for _ in data:
                pass
            raise OSError("store unreachable")
        return await self.inner.put(key, data, **kw)  # type: ignore[arg-type]

    async def stat(self, key: str):  # type: ignore[no-untyped-def]
        return await self.inner.stat(key)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_segments_uploaded_verified_and_resumed(store: ObjectStore, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    folder = make_spool(spool)
    manifest = TrackManifest.load(folder)
    assert len(manifest.segments) >= 3
    uploader = SpoolUploader(spool, store)
    stats = await uploader.upload_pending()
    assert stats.uploaded == len(manifest.segments) + 1 and stats.pending == 0  # segments + the manifest
    for seg in manifest.segments:
        stored = await store.stat(f"recordings/session-7/p1/camera-s1/{seg.file}")
        assert (stored.size, stored.sha256) == (seg.size, seg.sha256)
        assert hashlib.sha256((folder / seg.file).read_bytes()).hexdigest() == seg.sha256
    stored_manifest = await store.stat("recordings/session-7/p1/camera-s1/manifest.json")
    assert stored_manifest.content_type == "application/json"

    # A restarted process (new uploader) finds nothing left to do.
    again = SpoolUploader(spool, store)
    assert (await again.upload_pending()).uploaded == 0


async def test_open_track_uploads_segments_not_manifest(store: ObjectStore, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    make_spool(spool, ended=False)  # still recording: the open segment is a .part file, not listed
    stats = await SpoolUploader(spool, store).upload_pending()
    keys = [o.key async for o in store.list("recordings/")]
    assert stats.uploaded == len(keys) and keys and all(k.endswith(".webm") for k in keys)
    assert not any(".part" in k for k in keys)


async def test_failures_back_off_and_retry(store: ObjectStore, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    folder = make_spool(spool)
    segments = TrackManifest.load(folder).segments
    first = segments[0].file
    flaky, clock = Flaky(store, first, 2), Clock()
    uploader = SpoolUploader(spool, flaky, retry_base=1.0, monotonic=clock)  # type: ignore[arg-type]
    stats = await uploader.upload_pending()
    assert (stats.failures, stats.pending, stats.uploaded) == (1, 1, len(segments) - 1)  # the others went through
    await uploader.upload_pending()  # inside the 1 s backoff: not retried
    assert flaky.puts.count(flaky.puts[0]) == 1
    clock.now = 1.5  # retried, fails again: the delay doubles to 2 s
    await uploader.upload_pending()
    assert uploader.stats.failures == 2
    clock.now = 3.0
    await uploader.upload_pending()
    assert uploader.stats.pending == 1 and uploader.stats.failures == 2, "still backing off"
    clock.now = 3.6
    stats = await uploader.upload_pending()
    assert stats.pending == 0 and stats.uploaded == len(segments) + 1  # and the manifest
    assert first in SpoolUploader.uploaded(folder)


async def test_space_alerts_instead_of_dropping(store: ObjectStore, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    folder = make_spool(spool)
    alerts: list[SpaceReport] = []
    uploader = SpoolUploader(spool, store, spool_max_bytes=100, min_free_bytes=1 << 62, on_alert=alerts.append)
    await uploader.upload_pending()
    assert len(alerts) == 1 and len(alerts[0].problems) == 2
    assert all((folder / s.file).exists() for s in TrackManifest.load(folder).segments), "nothing deleted"
    await uploader.upload_pending()
    assert len(alerts) == 1, "one alert per episode, not one per pass"


@pytest.mark.parametrize("store", ["filesystem"], indirect=True)
async def test_changed_segment_is_refused_by_the_store(store: ObjectStore, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    folder = make_spool(spool)
    seg = TrackManifest.load(folder).segments[0]
    (folder / seg.file).write_bytes(b"not what the manifest says")
    uploader = SpoolUploader(spool, store)
    stats = await uploader.upload_pending()
    assert stats.failures == 1 and stats.pending == 1
    assert seg.file not in SpoolUploader.uploaded(folder)
