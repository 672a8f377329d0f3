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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import filetype
from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import Clock
from server.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from server.objectstore import ObjectStore, ObjectTooLarge, StoredObject
from server.services import audit
from server.services.cases import OPEN_STATES, CaseService, CaseView
from server.services.pictures import PICTURE_TYPES, PictureSpool
from server.services.policy import Action
from server.services.principal import Principal, Role
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


#: A document's review (材料预审): ``pending`` until a clerk accepts it or returns it for correction (补正).
REVIEW_STATES = ("pending", "accepted", "returned")
#: A checklist item's status, from its newest document: none (``missing``), or that document's review state.
ITEM_STATUSES = ("missing", *REVIEW_STATES)
Decision = Literal["accepted", "returned"]
REASON_MAX = 500


def item_status(docs: Sequence[Document]) -> str:
    """The status of one checklist item from its documents (any order).

    The newest document decides: a re-upload after a return supersedes the
    returned one (which stays in the file, still marked returned), and a
    return of the newest document makes the item unsatisfied again even if
    an older one was accepted: the clerk asked for a correction.
    """
    if not docs:
        return "missing"
    return max(docs, key=lambda d: d.id).review_state


def satisfied(status: str) -> bool:
    """An item counts towards a complete checklist unless it is missing or was returned for correction."""
    return status in ("pending", "accepted")


@dataclass(frozen=True)
class DocumentChange:
    """A committed change to a case's materials, with what its push needs (see :func:`document_rooms`)."""

    document: Document
    item: str | None
    unit_id: int
    department_id: int
    #: The checklist item's status after the change (``None`` for a document tied to no item).
    item_status: str | None


