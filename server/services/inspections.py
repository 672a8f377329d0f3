"""Remote site inspection (远程踏勘): tasks, the phone's location, evidence photos, checklist results, report.

A case whose matter ``needs_inspection`` gets an inspection task with a copy
of the matter's ``inspection_checklist`` (items are catalogue data).  The
task runs in an ordinary case session (kind ``inspection``), so it is
recorded like any other.  The inspector (invited with role ``inspector``)
streams the rear camera into that session, sends the phone's position and
uploads still photos; the clerk marks each checklist item and makes the
report.

Evidence uploads are idempotent: the phone gives each photo a
``client_key`` (kept with the photo while offline) and a ``client_seq``;
a retried upload with the same key stores nothing new and returns the first
one (a different photo under a used key is a conflict).  The photo is
streamed to the object store before the row is written (no transaction is
held while bytes flow); a failure after the upload deletes the object.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import Clock, UtcInstant
from server.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.objectstore import ObjectNotFound, ObjectStore
from server.reports.inspection import Lang, ReportData, ReportItem, ReportParticipant, ReportPhoto, render
from server.services import audit
from server.services.cases import OPEN_STATES, CaseService, CaseView
from server.services.documents import put_sniffed, sanitise_filename
from server.services.evidence import EvidenceSigner, Verification
from server.services.identity import mask_id_number
from server.services.policy import Action, may_inspect, may_report_from_site
from server.services.principal import Principal
from server.services.sessions import SessionService
from server.storage.cases import CaseRepository
from server.storage.database import Database
from server.storage.inspections import InspectionRepository
from server.storage.models import (
    CaseAuditEntry,
    Document,
    InspectionEvidence,
    InspectionLocation,
    InspectionResult,
    InspectionTask,
    User,
)
from server.storage.sessions import SessionRepository
from server.storage.users import InviteRepository, UserRepository

log = logging.getLogger(__name__)

EVIDENCE_TYPES = ("image/jpeg", "image/png", "image/webp")
_EXT = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
Need = Literal["read", "inspect", "site"]


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: An open session of the case to run in; default: the case's open session, or a new ``inspection`` one.
    session_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


class LocationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    #: Metres (``GeolocationCoordinates.accuracy``).
    accuracy: float = Field(ge=0, le=100_000)
    #: The fix's own time (``GeolocationPosition.timestamp``), if the phone sends it.
    at: UtcInstant | None = None


class EvidenceMeta(BaseModel):
    """Query parameters of an evidence upload (the photo itself is the multipart part ``file``)."""

    model_config = ConfigDict(extra="forbid")

    client_key: str = Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")
    client_seq: int = Field(ge=0, le=2**31 - 1)
    captured_at: UtcInstant
    device: str = Field(min_length=1, max_length=200)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    accuracy: float | None = Field(default=None, ge=0, le=100_000)
    item: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,64}$")


class ResultIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    result: Literal["pass", "fail", "note"]
    note: str | None = Field(default=None, max_length=5000)
    evidence_ids: list[int] = Field(default_factory=list, max_length=50)


@dataclass(frozen=True)
class TaskView:
    task: InspectionTask
    case: CaseView


def _utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


class InspectionService:
    def __init__(
        self,
        *,
        db: Database,
        store: ObjectStore,
        clock: Clock,
        cases: CaseService,
        sessions: SessionService,
        signer: EvidenceSigner,
        max_size: int,
    ) -> None:
        self.db = db
        self.store = store
        self.clock = clock
        self.cases = cases
        self.sessions = sessions
        self.signer = signer
        self.max_size = max_size

    # -- tasks --------------------------------------------------------------

    async def create(self, s: AsyncSession, principal: Principal, case_id: int, body: TaskCreate) -> InspectionTask:
        view = await self.cases.load(s, principal, case_id, Action.WRITE, for_update=True)
        if not may_inspect(principal, view.scope):
            raise Forbidden("the case's clerk runs the inspection", code="forbidden")
        if view.case.state not in OPEN_STATES:
            raise Conflict("inspections are for open cases", code="case_closed")
        if not view.matter.needs_inspection or not view.matter.inspection_checklist:
            raise Conflict(
                "the matter needs no site inspection",
                code="inspection_not_needed",
                details={"matter": view.matter.code},
            )
        repo = InspectionRepository(s)
        if await repo.open_for_case(case_id) is not None:
            raise Conflict("the case already has an open inspection", code="inspection_already_open")
        if body.session_id is not None:
            session = await SessionRepository(s).get(body.session_id)
            if session is None or session.case_id != case_id:
                raise NotFound("no such session in this case", code="session_not_found")
            if session.state != "open":
                raise Conflict("the session has ended", code="session_ended")
        else:
            session, _ = await self.sessions.open(s, principal, case_id, "inspection")
        assert principal.user_id is not None
        task = await repo.add(
            InspectionTask(
                case_id=case_id,
                session_id=session.id,
                state="open",
                checklist=[dict(i) for i in view.matter.inspection_checklist],
                created_by=principal.user_id,
                created_at=self.clock.now(),
                completed_at=None,
            )
        )
        await audit.append(
            s,
            self.clock,
            case_id,
            principal,
            "inspection.created",
            {"task_id": task.id, "session_id": session.id, "items": [i["code"] for i in task.checklist]},
        )
        return task

    async def for_case(self, s: AsyncSession, principal: Principal, case_id: int) -> list[InspectionTask]:
        await self.cases.load(s, principal, case_id, Action.READ)
        return list(await InspectionRepository(s).for_case(case_id))

    async def load(
        self, s: AsyncSession, principal: Principal, task_id: int, need: Need = "read", *, for_update: bool = False
    ) -> TaskView:
        """The task if ``principal`` may ``need`` it; a task of a case it may not read does not exist."""
        task = await InspectionRepository(s).get(task_id, for_update=for_update)
        if task is None:
            raise NotFound("no such inspection", code="inspection_not_found")
        try:
            view = await self.cases.load(s, principal, task.case_id, Action.READ)
        except NotFound:
            raise NotFound("no such inspection", code="inspection_not_found") from None
        if need == "inspect" and not may_inspect(principal, view.scope):
            raise Forbidden("the case's clerk runs the inspection", code="forbidden")
        if need == "site" and not may_report_from_site(principal, view.scope):
            raise Forbidden("only the invited inspector reports from the site", code="forbidden")
        return TaskView(task, view)

    @staticmethod
    def require_open(task: InspectionTask) -> None:
        if task.state != "open":
            raise Conflict("the inspection is completed", code="inspection_completed")

    async def complete(self, s: AsyncSession, principal: Principal, task_id: int) -> InspectionTask:
        tv = await self.load(s, principal, task_id, "inspect", for_update=True)
        task = tv.task
        if task.state == "open":
            task.state = "completed"
            task.completed_at = self.clock.now()
            await s.flush()
            results = await InspectionRepository(s).results(task.id)
            await audit.append(
                s,
                self.clock,
                task.case_id,
                principal,
                "inspection.completed",
                {"task_id": task.id, "results": {r.item_code: r.result for r in results}},
            )
        return task

    # -- location -----------------------------------------------------------

    async def add_location(
        self, s: AsyncSession, principal: Principal, task_id: int, body: LocationIn
    ) -> tuple[InspectionTask, InspectionLocation]:
        tv = await self.load(s, principal, task_id, "site", for_update=True)
        self.require_open(tv.task)
        now = self.clock.now()
        row = await InspectionRepository(s).add_location(
            InspectionLocation(
                task_id=task_id,
                lat=body.lat,
                lon=body.lon,
                accuracy=body.accuracy,
                at=now,
                device_at=_utc(body.at) if body.at else None,
            )
        )
        task = tv.task
        task.last_lat, task.last_lon, task.last_accuracy, task.last_location_at = (
            body.lat,
            body.lon,
            body.accuracy,
            now,
        )
        await s.flush()
        return task, row

    async def locations(
        self, s: AsyncSession, principal: Principal, task_id: int, limit: int
    ) -> list[InspectionLocation]:
        await self.load(s, principal, task_id)
        return list(await InspectionRepository(s).locations(task_id, limit=limit))

    # -- evidence -----------------------------------------------------------

    async def prepare_evidence(self, principal: Principal, task_id: int, meta: EvidenceMeta) -> TaskView:
        async with self.db.transaction() as s:
            tv = await self.load(s, principal, task_id, "site")
            self.require_open(tv.task)
            if meta.item is not None and meta.item not in {i["code"] for i in tv.task.checklist}:
                raise ValidationFailed(
                    "the inspection checklist has no such item",
                    code="unknown_inspection_item",
                    details={"item": meta.item},
                )
            if (meta.lat is None) != (meta.lon is None):
                raise ValidationFailed("send both lat and lon, or neither", code="validation_error")
        return tv

    async def add_evidence(
        self, principal: Principal, tv: TaskView, meta: EvidenceMeta, body: AsyncIterator[bytes]
    ) -> tuple[InspectionEvidence, bool]:
        """Store the photo; ``(row, created)`` — ``created`` is false for a retry of a stored upload."""
        task = tv.task
        key, detected, stored = await put_sniffed(
            self.store,
            body,
            EVIDENCE_TYPES,
            self.max_size,
            lambda detected: f"cases/{task.case_id}/inspections/{task.id}/{uuid.uuid4().hex}.{_EXT[detected]}",
            wrong_type="evidence must be a JPEG, PNG or WebP photo",
            too_large="the photo is larger than allowed",
        )
        keep = False
        try:
            try:
                row, created = await self._insert_evidence(
                    principal, task.id, meta, key, detected, stored.size, stored.sha256
                )
            except IntegrityError:  # a concurrent retry with the same key won the race
                row, created = await self._insert_evidence(
                    principal, task.id, meta, key, detected, stored.size, stored.sha256
                )
            keep = created
        finally:
            if not keep:
                await self.store.delete(key)
        return row, created

    async def _insert_evidence(
        self,
        principal: Principal,
        task_id: int,
        meta: EvidenceMeta,
        key: str,
        content_type: str,
        size: int,
        sha256: str,
    ) -> tuple[InspectionEvidence, bool]:
        async with self.db.transaction() as s:
            tv = await self.load(s, principal, task_id, "site", for_update=True)
            repo = InspectionRepository(s)
            existing = await repo.evidence_by_key(task_id, meta.client_key)
            if existing is not None:
                if existing.sha256 != sha256:
                    raise Conflict(
                        "another photo was already stored under this client_key",
                        code="evidence_key_conflict",
                        details={"evidence_id": existing.id},
                    )
                return existing, False
            self.require_open(tv.task)
            inviter = await self._inviter(s, principal)
            row = InspectionEvidence(
                task_id=task_id,
                case_id=tv.task.case_id,
                item_code=meta.item,
                client_key=meta.client_key,
                client_seq=meta.client_seq,
                object_key=key,
                content_type=content_type,
                size=size,
                sha256=sha256,
                lat=meta.lat,
                lon=meta.lon,
                accuracy=meta.accuracy,
                captured_at=_utc(meta.captured_at),
                received_at=self.clock.now(),
                device=meta.device,
                uploaded_by_user_id=principal.user_id,
                uploaded_by_name=principal.display_name,
                invited_by_user_id=inviter.id if inviter is not None else None,
                invited_by_name=inviter.display_name if inviter is not None else None,
                manifest="",
                signature="",
                key_id="",
            )
            await repo.add_evidence(row)
            self.signer.sign(row)
            await s.flush()
            await audit.append(
                s,
                self.clock,
                tv.task.case_id,
                principal,
                "inspection.evidence",
                {
                    "task_id": task_id,
                    "evidence_id": row.id,
                    "item": meta.item,
                    "sha256": sha256,
                    "client_seq": meta.client_seq,
                    "lat": meta.lat,
                    "lon": meta.lon,
                    "accuracy": meta.accuracy,
                },
            )
            return row, True

    @staticmethod
    async def _inviter(s: AsyncSession, principal: Principal) -> User | None:
        """Who made the invite the principal came in by (the evidence names who vouched for its sender)."""
        if principal.invite_id is None:
            return None
        invite = await InviteRepository(s).get(principal.invite_id)
        return await UserRepository(s).get(invite.created_by) if invite is not None else None

    async def evidence(self, s: AsyncSession, principal: Principal, task_id: int) -> list[InspectionEvidence]:
        await self.load(s, principal, task_id)
        return list(await InspectionRepository(s).evidence(task_id))

    async def one_evidence(
        self, s: AsyncSession, principal: Principal, task_id: int, evidence_id: int
    ) -> InspectionEvidence:
        await self.load(s, principal, task_id)
        row = await InspectionRepository(s).one_evidence(task_id, evidence_id)
        if row is None:
            raise NotFound("no such evidence", code="evidence_not_found")
        return row

    async def verify(self, row: InspectionEvidence) -> Verification:
        return await verify_evidence(self.store, self.signer, row)

    # -- checklist results ----------------------------------------------------

    async def set_result(
        self, s: AsyncSession, principal: Principal, task_id: int, item_code: str, body: ResultIn
    ) -> InspectionResult:
        tv = await self.load(s, principal, task_id, "inspect", for_update=True)
        self.require_open(tv.task)
        if item_code not in {i["code"] for i in tv.task.checklist}:
            raise NotFound("the inspection checklist has no such item", code="unknown_inspection_item")
        repo = InspectionRepository(s)
        known = {e.id for e in await repo.evidence(task_id)}
        foreign = sorted(set(body.evidence_ids) - known)
        if foreign:
            raise ValidationFailed(
                "evidence ids must be photos of this inspection",
                code="evidence_not_found",
                details={"evidence_ids": foreign},
            )
        if body.result in ("fail", "note") and not body.note:
            raise ValidationFailed("a fail or a note needs the note text", code="note_required")
        now = self.clock.now()
        row = await repo.result(task_id, item_code)
        if row is None:
            row = await repo.add_result(
                InspectionResult(
                    task_id=task_id,
                    item_code=item_code,
                    result=body.result,
                    note=body.note,
                    evidence_ids=sorted(set(body.evidence_ids)),
                    updated_by=principal.user_id,
                    updated_by_name=principal.display_name,
                    updated_at=now,
                )
            )
        else:
            row.result, row.note, row.evidence_ids = body.result, body.note, sorted(set(body.evidence_ids))
            row.updated_by, row.updated_by_name, row.updated_at = principal.user_id, principal.display_name, now
            await s.flush()
        await audit.append(
            s,
            self.clock,
            tv.task.case_id,
            principal,
            "inspection.item",
            {"task_id": task_id, "item": item_code, "result": body.result, "evidence_ids": row.evidence_ids},
        )
        return row

    async def results(self, s: AsyncSession, task_id: int) -> list[InspectionResult]:
        return list(await InspectionRepository(s).results(task_id))


async def verify_evidence(store: ObjectStore, signer: EvidenceSigner, row: InspectionEvidence) -> Verification:
    """Recompute the stored photo's hash and check it, the row and the signature (``EvidenceSigner.verify``)."""
    digest = hashlib.sha256()
    size = 0
    try:
        async for chunk in store.get(row.object_key):
            digest.update(chunk)
            size += len(chunk)
    except ObjectNotFound:
        return signer.verify(row, None, None)
    return signer.verify(row, digest.hexdigest(), size)


