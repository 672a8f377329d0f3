"""Materials: streaming upload, list, download (direct or signed URL), delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ConfigDict, Field

from server.api.routing import MULTIPART_FILE, Api, Call, Page, binary_content
from server.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from server.objectstore.http import send_object
from server.services.documents import DEFAULT_TYPES
from server.services.policy import Action
from server.storage.cases import CaseRepository
from server.storage.models import Document

api = Api()
CHUNK = 1024 * 1024
#: Multipart framing allowance on top of the file itself.
MULTIPART_OVERHEAD = 64 * 1024


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

    @classmethod
    def of(cls, d: Document) -> DocumentOut:
        return cls.model_validate(d, from_attributes=True)


class SignedUrlOut(BaseModel):
    url: str
    expires_at: datetime


async def _file_part(request: web.Request) -> BodyPartReader:
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            "upload as multipart/form-data with a part named 'file'",
            code="unsupported_content_type",
            details={"got": request.content_type},
        )
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if isinstance(part, BodyPartReader) and part.name == "file":
                return part
            if isinstance(part, BodyPartReader):
                await part.release()
    except (ValueError, AssertionError, HttpProcessingError) as exc:
        raise _malformed(exc) from None
    raise BadRequest("no part named 'file' in the upload", code="missing_file")


def _malformed(exc: Exception) -> BadRequest:
    return BadRequest("malformed multipart body", code="malformed_multipart", details={"error": str(exc)[:200]})


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    """The part's bytes; a body cut off before its closing boundary is an error, never a short file."""
    while True:
        try:
            chunk = await part.read_chunk(CHUNK)
        except (ValueError, AssertionError, HttpProcessingError) as exc:
            raise _malformed(exc) from None
        if not chunk:
            if not part.at_eof():
                raise _malformed(ValueError("body ended before the closing boundary"))
            return
        yield chunk


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
    part = await _file_part(request)
    doc = await sv.documents.upload(call.me, target, part.filename, _chunks(part))
    return DocumentOut.of(doc)


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
        await sv.cases.load(s, call.me, case_id, Action.READ)
        rows = await CaseRepository(s).documents(case_id)
    return Page[DocumentOut](items=[DocumentOut.of(d) for d in rows], total=len(rows), limit=len(rows), offset=0)


@api.route(
    "GET",
    "/cases/{case_id}/documents/{document_id}",
    summary="One material's metadata",
    tags=["documents"],
    response=DocumentOut,
)
async def get_document(call: Call) -> DocumentOut:
    async with call.services.db.transaction() as s:
        doc = await call.services.documents.get(s, call.me, call.path_int("case_id"), call.path_int("document_id"))
    return DocumentOut.of(doc)


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
    await call.services.documents.delete(call.me, call.path_int("case_id"), call.path_int("document_id"))
    return web.Response(status=204)