def document_rooms(change: DocumentChange) -> tuple[str, ...]:
    """Who is told at once: the point's staff (``unit:``) and the clerks of the case's department
    (``department:``), exactly the non-admin roles that may act on the case (``server.services.policy``)."""
    return (f"unit:{change.unit_id}", f"department:{change.department_id}")


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

    # A picture is copied as it streams to the store, and decoded from that copy once it is stored.
    spool = PictureSpool() if detected in PICTURE_TYPES else None

    async def stream() -> AsyncIterator[bytes]:
        if spool is not None:
            await spool.feed(head)
        yield head
        async for chunk in body:
            if spool is not None:
                await spool.feed(chunk)
            yield chunk

    key = key_for(detected)
    try:
        try:
            stored = await store.put(key, stream(), content_type=detected, max_size=max_size)
        except ObjectTooLarge:
            raise PayloadTooLarge(too_large, code="file_too_large", details={"max_size": max_size}) from None
        if spool is not None:
            try:
                await spool.verify()
            except BaseException:
                await store.delete(key)
                raise
    finally:
        if spool is not None:
            spool.close()
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
    ) -> DocumentChange:
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
                repo = CaseRepository(s)
                before = await self._item_documents(s, target.case_id, target.item)
                await repo.add_document(doc)
                details: dict[str, object] = {
                    "document_id": doc.id,
                    "item": target.item.code if target.item else None,
                    "sha256": stored.sha256,
                    "size": stored.size,
                }
                if before and item_status(before) == "returned":
                    # The re-upload after a return for correction (补正) supersedes the returned document.
                    details["replaces"] = max(before, key=lambda d: d.id).id
                await audit.append(s, self.clock, target.case_id, principal, "document.uploaded", details)
        except BaseException:
            await self.store.delete(key)
            raise
        return DocumentChange(
            doc,
            target.item.code if target.item else None,
            view.case.unit_id,
            view.case.department_id,
            item_status([*before, doc]) if target.item else None,
        )

    async def _item_documents(self, s: AsyncSession, case_id: int, item: ChecklistItem | None) -> list[Document]:
        if item is None:
            return []
        return [d for d in await CaseRepository(s).documents(case_id) if d.checklist_item_id == item.id]

    async def review(
        self, principal: Principal, case_id: int, document_id: int, decision: Decision, reason: str | None
    ) -> DocumentChange:
        """材料预审: the clerk accepts the document or returns it for correction (补正) with a reason.

        Only a clerk (or admin) who may change the case, only while the case is
        open, and only the newest document of its checklist item (an older one
        was superseded by a re-upload).  A decision may be changed while the
        case is open; each one is audited.
        """
        reason = (reason or "").strip() or None
        if decision == "returned" and reason is None:
            raise ValidationFailed(
                "say why the material is returned", code="review_reason_required", details={"field": "reason"}
            )
        if reason is not None and len(reason) > REASON_MAX:
            raise ValidationFailed(
                "the reason is too long", code="review_reason_too_long", details={"max_length": REASON_MAX}
            )
        async with self.db.transaction() as s:
            view = await self.cases.load(s, principal, case_id, Action.WRITE, for_update=True)
            if principal.role not in (Role.CLERK, Role.ADMIN):
                raise Forbidden("only the clerk reviews materials", code="review_not_allowed")
            if view.case.state not in OPEN_STATES:
                raise Conflict(
                    "materials of a closed case cannot be reviewed",
                    code="case_closed",
                    details={"state": view.case.state},
                )
            repo = CaseRepository(s)
            doc = await repo.document(case_id, document_id)
            if doc is None:
                raise NotFound("no such document", code="document_not_found")
            item_code: str | None = None
            siblings: list[Document] = [doc]
            if doc.checklist_item_id is not None:
                siblings = [d for d in await repo.documents(case_id) if d.checklist_item_id == doc.checklist_item_id]
                newest = max(siblings, key=lambda d: d.id)
                if newest.id != doc.id:
                    raise Conflict(
                        "a newer upload replaced this material",
                        code="document_superseded",
                        details={"newest": newest.id},
                    )
                item_code = await self._item_code(s, view, doc.checklist_item_id)
            doc.review_state = decision
            doc.review_reason = reason
            doc.reviewed_by = principal.user_id
            doc.reviewed_at = self.clock.now()
            await s.flush()
            await audit.append(
                s,
                self.clock,
                case_id,
                principal,
                f"document.{decision}",
                {"document_id": doc.id, "item": item_code, "sha256": doc.sha256, "reason": reason},
            )
        return DocumentChange(
            doc,
            item_code,
            view.case.unit_id,
            view.case.department_id,
            item_status(siblings) if doc.checklist_item_id is not None else None,
        )

    async def _item_code(self, s: AsyncSession, view: CaseView, item_id: int) -> str | None:
        for i in await MatterRepository(s).checklist(view.case.matter_id):
            if i.id == item_id:
                return i.code
        return None

    async def get(self, s: AsyncSession, principal: Principal, case_id: int, document_id: int) -> Document:
        await self.cases.load(s, principal, case_id, Action.READ)
        doc = await CaseRepository(s).document(case_id, document_id)
        if doc is None:
            raise NotFound("no such document", code="document_not_found")
        return doc

    async def delete(self, principal: Principal, case_id: int, document_id: int) -> DocumentChange:
        async with self.db.transaction() as s:
            view = await self.cases.load(s, principal, case_id, Action.WRITE, for_update=True)
            if view.case.state not in OPEN_STATES:
                raise Conflict("materials of a closed case cannot be removed", code="case_closed")
            repo = CaseRepository(s)
            doc = await repo.document(case_id, document_id)
            if doc is None:
                raise NotFound("no such document", code="document_not_found")
            key = doc.object_key
            item_id = doc.checklist_item_id
            item_code = await self._item_code(s, view, item_id) if item_id is not None else None
            await repo.delete_document(doc)
            left = [d for d in await repo.documents(case_id) if item_id is not None and d.checklist_item_id == item_id]
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
        return DocumentChange(
            doc, item_code, view.case.unit_id, view.case.department_id, item_status(left) if item_id else None
        )

    async def checklist_status(self, s: AsyncSession, matter_id: int, case_id: int) -> list[dict[str, object]]:
        """Each checklist item with its live status (:func:`item_status`) and its newest document's review."""
        items = await MatterRepository(s).checklist(matter_id)
        docs = await CaseRepository(s).documents(case_id)
        by_item: dict[int, list[Document]] = {}
        for d in docs:
            if d.checklist_item_id is not None:
                by_item.setdefault(d.checklist_item_id, []).append(d)
        out: list[dict[str, object]] = []
        for i in items:
            mine = by_item.get(i.id, [])
            status = item_status(mine)
            newest = max(mine, key=lambda d: d.id) if mine else None
            out.append(
                {
                    "code": i.code,
                    "name_zh": i.name_zh,
                    "name_en": i.name_en,
                    "required": i.required,
                    "accepted_types": list(i.accepted_types),
                    "max_size": i.max_size,
                    "documents": len(mine),
                    "satisfied": satisfied(status),
                    "status": status,
                    "document_id": newest.id if newest else None,
                    "review_reason": newest.review_reason if newest else None,
                }
            )
        return out


def missing_required(status: list[dict[str, object]]) -> list[str]:
    return [str(i["code"]) for i in status if i["required"] and not i["satisfied"]]
