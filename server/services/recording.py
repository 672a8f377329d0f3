"""Recording case sessions: the server's side of ``signalling.media.RoomObserver``.

When a session's media room opens on this process, a
:class:`recordings.recorder.SessionRecorder` taps every published track
into segment files under ``recording.spool_dir/session-<id>/`` (see
``recordings/``); the case audit gets ``recording.started``.  When the
room closes, the recorder closes its last segments and the audit gets
``recording.stopped`` with what was recorded (tracks, segments, seconds,
dropped frames).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from recordings.recorder import SessionRecorder
from server.clock import Clock
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

    def __init__(self, *, db: Database, clock: Clock, settings: RecordingSettings, spool: Path) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.spool = spool
        self.recorders: dict[int, SessionRecorder] = {}
        self._tasks: set[asyncio.Task[None]] = set()

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
