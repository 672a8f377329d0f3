"""Recording a live session: every published track tapped from the SFU and written by its own thread.

:class:`SessionRecorder` attaches to a :class:`~signalling.sfu.MediaRoom`
through its publication tap; for each publication (now or later) a
:class:`TrackRecorder` adds a frame sink to the publication's encoded track.
The sink runs on the event loop and only stamps the frame with the wall
clock and puts it into a bounded queue; a writer thread per track drains
the queue into a :class:`~recordings.segments.TrackSegmenter`.  So the live
call never waits for the disk: if the writer falls behind and the queue is
full, frames are dropped (video until its next keyframe, asking for one)
and counted in the manifest and in :attr:`TrackRecorder.dropped`.

Folder layout under the recorder's directory::

    <participant_id>/<label>-<stream_id>/manifest.json
                                        /000001.webm, 000002.webm, ...
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from signalling.sfu import EncodedFrame, MediaRoom, Publication

from .segments import TrackManifest, TrackSegmenter

__all__ = ["SessionRecorder", "TrackRecorder"]

log = logging.getLogger(__name__)


class TrackRecorder:
    """One publication into segment files; see the module docstring."""

    def __init__(
        self,
        publication: Publication,
        directory: Path,
        *,
        session: str,
        recording_start: float,
        segment_seconds: float,
        max_queue: int = 600,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        info = publication.info
        self.publication = publication
        self.track = publication.track
        self.kind = info.kind
        self.wall_clock = wall_clock
        self.loop = asyncio.get_running_loop()
        manifest = TrackManifest(
            session=session,
            participant_id=info.participant_id,
            stream_id=info.stream_id,
            kind=info.kind,
            label=info.label,
            mime_type=publication.codec.mimeType.lower(),
            clock_rate=int(publication.codec.clockRate),
            recording_start=recording_start,
        )
        self.segmenter = TrackSegmenter(
            directory, manifest, segment_seconds=segment_seconds, request_keyframe=self._request_keyframe
        )
        self.frames = 0
        self.dropped = 0
        self._waiting_keyframe = False
        #: (frame, wall-clock arrival); None stops the writer.
        self._queue: queue.Queue[tuple[EncodedFrame, float] | None] = queue.Queue(maxsize=max_queue)
        self._done = asyncio.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rec-{info.stream_id[:8]}", daemon=True)
        self._thread.start()
        self.track.add_sink(self._sink)
        self.track.on("ended", self._ended)
        self._closing = False

    @property
    def manifest(self) -> TrackManifest:
        return self.segmenter.manifest

    # on the event loop

    def _sink(self, frame: EncodedFrame) -> None:
        if self._waiting_keyframe:
            if not frame.keyframe:
                self.dropped += 1
                return
            self._waiting_keyframe = False
        try:
            self._queue.put_nowait((frame, self.wall_clock()))
            self.frames += 1
        except queue.Full:
            self.dropped += 1
            if self.kind == "video":
                self._waiting_keyframe = True
                self.track.request_keyframe()

    def _request_keyframe(self) -> None:
        # Called from the writer thread: hand it to the loop.
        self.loop.call_soon_threadsafe(self.track.request_keyframe)

    def _ended(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._closing:
            return
        self._closing = True
        self.track.remove_sink(self._sink)
        self._stopping.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # the writer drains the queue, then sees _stopping

    async def close(self) -> None:
        """Stop tapping, write what is queued, close the last segment."""
        self._stop()
        await self._done.wait()

    # on the writer thread

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.2)
                except queue.Empty:
                    if self._stopping.is_set():
                        break
                    continue
                if item is None:
                    break
                frame, arrival = item
                try:
                    self.segmenter.write(frame, arrival)
                except Exception:
                    log.exception("recording %s: a frame could not be written", self.manifest.stream_id)
                    self.segmenter.dropped()
            self.segmenter.dropped(self.dropped)
            self.segmenter.close()
        except Exception:
            log.exception("recording %s failed", self.manifest.stream_id)
        finally:
            self.loop.call_soon_threadsafe(self._done.set)


class SessionRecorder:
    """Records every track of one room into ``directory`` (see the module docstring)."""

    def __init__(
        self,
        session: str,
        directory: Path,
        *,
        segment_seconds: float = 10.0,
        max_queue: int = 600,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.session = session
        self.directory = directory
        self.segment_seconds = segment_seconds
        self.max_queue = max_queue
        self.wall_clock = wall_clock
        self.started_at = wall_clock()
        self.tracks: list[TrackRecorder] = []
        self._closed = False
        directory.mkdir(parents=True, exist_ok=True)

    def attach(self, room: MediaRoom) -> None:
        room.add_tap(self._publication)

    def _publication(self, publication: Publication) -> None:
        if self._closed:
            return
        info = publication.info
        folder = self.directory / info.participant_id / f"{info.label}-{info.stream_id}"
        self.tracks.append(
            TrackRecorder(
                publication,
                folder,
                session=self.session,
                recording_start=self.started_at,
                segment_seconds=self.segment_seconds,
                max_queue=self.max_queue,
                wall_clock=self.wall_clock,
            )
        )

    async def close(self) -> None:
        self._closed = True
        await asyncio.gather(*(t.close() for t in self.tracks))
