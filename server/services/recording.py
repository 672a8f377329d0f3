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
import hashlib
import json
import logging
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from recordings.join import JoinResult, join_tracks, participant_tracks
from recordings.recorder import SessionRecorder
from recordings.upload import SpaceReport, SpoolUploader
from server.clock import Clock
from server.metrics import Metrics
from server.objectstore import ObjectStore
from server.services import audit
from server.settings import RecordingSettings
from server.storage.database import Database
from server.storage.models import Case, CaseAuditEntry, Matter, MediaSession, Recording, RecordingJob
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
        store: ObjectStore,
        metrics: Metrics,
    ) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self.store = store
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
        self._background(self._started(info, details))
        return True

    async def _started(self, info: SessionInfo, details: dict[str, Any]) -> None:
        """Audit the start and create the session's durable post-session job (once per session)."""
        try:
            async with self.db.transaction() as s:
                await audit.append(s, self.clock, info.case_id, None, "recording.started", details)
                exists = await s.scalar(select(RecordingJob.id).where(RecordingJob.session_id == info.session_id))
                if exists is None:
                    s.add(
                        RecordingJob(
                            session_id=info.session_id,
                            case_id=info.case_id,
                            state="pending",
                            attempts=0,
                            created_at=self.clock.now(),
                        )
                    )
        except Exception:
            log.exception("session %s: could not record the start of its recording", info.session_id)

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

    # -- the post-session job -----------------------------------------------------------------------------------

    async def run_jobs(self) -> None:
        """Run due post-session jobs every ``job_interval`` seconds, and the purge every ``purge_interval``."""
        next_purge = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.jobs_pass()
                if loop.time() >= next_purge:
                    next_purge = loop.time() + self.settings.purge_interval
                    await self.purge_pass()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recording jobs pass failed")
            await asyncio.sleep(self.settings.job_interval)

    # -- retention -----------------------------------------------------------------------------------------------

    async def purge_pass(self, batch: int = 500) -> list[int]:
        """Delete recordings past their matter's ``retention_days`` unless their case is on legal hold.

        Each deletion removes the object, the row, and (once a session has no
        recording left) the session's raw segments in the store; each is
        logged and audited (``recording.purged``).  Returns the ids deleted.
        """
        now = self.clock.now()
        async with self.db.transaction() as s:
            rows = (
                await s.execute(
                    select(Recording.id, Recording.created_at, Matter.retention_days)
                    .join(Case, Case.id == Recording.case_id)
                    .join(Matter, Matter.id == Case.matter_id)
                    .where(Case.legal_hold.is_(False))
                    .order_by(Recording.created_at)
                    .limit(batch)
                )
            ).all()
        expired = [rid for rid, created, days in rows if created + timedelta(days=days) <= now]
        purged: list[int] = []
        for rid in expired:
            async with self.db.transaction() as s:
                row = await s.get(Recording, rid, with_for_update=True)
                if row is None:
                    continue
                case = await s.get(Case, row.case_id)
                if case is None or case.legal_hold:
                    continue  # a hold set meanwhile wins
                await self.store.delete(row.object_key)
                details = {
                    "recording_id": row.id,
                    "session_id": row.session_id,
                    "kind": row.kind,
                    "object_key": row.object_key,
                    "sha256": row.sha256,
                    "created_at": row.created_at.isoformat(),
                }
                await s.delete(row)
                await s.flush()
                left = await s.scalar(select(Recording.id).where(Recording.session_id == details["session_id"]))
                if left is None:
                    async for obj in self.store.list(f"recordings/session-{details['session_id']}/"):
                        await self.store.delete(obj.key)
                await audit.append(s, self.clock, row.case_id, None, "recording.purged", details)
            log.info("purged recording %s of case %s (%s)", rid, row.case_id, details["object_key"])
            purged.append(rid)
        return purged

    async def jobs_pass(self) -> int:
        """Run every pending job whose session has ended and whose spool is on this process; returns how many ran."""
        now = self.clock.now()
        async with self.db.transaction() as s:
            stmt = (
                select(RecordingJob.id, RecordingJob.session_id)
                .join(MediaSession, MediaSession.id == RecordingJob.session_id)
                .where(RecordingJob.state == "pending", MediaSession.state == "ended")
                .where((RecordingJob.not_before.is_(None)) | (RecordingJob.not_before <= now))
                .order_by(RecordingJob.id)
            )
            due = (await s.execute(stmt)).all()
        ran = 0
        for job_id, session_id in due:
            if session_id in self.recorders or not self.folder(session_id).is_dir():
                continue  # still recording here, or recorded by another process (its spool is there)
            await self._run_job(job_id, session_id)
            ran += 1
        return ran

    async def _run_job(self, job_id: int, session_id: int) -> None:
        try:
            saved = await self._join_and_store(session_id)
        except Exception as exc:
            log.exception("recording job of session %s failed", session_id)
            async with self.db.transaction() as s:
                job = await s.get(RecordingJob, job_id, with_for_update=True)
                assert job is not None
                job.attempts += 1
                job.error = str(exc)[:2000]
                if job.attempts >= self.settings.job_attempts:
                    job.state, job.finished_at = "failed", self.clock.now()
                else:
                    job.not_before = self.clock.now() + timedelta(seconds=30 * 2 ** (job.attempts - 1))
            return
        async with self.db.transaction() as s:
            job = await s.get(RecordingJob, job_id, with_for_update=True)
            assert job is not None
            job.state, job.finished_at, job.error = "done", self.clock.now(), None
            job.attempts += 1
            await audit.append(
                s, self.clock, job.case_id, None, "recording.job_done", {"session_id": session_id, "files": saved}
            )

    async def _names(self, session_id: int, case_id: int) -> dict[str, tuple[str, str]]:
        """participant id -> (display name, person key), from the case audit's ``session.joined`` entries.

        The person key (``u<user id>``, else ``n<name>``) is the same for every join of one person: a rejoin or a
        restart gives a new participant id, and the composite keeps one tile per person.
        """
        async with self.db.transaction() as s:
            rows = await s.execute(
                select(CaseAuditEntry.actor_name, CaseAuditEntry.actor_user_id, CaseAuditEntry.details).where(
                    CaseAuditEntry.case_id == case_id, CaseAuditEntry.action == "session.joined"
                )
            )
            return {
                str(d.get("participant_id")): (name, f"u{user_id}" if user_id is not None else f"n{name}")
                for name, user_id, d in rows.all()
                if isinstance(d, dict) and d.get("session_id") == session_id
            }

    async def _join_and_store(self, session_id: int) -> list[dict[str, Any]]:
        async with self.db.transaction() as s:
            session = await s.get(MediaSession, session_id)
            assert session is not None
            case_id = session.case_id
        names = await self._names(session_id, case_id)
        folder = self.folder(session_id)
        out_dir = folder / "out"
        out_dir.mkdir(exist_ok=True)
        joined: list[tuple[str, str, JoinResult]] = []
        for participant in sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "out"):
            tracks = participant_tracks(participant)
            groups = {
                "participant": [t for t in tracks if t[1].label in ("audio", "camera") and t[1].segments],
                "screen": [t for t in tracks if t[1].label == "screen" and t[1].segments],
            }
            for kind, group in groups.items():
                if not group:
                    continue
                name = f"{participant.name}{'-screen' if kind == 'screen' else ''}"
                result = await asyncio.to_thread(join_tracks, group, out_dir / f"{name}.webm")
                joined.append((kind, participant.name, result))
        if not joined:
            return []
        # One timeline for the whole session, on the wall clock: pieces recorded by another process (before a
        # restart, on another node) each count from their own recorder's start.
        zero = min(r.wall_start for _, _, r in joined)
        saved: list[dict[str, Any]] = []
        composite_inputs: list[str] = []
        for kind, participant_id, result in sorted(joined, key=lambda j: j[2].wall_start):
            offset = result.wall_start - zero
            name_of, person = names.get(participant_id, (None, f"p{participant_id}"))
            if kind == "participant":
                composite_inputs.append(f"{result.path}@{offset:.6f}#{person}")
            entry = await self._store_output(
                case_id, session_id, kind, participant_id, name_of, result.path, result.duration, offset
            )
            if entry is not None:
                saved.append(entry)
        if self.settings.composite and composite_inputs:
            out = out_dir / "composite.webm"
            duration, tiles = await self._composite(out, composite_inputs)
            entry = await self._store_output(
                case_id, session_id, "composite", None, None, out, duration, 0.0, extra={"tiles": tiles}
            )
            if entry is not None:
                saved.append(entry)
        return saved

    async def _composite(self, out: Path, inputs: list[str]) -> tuple[float, int]:
        """Render the composite in its own process at a lower CPU priority; returns its duration and tiles."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "recordings.composite",
            str(out),
            *inputs,
            "--size",
            self.settings.composite_size,
            "--nice",
            str(self.settings.composite_nice),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:  # asyncio.timeout: Python 3.11's wait_for can swallow a cancellation (see Database.transaction)
            async with asyncio.timeout(self.settings.composite_timeout):
                stdout, stderr = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError("the composite took longer than recording.composite_timeout") from None
        if proc.returncode != 0:
            raise RuntimeError(f"the composite failed: {stderr.decode(errors='replace')[-1000:]}")
        result = json.loads(stdout.decode().strip().splitlines()[-1])
        return float(result["duration"]), int(result["tiles"])

    async def _store_output(
        self,
        case_id: int,
        session_id: int,
        kind: str,
        participant_id: str | None,
        display_name: str | None,
        path: Path,
        duration: float,
        offset: float,
        *,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Put one output in the store and the case file (audited); None if an earlier attempt already did.

        ``offset`` is where the file's zero lies on the session's recording timeline (seconds after the
        session's first recorded media, on the wall clock); it is kept in the ``recording.saved`` audit entry
        (see :func:`start_offsets`), with ``extra`` (the composite's ``tiles``).
        """
        key = f"recordings/session-{session_id}/{path.name}"
        async with self.db.transaction() as s:
            if await s.scalar(select(Recording.id).where(Recording.object_key == key)) is not None:
                return None
        digest = await asyncio.to_thread(_sha256, path)
        size = (await asyncio.to_thread(path.stat)).st_size
        stored = await self.store.put(
            key, _chunks(path), content_type="video/webm", max_size=size, expected_sha256=digest
        )
        async with self.db.transaction() as s:
            row = Recording(
                case_id=case_id,
                session_id=session_id,
                kind=kind,
                participant_id=participant_id,
                participant_display_name=display_name,
                content_type="video/webm",
                duration_s=round(duration, 3),
                size=stored.size,
                sha256=stored.sha256,
                object_key=key,
                created_at=self.clock.now(),
            )
            s.add(row)
            await s.flush()
            entry: dict[str, Any] = {"recording_id": row.id, "kind": kind, "participant_id": participant_id}
            entry |= {"duration_s": row.duration_s, "size": row.size, "sha256": row.sha256}
            entry["start_offset_s"] = round(max(offset, 0.0), 3)
            entry |= extra or {}
            await audit.append(s, self.clock, case_id, None, "recording.saved", entry)
        return entry


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, 256 * 1024):
            yield chunk


async def start_offsets(s: AsyncSession, case_id: int) -> dict[int, float]:
    """recording id -> start offset (s) on its session's recording timeline, for the case's recordings.

    Read from the hash-chained ``recording.saved`` audit entries, which have carried ``start_offset_s``
    since it was added (older recordings have none: the list says ``null``).  The ``recordings`` table has
    no column for it; the audit entry is the record the case file already trusts.
    """
    rows = await s.execute(
        select(CaseAuditEntry.details).where(
            CaseAuditEntry.case_id == case_id, CaseAuditEntry.action == "recording.saved"
        )
    )
    found: dict[int, float] = {}
    for (details,) in rows.all():
        if not isinstance(details, dict):
            continue
        rid, offset = details.get("recording_id"), details.get("start_offset_s")
        if isinstance(rid, int) and isinstance(offset, int | float):
            found[rid] = float(offset)
    return found
