"""Materials: streaming upload, list, download (direct or signed URL), review (材料预审), delete.

Every committed change is pushed at once over Socket.IO (``document.added``,
``document.reviewed``, ``document.removed``: docs/protocol.md) to the point's
staff and the clerks of the case's department.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from server.api.cases import ChecklistItemOut, case_out
from server.api.multipart import MULTIPART_OVERHEAD, file_chunks, file_part
from server.api.routing import MULTIPART_FILE, Api, Call, Page, binary_content
from server.errors import PayloadTooLarge
from server.objectstore.http import send_object
from server.services.documents import DEFAULT_TYPES, REASON_MAX, DocumentChange, document_rooms
from server.services.policy import Action
from server.storage.cases import CaseRepository
from server.storage.matters import MatterRepository
from server.storage.models import Document
from server.storage.queue import TicketRepository

api = Api()
log = logging.getLogger(__name__)


class UploadQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,64}$")


class DocumentOut(BaseModel):
    id: int
    case_id: int
    checklist_item_id: int | None
    filename: str
    content_type: str
    size: int
    sha256: str
    uploaded_by: int | None
    created_at: datetime
    #: The checklist item's code (``None``: a document tied to no item).
    item: str | None = None
    #: 材料预审: ``pending``, ``accepted`` or ``returned`` (for correction, 补正, with ``review_reason``).
    review_state: str
    review_reason: str | None
    reviewed_by: int | None
    reviewed_at: datetime | None

    @classmethod
    def of(cls, d: Document, item: str | None = None) -> DocumentOut:
        out = cls.model_validate(d, from_attributes=True)
        out.item = item
        return out


class ReviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["accepted", "returned"]
    #: Required when returning (``review_reason_required``); shown to the point on the item.
    reason: str | None = Field(default=None, max_length=REASON_MAX)


class MaterialItemOut(ChecklistItemOut):
    document_id: int | None
    review_reason: str | None


class TicketBrief(BaseModel):
    id: int
    number: str
    state: str


class MaterialsOut(BaseModel):
    """What a call screen shows beside the video: who, which case, which ticket, and the live checklist."""

    case_id: int
    number: str
    state: str
    matter_code: str
    matter_name_zh: str
    matter_name_en: str
    applicant_name: str
    #: Always masked (``110101********123X``), whoever asks.
    applicant_id_masked: str
    is_proxy: bool
    proxy_name: str | None
    #: The case's newest ticket, if it ever had one.
    ticket: TicketBrief | None
    checklist: list[MaterialItemOut]
    checklist_complete: bool
    documents: list[DocumentOut]


async def _push(call: Call, event: str, change: DocumentChange, data: dict[str, object]) -> None:
    """Tell everyone on the case at once; the database is the record, so a failed push is logged, not raised."""
    payload = {
        "case_id": change.document.case_id,
        "item": change.item,
        "item_status": change.item_status,
        **data,
    }
    for room in document_rooms(change):
        try:
            await call.services.signalling.notify(room, event, payload)
        except Exception:
            log.exception("push %s to %s failed", event, room)


class SignedUrlOut(BaseModel):
    url: str
    expires_at: datetime


@api.route(
    "POST",
    "/cases/{case_id}/documents",
    summary="Upload a material (multipart, part 'file')",
    tags=["documents"],
    query=UploadQuery,
    response=DocumentOut,
    status=201,
    raw_body=MULTIPART_FILE,
)
async def upload_document(call: Call) -> DocumentOut:
    sv, request = call.services, call.request
    target = await sv.documents.prepare_upload(call.me, call.path_int("case_id"), call.query.item)
    if request.content_length is not None and request.content_length > target.max_size + MULTIPART_OVERHEAD:
        raise PayloadTooLarge(
            "the file is larger than allowed", code="file_too_large", details={"max_size": target.max_size}
        )
    part = await file_part(request)
    change = await sv.documents.upload(call.me, target, part.filename, file_chunks(part))
    out = DocumentOut.of(change.document, change.item)
    await _push(call, "document.added", change, {"document": out.model_dump(mode="json")})
    return out


@api.route(
    "GET",
    "/cases/{case_id}/documents",
    summary="Materials of a case",
    tags=["documents"],
    response=Page[DocumentOut],
)
async def list_documents(call: Call) -> Page[DocumentOut]:
    sv, case_id = call.services, call.path_int("case_id")
    async with sv.db.transaction() as s:
        view = await sv.cases.load(s, call.me, case_id, Action.READ)
        rows = await CaseRepository(s).documents(case_id)
        codes = {i.id: i.code for i in await MatterRepository(s).checklist(view.case.matter_id)}
    items = [DocumentOut.of(d, codes.get(d.checklist_item_id or 0)) for d in rows]
    return Page[DocumentOut](items=items, total=len(rows), limit=len(rows), offset=0)


@api.route(
    "GET",
    "/cases/{case_id}/materials",
    summary="The call screen's case summary: applicant (ID masked), number, matter, ticket, live checklist",
    tags=["documents"],
    response=MaterialsOut,
)
async def case_materials(call: Call) -> MaterialsOut:
    sv, case_id = call.services, call.path_int("case_id")
    async with sv.db.transaction() as s:
        view = await sv.cases.load(s, call.me, case_id, Action.READ)
        checklist = await sv.documents.checklist_status(s, view.case.matter_id, case_id)
        rows = await CaseRepository(s).documents(case_id)
        codes = {i.id: i.code for i in await MatterRepository(s).checklist(view.case.matter_id)}
        tickets, _ = await TicketRepository(s).search(case_id=case_id, limit=1, offset=0)
    head = case_out(view, sv.clock.now())
    return MaterialsOut(
        case_id=case_id,
        number=head["number"],
        state=view.case.state,
        matter_code=view.matter.code,
        matter_name_zh=view.matter.name_zh,
        matter_name_en=view.matter.name_en,
        applicant_name=view.case.applicant_name,
        applicant_id_masked=head["applicant_id_masked"],
        is_proxy=view.case.is_proxy,
        proxy_name=view.case.proxy_name,
        ticket=TicketBrief(id=tickets[0].id, number=tickets[0].number, state=tickets[0].state) if tickets else None,
        checklist=[MaterialItemOut.model_validate(i) for i in checklist],
        checklist_complete=all(i["satisfied"] or not i["required"] for i in checklist),
        documents=[DocumentOut.of(d, codes.get(d.checklist_item_id or 0)) for d in rows],
    )


@api.route(
    "GET",
    "/cases/{case_id}/documents/{document_id}",
    summary="One material's metadata",
    tags=["documents"],
    response=DocumentOut,
)
async def get_document(call: Call) -> DocumentOut:
    sv = call.services
    async with sv.db.transaction() as s:
        doc = await sv.documents.get(s, call.me, call.path_int("case_id"), call.path_int("document_id"))
        view = await sv.cases.load(s, call.me, doc.case_id, Action.READ)
        codes = {i.id: i.code for i in await MatterRepository(s).checklist(view.case.matter_id)}
    return DocumentOut.of(doc, codes.get(doc.checklist_item_id or 0))


@api.route(
    "POST",
    "/cases/{case_id}/documents/{document_id}/review",
    summary="材料预审: accept a material, or return it for correction (补正) with a reason",
    tags=["documents"],
    body=ReviewBody,
    response=DocumentOut,
)
async def review_document(call: Call) -> DocumentOut:
    body: ReviewBody = call.body
    change = await call.services.documents.review(
        call.me, call.path_int("case_id"), call.path_int("document_id"), body.decision, body.reason
    )
    out = DocumentOut.of(change.document, change.item)
    await _push(call, "document.reviewed", change, {"document": out.model_dump(mode="json")})
    return out


@api.route(
    "GET",
    "/cases/{case_id}/documents/{document_id}/content",
    summary="Download a material",
    tags=["documents"],
    raw_response=binary_content(*DEFAULT_TYPES),
)
async def document_content(call: Call) -> web.StreamResponse:
    sv = call.services
    async with sv.db.transaction() as s:
        doc = await sv.documents.get(s, call.me, call.path_int("case_id"), call.path_int("document_id"))
    return await send_object(
        call.request,
        sv.store,
        doc.object_key,
        content_type=doc.content_type,
        size=doc.size,
        sha256=doc.sha256,
        filename=doc.filename,
    )


@api.route(
    "GET",
    "/cases/{case_id}/documents/{document_id}/url",
    summary="A short-lived signed URL for the material (for <img>, PDF preview, downloads)",
    tags=["documents"],
    response=SignedUrlOut,
)
async def document_url(call: Call) -> SignedUrlOut:
    sv = call.services
    async with sv.db.transaction() as s:
        doc = await sv.documents.get(s, call.me, call.path_int("case_id"), call.path_int("document_id"))
    ttl = sv.settings.object_store.signed_url_ttl
    url = await sv.store.signed_url(doc.object_key, expires_in=ttl, filename=doc.filename)
    return SignedUrlOut(url=url, expires_at=sv.clock.now() + timedelta(seconds=ttl))


@api.route(
    "DELETE",
    "/cases/{case_id}/documents/{document_id}",
    summary="Remove a material from an open case",
    tags=["documents"],
    status=204,
)
async def delete_document(call: Call) -> web.Response:
    change = await call.services.documents.delete(call.me, call.path_int("case_id"), call.path_int("document_id"))
    await _push(call, "document.removed", change, {"document_id": change.document.id})
    return web.Response(status=204)
