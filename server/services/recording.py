"""Recording case sessions: the server's side of ``signalling.media.RoomObserver``.

When a session's media room opens on this process, a
:class:`recordings.recorder.SessionRecorder` taps every published track
into segment files under ``recording.spool_dir/session-<id>/`` (see
``recordings/``); the case audit gets ``recording.started``.  When the
room closes, the recorder closes its last segments and the audit gets
``recording.stopped`` with what was recorded (tracks, segments, seconds,
dropped frames).  In the background, :class:`recordings.upload.SpoolUploader`
moves closed segments to the object store (verified, retried, resumed at
start-up) and reports the spool's size and free space as metrics and alerts.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from recordings.recorder import SessionRecorder
from recordings.upload import SegmentStore, SpaceReport, SpoolUploader
from server.clock import Clock
from server.metrics import Metrics
from server.services import audit
from server.settings import RecordingSettings
from server.storage.database import Database
from signalling.application import SessionInfo
from signalling.sfu import MediaRoom

log = logging.getLogger(__name__)

#: Session kinds that are case sessions (all of them today: call, consultation, inspection).
RECORDED_KINDS = frozenset({"call", "consultation", "inspection"})


class SessionRecordings:
    """See the module docstring."""

    def __init__(
        self,
        *,
        db: Database,
        clock: Clock,
        settings: RecordingSettings,
        spool: Path,
        store: SegmentStore,
        metrics: Metrics,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self.recorders: dict[int, SessionRecorder] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.uploader = SpoolUploader(
            spool,
            store,
            prefix="recordings",
            retry_base=settings.upload_retry_base,
            retry_max=settings.upload_retry_max,
            interval=settings.upload_interval,
            spool_max_bytes=settings.spool_max_bytes,
            min_free_bytes=settings.min_free_bytes,
            on_alert=self._space_alert,
        )
        self._counted = (0, 0)

    async def upload_pass(self) -> None:
        """One uploader pass (the background task runs these every ``upload_interval``); updates the metrics."""
        stats = await self.uploader.upload_pending()
        uploaded, failures = self._counted
        self.metrics.recording_uploads.inc(stats.uploaded - uploaded)
        self.metrics.recording_upload_failures.inc(stats.failures - failures)
        self._counted = (stats.uploaded, stats.failures)
        self.metrics.recording_pending.set(stats.pending)
        space = self.uploader.space
        if space is not None:
            self.metrics.recording_spool_bytes.set(space.spool_bytes)
            self.metrics.recording_space_alert.set(1 if space.problems else 0)

    async def run_uploads(self) -> None:
        """Resume and keep uploading whatever the spool holds, until cancelled."""
        while True:
            try:
                await self.upload_pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recording upload pass failed")
            await asyncio.sleep(self.settings.upload_interval)

    def _space_alert(self, report: SpaceReport) -> None:
        for problem in report.problems:
            log.error("recording spool alert: %s", problem)

    def folder(self, session_id: int) -> Path:
        return self.spool / f"session-{session_id}"

    def room_opened(self, info: SessionInfo, room: MediaRoom) -> bool:
        if not self.settings.enabled or info.kind not in RECORDED_KINDS or info.session_id in self.recorders:
            return info.session_id in self.recorders
        recorder = SessionRecorder(
            str(info.session_id),
            self.folder(info.session_id),
            segment_seconds=self.settings.segment_seconds,
            max_queue=self.settings.max_queue,
        )
        recorder.attach(room)
        self.recorders[info.session_id] = recorder
        details = {"session_id": info.session_id, "segment_seconds": self.settings.segment_seconds}
        self._background(self._audit(info, "recording.started", details))
        return True

    async def room_closed(self, info: SessionInfo) -> None:
        recorder = self.recorders.pop(info.session_id, None)
        if recorder is None:
            return
        await recorder.close()
        tracks: list[dict[str, Any]] = [
            {
                "participant_id": t.manifest.participant_id,
                "label": t.manifest.label,
                "segments": len(t.manifest.segments),
                "seconds": round(t.manifest.duration, 3),
                "dropped_frames": t.manifest.dropped_frames,
            }
            for t in recorder.tracks
        ]
        await self._audit(info, "recording.stopped", {"session_id": info.session_id, "tracks": tracks})

    async def close(self) -> None:
        for session_id in list(self.recorders):
            recorder = self.recorders.pop(session_id)
            await recorder.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _audit(self, info: SessionInfo, action: str, details: dict[str, Any]) -> None:
        try:
            async with self.db.transaction() as s:
                await audit.append(s, self.clock, info.case_id, None, action, details)
        except Exception:
            log.exception("session %s: could not audit %s", info.session_id, action)