class InspectionReports:
    """Makes the PDF report of an inspection, stores it in the object store and lists it in the case file."""

    def __init__(self, *, inspections: InspectionService, timezone: str) -> None:
        self.inspections = inspections
        self.timezone = timezone

    async def make(self, principal: Principal, task_id: int, lang: Lang) -> Document:
        ins = self.inspections
        async with ins.db.transaction() as s:
            tv = await ins.load(s, principal, task_id, "inspect")
            task, view = tv.task, tv.case
            repo = InspectionRepository(s)
            results = {r.item_code: r for r in await repo.results(task_id)}
            evidence = list(await repo.evidence(task_id))
            entries = list(await CaseRepository(s).audit(task.case_id))
        photos = []
        for e in evidence:
            content = b"".join([chunk async for chunk in ins.store.get(e.object_key)])
            check = ins.signer.verify(e, hashlib.sha256(content).hexdigest(), len(content))
            photos.append(
                ReportPhoto(
                    evidence_id=e.id,
                    item_code=e.item_code,
                    data=content,
                    lat=e.lat,
                    lon=e.lon,
                    accuracy=e.accuracy,
                    captured_at=e.captured_at,
                    received_at=e.received_at,
                    device=e.device,
                    sha256=e.sha256,
                    verified=check.valid,
                )
            )
        name_key = "name_zh" if lang == "zh" else "name_en"
        now = ins.clock.now()
        case = view.case
        number = f"CW{case.created_at:%Y%m%d}-{case.id:06d}"
        data = ReportData(
            case_number=number,
            matter_code=view.matter.code,
            matter_name=view.matter.name_zh if lang == "zh" else view.matter.name_en,
            applicant_name=case.applicant_name,
            applicant_id_masked=mask_id_number(case.applicant_id_number),
            task_id=task.id,
            session_id=task.session_id,
            created_at=task.created_at,
            completed_at=task.completed_at,
            generated_at=now,
            generated_by=principal.display_name,
            location=(task.last_lat, task.last_lon, task.last_accuracy or 0.0)
            if task.last_lat is not None and task.last_lon is not None
            else None,
            location_at=task.last_location_at,
            key_id=ins.signer.key_id,
            items=[
                ReportItem(
                    code=i["code"],
                    name=i[name_key],
                    result=results[i["code"]].result if i["code"] in results else None,
                    note=results[i["code"]].note if i["code"] in results else None,
                    evidence_ids=list(results[i["code"]].evidence_ids) if i["code"] in results else [],
                    marked_by=results[i["code"]].updated_by_name if i["code"] in results else None,
                )
                for i in task.checklist
            ],
            participants=session_participants(entries, task.session_id),
            photos=photos,
        )
        pdf = await asyncio.to_thread(render, data, lang, self.timezone)

        async def body() -> AsyncIterator[bytes]:
            yield pdf

        key = f"cases/{task.case_id}/documents/{uuid.uuid4().hex}"
        stored = await ins.store.put(key, body(), content_type="application/pdf")
        try:
            async with ins.db.transaction() as s:
                tv = await ins.load(s, principal, task_id, "inspect", for_update=True)
                assert principal.user_id is not None
                doc = Document(
                    case_id=task.case_id,
                    checklist_item_id=None,
                    filename=sanitise_filename(f"踏勘报告-{number}-{task.id}-{lang}", "application/pdf"),
                    content_type="application/pdf",
                    size=stored.size,
                    sha256=stored.sha256,
                    object_key=key,
                    uploaded_by=principal.user_id,
                    created_at=now,
                )
                await CaseRepository(s).add_document(doc)
                tv.task.report_document_id = doc.id
                await s.flush()
                await audit.append(
                    s,
                    ins.clock,
                    task.case_id,
                    principal,
                    "inspection.report",
                    {"task_id": task.id, "document_id": doc.id, "sha256": stored.sha256, "lang": lang},
                )
        except BaseException:
            await ins.store.delete(key)
            raise
        return doc


def session_participants(entries: list[CaseAuditEntry], session_id: int) -> list[ReportParticipant]:
    """Who was in the session and for how long, from its ``session.joined`` / ``session.left`` audit entries."""
    joined: dict[str, CaseAuditEntry] = {}
    out: list[ReportParticipant] = []
    for e in entries:
        if e.details.get("session_id") != session_id:
            continue
        pid = str(e.details.get("participant_id", ""))
        if e.action == "session.joined":
            joined[pid] = e
        elif e.action == "session.left" and pid in joined:
            j = joined.pop(pid)
            duration = e.details.get("duration_s")
            out.append(
                ReportParticipant(j.actor_name, j.actor_role, j.at, float(duration) if duration is not None else None)
            )
    out.extend(ReportParticipant(j.actor_name, j.actor_role, j.at, None) for j in joined.values())
    return sorted(out, key=lambda p: p.joined_at or datetime.min.replace(tzinfo=UTC))
