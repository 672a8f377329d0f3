"""Materials (材料): streaming upload into the object store, checklist status, download.

An upload is three steps, none of which holds a database transaction open
while bytes flow: (1) authorise and look up the checklist item; (2) sniff
the type from the first bytes and stream the body into the object store
under a fresh key, enforcing the size limit and hashing as it goes; (3) in
one transaction, insert the row and its audit entry.  If step 2 fails the
store keeps nothing; if step 3 fails the object is deleted again.  So an
aborted or rejected upload leaves neither row nor object.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import filetype
from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import Clock
from server.errors import Conflict, NotFound, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from server.objectstore import ObjectStore, ObjectTooLarge, StoredObject
from server.services import audit
from server.services.cases import OPEN_STATES, CaseService
from server.services.pictures import PICTURE_TYPES, verify_stored_picture
from server.services.policy import Action
from server.services.principal import Principal
from server.storage.cases import CaseRepository
from server.storage.database import Database
from server.storage.matters import MatterRepository
from server.storage.models import ChecklistItem, Document

log = logging.getLogger(__name__)

#: Types accepted when a document is not tied to a checklist item.
DEFAULT_TYPES = ("image/jpeg", "image/png", "image/webp", "application/pdf")
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "application/pdf": "pdf"}
#: ``filetype`` reads at most this many leading bytes.
SNIFF_BYTES = 8192
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_INVISIBLE = {"Cf", "Cc", "Cs", "Co", "Cn", "Zl", "Zp"}


def sanitise_filename(raw: str | None, content_type: str) -> str:
    """A display name that is safe in a header, a path and a UI; the extension follows the sniffed type.

    Drops any directory part, normalises Unicode (NFKC, so fullwidth tricks
    fold), removes control, format (bidi overrides) and reserved characters,
    and trims to 120 characters.
    """
    name = unicodedata.normalize("NFKC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _INVISIBLE)
    name = _UNSAFE.sub("_", name).strip().lstrip(".").strip()
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = stem[:100].strip() or "document"
    return f"{stem}.{_EXTENSIONS.get(content_type, 'bin')}"


@dataclass(frozen=True)
class UploadTarget:
    case_id: int
    item: ChecklistItem | None
    accepted: tuple[str, ...]
    max_size: int


async def put_sniffed(
    store: ObjectStore,
    body: AsyncIterator[bytes],
    accepted: tuple[str, ...],
    max_size: int,
    key_for: Callable[[str], str],
    *,
    wrong_type: str,
    too_large: str,
) -> tuple[str, str, StoredObject]:
    """Store an upload whose type is sniffed from its first bytes (never trusted from the client).

    Returns ``(key, detected type, stored object)``; ``key_for(detected)`` names the object. Refused with
    ``422 empty_file``, ``415 unsupported_type`` (the words ``wrong_type``), ``413 file_too_large`` (``too_large``)
    or ``422 image_undecodable`` (a picture that does not decode: :mod:`server.services.pictures`), and then
    nothing is stored.
    """
    head = b""
    async for chunk in body:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    if not head:
        raise ValidationFailed("the file is empty", code="empty_file")
    kind = filetype.guess(head[:SNIFF_BYTES])
    detected = kind.mime if kind else None
    if detected is None or detected not in accepted:
        raise UnsupportedMediaType(
            wrong_type, code="unsupported_type", details={"detected": detected, "accepted": list(accepted)}
        )

    async def stream() -> AsyncIterator[bytes]:
        yield head
        async for chunk in body:
            yield chunk

    key = key_for(detected)
    try:
        stored = await store.put(key, stream(), content_type=detected, max_size=max_size)
    except ObjectTooLarge:
        raise PayloadTooLarge(too_large, code="file_too_large", details={"max_size": max_size}) from None
    if detected in PICTURE_TYPES:
        try:
            await verify_stored_picture(store, key)
        except BaseException:
            await store.delete(key)
            raise
    return key, detected, stored


class DocumentService:
    def __init__(
        self, *, db: Database, store: ObjectStore, cases: CaseService, clock: Clock, global_max_size: int
    ) -> None:
        self.db = db
        self.store = store
        self.cases = cases
        self.clock = clock
        self.global_max_size = global_max_size

    async def prepare_upload(self, principal: Principal, case_id: int, item_code: str | None) -> UploadTarget:
        """Step 1: may this principal add a document here, and with what limits?"""
        async with self.db.transaction() as s:
            view = await self.cases.load(s, principal, case_id, Action.WRITE)
            if view.case.state not in OPEN_STATES:
                raise Conflict(
                    "materials can only be added while the case is open",
                    code="case_closed",
                    details={"state": view.case.state},
                )
            item = None
            if item_code is not None:
                item = await MatterRepository(s).checklist_item(view.case.matter_id, item_code)
                if item is None:
                    raise ValidationFailed(
                        "the matter has no such checklist item",
                        code="unknown_checklist_item",
                        details={"item": item_code},
                    )
        accepted = tuple(item.accepted_types) if item and item.accepted_types else DEFAULT_TYPES
        max_size = min(item.max_size, self.global_max_size) if item else self.global_max_size
        return UploadTarget(case_id, item, accepted, max_size)

    async def upload(
        self, principal: Principal, target: UploadTarget, filename: str | None, body: AsyncIterator[bytes]
    ) -> Document:
        """Steps 2 and 3 (see the module docstring)."""
        key, detected, stored = await put_sniffed(
            self.store,
            body,
            target.accepted,
            target.max_size,
            lambda _: f"cases/{target.case_id}/documents/{uuid.uuid4().hex}",
            wrong_type="this kind of file is not accepted here",
            too_large="the file is larger than allowed",
        )
        try:
            async with self.db.transaction() as s:
                # Re-check under the case lock: the case may have closed meanwhile.
                view = await self.cases.load(s, principal, target.case_id, Action.WRITE, for_update=True)
                if view.case.state not in OPEN_STATES:
                    raise Conflict("the case closed during the upload", code="case_closed")
                doc = Document(
                    case_id=target.case_id,
                    checklist_item_id=target.item.id if target.item else None,
                    filename=sanitise_filename(filename, detected),
                    content_type=detected,
                    size=stored.size,
                    sha256=stored.sha256,
                    object_key=key,
                    uploaded_by=principal.user_id,
                    created_at=self.clock.now(),
                )
                await CaseRepository(s).add_document(doc)
                await audit.append(
                    s,
                    self.clock,
                    target.case_id,
                    principal,
                    "document.uploaded",
                    {
                        "document_id": doc.id,
                        "item": target.item.code if target.item else None,
                        "sha256": stored.sha256,
                        "size": stored.size,
                    },
                )
        except BaseException:
            await self.store.delete(key)
            raise
        return doc

    async def get(self, s: AsyncSession, principal: Principal, case_id: int, document_id: int) -> Document:
        await self.cases.load(s, principal, case_id, Action.READ)
        doc = await CaseRepository(s).document(case_id, document_id)
        if doc is None:
            raise NotFound("no such document", code="document_not_found")
        return doc

    async def delete(self, principal: Principal, case_id: int, document_id: int) -> None:
        async with self.db.transaction() as s:
            view = await self.cases.load(s, principal, case_id, Action.WRITE, for_update=True)
            if view.case.state not in OPEN_STATES:
                raise Conflict("materials of a closed case cannot be removed", code="case_closed")
            doc = await CaseRepository(s).document(case_id, document_id)
            if doc is None:
                raise NotFound("no such document", code="document_not_found")
            key = doc.object_key
            await CaseRepository(s).delete_document(doc)
            await audit.append(
                s,
                self.clock,
                case_id,
                principal,
                "document.deleted",
                {"document_id": document_id, "sha256": doc.sha256},
            )
        try:
            await self.store.delete(key)
        except Exception:  # the row is gone; an orphan object is logged for the sweeper
            log.exception("could not delete object %s of removed document %s", key, document_id)

    async def checklist_status(self, s: AsyncSession, matter_id: int, case_id: int) -> list[dict[str, object]]:
        items = await MatterRepository(s).checklist(matter_id)
        docs = await CaseRepository(s).documents(case_id)
        counts: dict[int, int] = {}
        for d in docs:
            if d.checklist_item_id is not None:
                counts[d.checklist_item_id] = counts.get(d.checklist_item_id, 0) + 1
        return [
            {
                "code": i.code,
                "name_zh": i.name_zh,
                "name_en": i.name_en,
                "required": i.required,
                "accepted_types": list(i.accepted_types),
                "max_size": i.max_size,
                "documents": counts.get(i.id, 0),
                "satisfied": counts.get(i.id, 0) > 0,
            }
            for i in items
        ]


def missing_required(status: list[dict[str, object]]) -> list[str]:
    return [str(i["code"]) for i in status if i["required"] and not i["satisfied"]]
