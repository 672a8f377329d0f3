"""Remote site inspection: tasks, the phone's location, snapshot requests, evidence, checklist results, report.

Real-time notices go to the participants of the task's session
(``inspection.location``, ``inspection.snapshot_requested``,
``inspection.evidence``, ``inspection.item``, ``inspection.completed``;
payloads in ``docs/api.md``), after the commit.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from server.api.documents import DocumentOut
from server.api.multipart import MULTIPART_OVERHEAD, file_chunks, file_part
from server.api.routing import MULTIPART_FILE, Api, Call, Page, binary_content
from server.errors import PayloadTooLarge, ValidationFailed
from server.objectstore.http import send_object
from server.services import audit
from server.services.inspections import EVIDENCE_TYPES, EvidenceMeta, LocationIn, ResultIn, TaskCreate
from server.storage.models import InspectionEvidence, InspectionLocation, InspectionResult, InspectionTask

api = Api()
_ITEM = re.compile(r"^[a-z0-9_]{1,64}$")


class LocationOut(BaseModel):
    lat: float
    lon: float
    accuracy: float
    at: datetime
    device_at: datetime | None = None

    @classmethod
    def of(cls, row: InspectionLocation) -> LocationOut:
        return cls.model_validate(row, from_attributes=True)


class TaskOut(BaseModel):
    id: int
    case_id: int
    session_id: int
    state: str
    checklist: list[dict[str, str]]
    created_by: int
    created_at: datetime
    completed_at: datetime | None
    location: LocationOut | None
    report_document_id: int | None

    @classmethod
    def of(cls, t: InspectionTask) -> TaskOut:
        location = None
        if t.last_lat is not None and t.last_lon is not None and t.last_location_at is not None:
            location = LocationOut(
                lat=t.last_lat, lon=t.last_lon, accuracy=t.last_accuracy or 0.0, at=t.last_location_at
            )
        return cls(
            id=t.id,
            case_id=t.case_id,
            session_id=t.session_id,
            state=t.state,
            checklist=[dict(i) for i in t.checklist],
            created_by=t.created_by,
            created_at=t.created_at,
            completed_at=t.completed_at,
            location=location,
            report_document_id=t.report_document_id,
        )


class EvidenceOut(BaseModel):
    id: int
    task_id: int
    case_id: int
    item_code: str | None
    client_key: str
    client_seq: int
    content_type: str
    size: int
    sha256: str
    lat: float | None
    lon: float | None
    accuracy: float | None
    captured_at: datetime
    received_at: datetime
    device: str
    uploaded_by_name: str
    #: Who invited the inspector who sent it (null: sent by staff, or before this was recorded).
    invited_by_name: str | None
    #: The signed manifest (canonical JSON), its Ed25519 signature (base64) and the signing key's id.
    manifest: str
    signature: str
    key_id: str

    @classmethod
    def of(cls, row: InspectionEvidence) -> EvidenceOut:
        return cls.model_validate(row, from_attributes=True)


class ResultOut(BaseModel):
    item_code: str
    result: str
    note: str | None
    evidence_ids: list[int]
    updated_by_name: str
    updated_at: datetime

    @classmethod
    def of(cls, row: InspectionResult) -> ResultOut:
        return cls.model_validate(row, from_attributes=True)


class ItemOut(BaseModel):
    code: str
    name_zh: str
    name_en: str
    result: ResultOut | None


class TaskDetailOut(TaskOut):
    items: list[ItemOut]
    evidence: list[EvidenceOut]


class SnapshotRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,64}$")


class SnapshotRequestOut(BaseModel):
    request_id: str
    task_id: int
    item: str | None


class ReportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lang: Literal["zh", "en"] = "zh"


class LocationQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=100, ge=1, le=1000)


class VerificationOut(BaseModel):
    evidence_id: int
    valid: bool
    signature_valid: bool
    manifest_matches_record: bool
    content_matches: bool
    problems: list[str]
    key_id: str


class PublicKeyOut(BaseModel):
    algorithm: str = "Ed25519"
    key_id: str
    #: The raw 32-byte public key, base64.
    public_key: str


def _location_wire(task: InspectionTask, row: InspectionLocation) -> dict[str, Any]:
    return {"task_id": task.id, **LocationOut.of(row).model_dump(mode="json")}


async def _notify(call: Call, task: InspectionTask, event: str, data: dict[str, Any]) -> None:
    await call.services.signalling.notify_session(task.session_id, event, data)


def _item_code(call: Call) -> str:
    raw = call.request.match_info["item_code"]
    if not _ITEM.match(raw):
        raise ValidationFailed("item_code is a lower-case code", code="invalid_path_parameter")
    return raw


@api.route(
    "POST",
    "/cases/{case_id}/inspections",
    summary="Open a site inspection of the case with its matter's checklist (clerk)",
    tags=["inspections"],
    body=TaskCreate,
    response=TaskOut,
    status=201,
)
async def create_inspection(call: Call) -> TaskOut:
    async with call.services.db.transaction() as s:
        task = await call.services.inspections.create(s, call.me, call.path_int("case_id"), call.body)
    return TaskOut.of(task)


@api.route(
    "GET", "/cases/{case_id}/inspections", summary="Inspections of a case", tags=["inspections"], response=Page[TaskOut]
)
async def list_inspections(call: Call) -> Page[TaskOut]:
    async with call.services.db.transaction() as s:
        rows = await call.services.inspections.for_case(s, call.me, call.path_int("case_id"))
    return Page[TaskOut](items=[TaskOut.of(r) for r in rows], total=len(rows), limit=len(rows), offset=0)


@api.route(
    "GET",
    "/inspections/{task_id}",
    summary="One inspection: checklist with results, evidence, last location",
    tags=["inspections"],
    response=TaskDetailOut,
)
async def get_inspection(call: Call) -> TaskDetailOut:
    sv = call.services
    async with sv.db.transaction() as s:
        tv = await sv.inspections.load(s, call.me, call.path_int("task_id"))
        results = {r.item_code: r for r in await sv.inspections.results(s, tv.task.id)}
        evidence = await sv.inspections.evidence(s, call.me, tv.task.id)
    base = TaskOut.of(tv.task)
    items = [
        ItemOut(
            code=i["code"],
            name_zh=i["name_zh"],
            name_en=i["name_en"],
            result=ResultOut.of(results[i["code"]]) if i["code"] in results else None,
        )
        for i in tv.task.checklist
    ]
    return TaskDetailOut(**base.model_dump(), items=items, evidence=[EvidenceOut.of(e) for e in evidence])


@api.route(
    "POST",
    "/inspections/{task_id}/locations",
    summary="The inspector's phone reports its position (every few seconds)",
    tags=["inspections"],
    body=LocationIn,
    response=LocationOut,
    status=201,
)
async def add_location(call: Call) -> LocationOut:
    async with call.services.db.transaction() as s:
        task, row = await call.services.inspections.add_location(s, call.me, call.path_int("task_id"), call.body)
    await _notify(call, task, "inspection.location", _location_wire(task, row))
    return LocationOut.of(row)


@api.route(
    "GET",
    "/inspections/{task_id}/locations",
    summary="The phone's recent positions (oldest first)",
    tags=["inspections"],
    query=LocationQuery,
    response=Page[LocationOut],
)
async def list_locations(call: Call) -> Page[LocationOut]:
    async with call.services.db.transaction() as s:
        rows = await call.services.inspections.locations(s, call.me, call.path_int("task_id"), call.query.limit)
    return Page[LocationOut](items=[LocationOut.of(r) for r in rows], total=len(rows), limit=call.query.limit, offset=0)


@api.route(
    "POST",
    "/inspections/{task_id}/snapshot-requests",
    summary="Ask the phone for a full-resolution still (clerk)",
    tags=["inspections"],
    body=SnapshotRequest,
    response=SnapshotRequestOut,
    status=202,
)
async def request_snapshot(call: Call) -> SnapshotRequestOut:
    sv = call.services
    request_id = uuid.uuid4().hex
    async with sv.db.transaction() as s:
        tv = await sv.inspections.load(s, call.me, call.path_int("task_id"), "inspect")
        sv.inspections.require_open(tv.task)
        item = call.body.item
        if item is not None and item not in {i["code"] for i in tv.task.checklist}:
            raise ValidationFailed(
                "the inspection checklist has no such item", code="unknown_inspection_item", details={"item": item}
            )
        await audit.append(
            s,
            sv.clock,
            tv.task.case_id,
            call.me,
            "inspection.snapshot_requested",
            {"task_id": tv.task.id, "request_id": request_id, "item": item},
        )
    out = SnapshotRequestOut(request_id=request_id, task_id=tv.task.id, item=item)
    await _notify(
        call,
        tv.task,
        "inspection.snapshot_requested",
        {**out.model_dump(), "requested_by": call.me.display_name},
    )
    return out


@api.route(
    "POST",
    "/inspections/{task_id}/evidence",
    summary="Upload an evidence photo (multipart part 'file'; stamps in the query; idempotent by client_key)",
    tags=["inspections"],
    query=EvidenceMeta,
    response=EvidenceOut,
    status=201,
    raw_body=MULTIPART_FILE,
    also=(200,),
)
async def upload_evidence(call: Call) -> web.Response:
    sv, request, meta = call.services, call.request, call.query
    tv = await sv.inspections.prepare_evidence(call.me, call.path_int("task_id"), meta)
    limit = sv.inspections.max_size
    if request.content_length is not None and request.content_length > limit + MULTIPART_OVERHEAD:
        raise PayloadTooLarge("the photo is larger than allowed", code="file_too_large", details={"max_size": limit})
    part = await file_part(request)
    row, created = await sv.inspections.add_evidence(call.me, tv, meta, file_chunks(part))
    out = EvidenceOut.of(row)
    if created:
        await _notify(
            call, tv.task, "inspection.evidence", out.model_dump(mode="json", exclude={"manifest", "signature"})
        )
    return web.Response(text=out.model_dump_json(), status=201 if created else 200, content_type="application/json")


@api.route(
    "GET",
    "/inspections/{task_id}/evidence",
    summary="Evidence photos of an inspection, in the phone's order",
    tags=["inspections"],
    response=Page[EvidenceOut],
)
async def list_evidence(call: Call) -> Page[EvidenceOut]:
    async with call.services.db.transaction() as s:
        rows = await call.services.inspections.evidence(s, call.me, call.path_int("task_id"))
    return Page[EvidenceOut](items=[EvidenceOut.of(r) for r in rows], total=len(rows), limit=len(rows), offset=0)


@api.route(
    "GET",
    "/inspections/{task_id}/evidence/{evidence_id}",
    summary="One evidence photo's stamps and signed manifest",
    tags=["inspections"],
    response=EvidenceOut,
)
async def get_evidence(call: Call) -> EvidenceOut:
    async with call.services.db.transaction() as s:
        row = await call.services.inspections.one_evidence(
            s, call.me, call.path_int("task_id"), call.path_int("evidence_id")
        )
    return EvidenceOut.of(row)


@api.route(
    "GET",
    "/inspections/{task_id}/evidence/{evidence_id}/content",
    summary="The evidence photo as uploaded",
    tags=["inspections"],
    raw_response=binary_content(*EVIDENCE_TYPES),
)
async def evidence_content(call: Call) -> web.StreamResponse:
    sv = call.services
    async with sv.db.transaction() as s:
        row = await sv.inspections.one_evidence(s, call.me, call.path_int("task_id"), call.path_int("evidence_id"))
    return await send_object(
        call.request,
        sv.store,
        row.object_key,
        content_type=row.content_type,
        size=row.size,
        sha256=row.sha256,
        filename=f"evidence-{row.id}.{row.content_type.split('/')[1]}",
    )


@api.route(
    "GET",
    "/inspections/{task_id}/evidence/{evidence_id}/verify",
    summary="Verify an evidence photo: signature, record against manifest, stored photo against its hash",
    tags=["inspections"],
    response=VerificationOut,
)
async def verify_evidence(call: Call) -> VerificationOut:
    sv = call.services
    async with sv.db.transaction() as s:
        row = await sv.inspections.one_evidence(s, call.me, call.path_int("task_id"), call.path_int("evidence_id"))
    result = await sv.inspections.verify(row)
    return VerificationOut(evidence_id=row.id, key_id=row.key_id, **result.__dict__)


@api.route(
    "PUT",
    "/inspections/{task_id}/items/{item_code}",
    summary="Mark a checklist item pass, fail or note, with its evidence (clerk)",
    tags=["inspections"],
    body=ResultIn,
    response=ResultOut,
)
async def set_item_result(call: Call) -> ResultOut:
    sv = call.services
    code = _item_code(call)
    async with sv.db.transaction() as s:
        row = await sv.inspections.set_result(s, call.me, call.path_int("task_id"), code, call.body)
        tv = await sv.inspections.load(s, call.me, row.task_id)
    out = ResultOut.of(row)
    await _notify(call, tv.task, "inspection.item", {"task_id": tv.task.id, **out.model_dump(mode="json")})
    return out


@api.route(
    "POST",
    "/inspections/{task_id}/complete",
    summary="Finish the inspection (clerk); results, evidence and locations are closed",
    tags=["inspections"],
    response=TaskOut,
)
async def complete_inspection(call: Call) -> TaskOut:
    async with call.services.db.transaction() as s:
        task = await call.services.inspections.complete(s, call.me, call.path_int("task_id"))
    await _notify(call, task, "inspection.completed", {"task_id": task.id})
    return TaskOut.of(task)


@api.route(
    "POST",
    "/inspections/{task_id}/report",
    summary="Make the inspection report (PDF, Chinese or English) and file it with the case's documents",
    tags=["inspections"],
    body=ReportRequest,
    response=DocumentOut,
    status=201,
)
async def make_report(call: Call) -> DocumentOut:
    doc = await call.services.reports.make(call.me, call.path_int("task_id"), call.body.lang)
    return DocumentOut.of(doc)


@api.route(
    "GET",
    "/evidence/public-key",
    summary="The Ed25519 key that signs evidence manifests (to verify exported evidence offline)",
    tags=["inspections"],
    response=PublicKeyOut,
    auth=False,
)
async def evidence_public_key(call: Call) -> PublicKeyOut:
    signer = call.services.inspections.signer
    return PublicKeyOut(key_id=signer.key_id, public_key=signer.public_key_b64)
