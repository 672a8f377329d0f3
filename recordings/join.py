"""After the session: a participant's segments joined into one playable file, by remux (no re-encode).

Every segment already carries its frames' positions on the session's
timeline (milliseconds, see :mod:`recordings.segments`), so joining is a
merge: the packets of the participant's audio and camera tracks, segment
after segment, interleaved by position into one WebM (Matroska for H.264),
shifted so the file starts at the participant's first frame.  Segments are
checked against their manifest (size and SHA-256) first; a segment that
does not match is refused, never silently used.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from .segments import MANIFEST, TrackManifest, container_for

__all__ = ["JoinResult", "SegmentMismatch", "join_tracks", "participant_tracks", "verify_segments"]

MS = Fraction(1, 1000)


class SegmentMismatch(Exception):
    """A segment's bytes differ from its manifest (size or SHA-256)."""


@dataclass(frozen=True)
class JoinResult:
    path: Path
    #: Position of the file's zero on its recorder's timeline (seconds after that recorder started).
    offset: float
    duration: float
    packets: dict[str, int]
    #: The file's zero on the wall clock (Unix seconds): what places pieces recorded by different processes (a
    #: restart, a failover) on one session timeline, since each recorder's own timeline starts at zero.
    wall_start: float = 0.0


def participant_tracks(directory: Path) -> list[tuple[Path, TrackManifest]]:
    """The recorded tracks of one participant's folder, as (folder, manifest)."""
    return [(d, TrackManifest.load(d)) for d in sorted(directory.iterdir()) if (d / MANIFEST).is_file()]


def verify_segments(folder: Path, manifest: TrackManifest) -> None:
    for seg in manifest.segments:
        path = folder / seg.file
        data = path.read_bytes()
        if len(data) != seg.size or hashlib.sha256(data).hexdigest() != seg.sha256:
            raise SegmentMismatch(f"{path} does not match its manifest")


def _packets(folder: Path, manifest: TrackManifest, key: int) -> Iterator[tuple[int, int, bytes, bool]]:
    for seg in manifest.segments:
        with av.open(str(folder / seg.file)) as container:
            for packet in container.demux():
                if packet.size == 0 or packet.pts is None:
                    continue
                ms = round(packet.pts * packet.time_base * 1000)
                yield ms, key, bytes(packet), bool(packet.is_keyframe)


def join_tracks(tracks: list[tuple[Path, TrackManifest]], out: Path) -> JoinResult:
    """Remux the given tracks (at most one per kind makes a normal player happy) into ``out``."""
    tracks = [(f, m) for f, m in tracks if m.segments]
    if not tracks:
        raise ValueError("nothing recorded")
    for folder, manifest in tracks:
        verify_segments(folder, manifest)
    formats = {container_for(m.mime_type)[0] for _, m in tracks}
    fmt = "webm" if formats == {"webm"} else "matroska"
    # Each manifest's times count from its own recorder's start; put them on one clock first.
    base = min(m.recording_start for _, m in tracks)
    shift = [round((m.recording_start - base) * 1000) for _, m in tracks]
    start = min(m.recording_start - base + m.segments[0].start for _, m in tracks)
    end = max(m.recording_start - base + m.segments[-1].end for _, m in tracks)
    zero = round(start * 1000)
    counts: dict[str, int] = {}
    tmp = out.with_name(out.name + ".part")
    with av.open(str(tmp), "w", format=fmt) as container:
        streams = []
        for folder, m in tracks:
            # The first segment's stream is the template: codec parameters (H.264 SPS/PPS, OpusHead) carry over.
            with av.open(str(folder / m.segments[0].file)) as first:
                stream = container.add_stream_from_template(first.streams[0])
            stream.time_base = MS
            streams.append(stream)
            counts[f"{m.kind}:{m.label}"] = 0
        last = [-1] * len(tracks)
        shifted = (
            ((ms + shift[i], k, data, kf) for ms, k, data, kf in _packets(f, m, i)) for i, (f, m) in enumerate(tracks)
        )
        merged = heapq.merge(*shifted, key=lambda p: (p[0], p[1]))
        for ms, key, data, keyframe in merged:
            pts = max(ms - zero, last[key] + 1)
            last[key] = pts
            packet = av.Packet(data)
            packet.pts = packet.dts = pts
            packet.time_base = MS
            packet.stream = streams[key]
            packet.is_keyframe = keyframe
            container.mux(packet)
            m = tracks[key][1]
            counts[f"{m.kind}:{m.label}"] += 1
    tmp.replace(out)
    return JoinResult(out, start, end - start, counts, wall_start=base + start)
