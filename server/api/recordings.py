"""Recordings in the case file: list, a short-lived signed URL to play one, and the case's legal hold."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select

from server.api.documents import SignedUrlOut
from server.api.routing import Api, Call, Page, PageQuery
from server.errors import Forbidden, NotFound
from server.services import audit
from server.services.policy import Action
from server.services.principal import Role
from server.services.recording import start_offsets
from server.storage.models import Case, Recording

api = Api()


class RecordingOut(BaseModel):
    id: int
    case_id: int
    session_id: int
    #: ``participant`` (a participant's camera and microphone), ``screen`` (their screen share) or ``composite``.
    kind: str
    #: The participant (one join: a rejoin is a new participant and a new file) whose media this is; null for
    #: the composite.  The same id as ``participant_id`` on the wire (docs/protocol.md).
    participant_id: str | None
    participant_display_name: str | None
    #: Seconds from the start of the session's recording (the media room opened at the first join) to this
    #: file's zero: lay files of one session on one timeline with it.  0 for the composite; null if unknown.
    start_offset_s: float | None = None
    content_type: str
    duration_s: float
    size: int
    sha256: str
    created_at: datetime


class LegalHold(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hold: bool


class LegalHoldOut(BaseModel):
    case_id: int
    legal_hold: bool


@api.route(
    "GET",
    "/cases/{case_id}/recordings",
    summary="Finished recordings of the case's sessions",
    tags=["recordings"],
    query=PageQuery,
    response=Page[RecordingOut],
)
async def list_recordings(call: Call) -> Page[RecordingOut]:
    sv, case_id = call.services, call.path_int("case_id")
    q = call.query
    async with sv.db.transaction() as s:
        await sv.cases.load(s, call.me, case_id, Action.READ)
        where = Recording.case_id == case_id
        total = int(await s.scalar(select(func.count()).select_from(Recording).where(where)) or 0)
        rows = (
            await s.execute(select(Recording).where(where).order_by(Recording.id).limit(q.limit).offset(q.offset))
        ).scalars()
        offsets = await start_offsets(s, case_id)
        items = [
            RecordingOut.model_validate(r, from_attributes=True).model_copy(
                update={"start_offset_s": offsets.get(r.id)}
            )
            for r in rows
        ]
    return Page[RecordingOut](items=items, total=total, limit=q.limit, offset=q.offset)


@api.route(
    "GET",
    "/cases/{case_id}/recordings/{recording_id}/url",
    summary="A short-lived signed URL to play or download a recording (HTTP Range supported)",
    tags=["recordings"],
    response=SignedUrlOut,
)
async def recording_url(call: Call) -> SignedUrlOut:
    sv, case_id = call.services, call.path_int("case_id")
    async with sv.db.transaction() as s:
        await sv.cases.load(s, call.me, case_id, Action.READ)
        row = await s.get(Recording, call.path_int("recording_id"))
        if row is None or row.case_id != case_id:
            raise NotFound("no such recording", code="recording_not_found")
    ttl = sv.settings.object_store.signed_url_ttl
    name = f"case-{case_id}-session-{row.session_id}-{row.kind}-{row.id}.webm"
    url = await sv.store.signed_url(row.object_key, expires_in=ttl, filename=name)
    return SignedUrlOut(url=url, expires_at=sv.clock.now() + timedelta(seconds=ttl))


@api.route(
    "PUT",
    "/cases/{case_id}/legal-hold",
    summary="Set or lift the case's legal hold (keeps its recordings past retention; supervisor, admin)",
    tags=["recordings"],
    body=LegalHold,
    response=LegalHoldOut,
)
async def legal_hold(call: Call) -> LegalHoldOut:
    sv, case_id = call.services, call.path_int("case_id")
    if call.me.role not in (Role.SUPERVISOR, Role.ADMIN):
        raise Forbidden("only a supervisor or an administrator sets a legal hold", code="forbidden")
    async with sv.db.transaction() as s:
        await sv.cases.load(s, call.me, case_id, Action.READ, for_update=True)
        case = await s.get(Case, case_id)
        assert case is not None
        if case.legal_hold != call.body.hold:
            case.legal_hold = call.body.hold
            await audit.append(s, sv.clock, case_id, call.me, "case.legal_hold", {"hold": call.body.hold})
        return LegalHoldOut(case_id=case_id, legal_hold=case.legal_hold)
