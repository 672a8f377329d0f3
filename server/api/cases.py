"""Cases (办件): list, open, edit, move through states, audit trail, invites."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from server.api.routing import Api, Call, Page, client_addr
from server.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.services import audit
from server.services.cases import CaseCreate, CaseUpdate, CaseView, Transition
from server.services.documents import missing_required
from server.services.identity import mask_id_number, mask_phone
from server.services.policy import Action, may, may_inspect
from server.services.principal import Role
from server.services.queue import Outbox
from server.storage.cases import CaseRepository
from server.storage.experts import ExpertRepository
from server.storage.sessions import SessionRepository
from server.storage.users import InviteRepository

api = Api()


class CaseQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: str | None = Field(default=None, pattern=r"^[a-z_]{1,16}$")
    matter: str | None = Field(default=None, max_length=32)
    q: str | None = Field(default=None, max_length=100)
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class CaseOut(BaseModel):
    id: int
    number: str
    matter_code: str
    matter_name_zh: str
    matter_name_en: str
    unit_id: int
    department_id: int
    state: str
    applicant_name: str
    #: Always masked (``110101********123X``).
    applicant_id_masked: str
    is_proxy: bool
    proxy_name: str | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    due_at: datetime | None
    overdue: bool


class ChecklistItemOut(BaseModel):
    """One checklist item of a case with its live status (shared by the case detail and the call summary)."""

    code: str
    name_zh: str
    name_en: str
    required: bool
    accepted_types: list[str]
    max_size: int
    documents: int
    satisfied: bool
    #: ``missing``, ``pending`` (uploaded, not reviewed), ``accepted`` or ``returned`` (材料预审): the newest document.
    status: str


class ChecklistEntry(ChecklistItemOut):
    review_reason: str | None


class CaseDetailOut(CaseOut):
    #: Unmasked only for those who may change the case (staff of the point, the clerk, admin).
    applicant_id_number: str | None
    #: Masked (``138****8000``) for an invited expert, inspector or guest.
    applicant_phone: str
    reject_reason: str | None
    allowed_transitions: list[str]
    checklist: list[ChecklistEntry]
    checklist_complete: bool


class AuditEntryOut(BaseModel):
    seq: int
    at: datetime
    actor_user_id: int | None
    actor_role: str
    actor_name: str
    action: str
    details: dict[str, Any]
    client_addr: str | None
    hash: str


class AuditOut(BaseModel):
    entries: list[AuditEntryOut]
    verified: bool
    broken_at: int | None


class InviteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    role: Role = Role.EXPERT
    #: Required unless ``expert_id`` names a library entry (its name is then the default).
    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    invitee_user_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    ttl_seconds: int | None = Field(default=None, ge=60, le=7 * 24 * 3600)
    #: Scope the invite to this one (open) session of the case: it joins nothing else.
    session_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    #: Invite this expert of the library (role ``expert``; their account, if any, is the invitee).
    expert_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


class InviteOut(BaseModel):
    id: int
    case_id: int
    role: str
    display_name: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None
    session_id: int | None = None
    expert_id: int | None = None
    #: Returned once, at creation; only its hash is kept.
    token: str | None = None


class RedeemBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=10, max_length=200)


class RedeemOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int
    case_id: int
    role: str
    display_name: str
    #: The session the invite admits to (join it with ``session.join``), if it is scoped to one.
    session_id: int | None = None


def _number(view: CaseView) -> str:
    return f"CW{view.case.created_at:%Y%m%d}-{view.case.id:06d}"


def case_out(view: CaseView, now: datetime) -> dict[str, Any]:
    c, m = view.case, view.matter
    return {
        "id": c.id,
        "number": _number(view),
        "matter_code": m.code,
        "matter_name_zh": m.name_zh,
        "matter_name_en": m.name_en,
        "unit_id": c.unit_id,
        "department_id": c.department_id,
        "state": c.state,
        "applicant_name": c.applicant_name,
        "applicant_id_masked": mask_id_number(c.applicant_id_number),
        "is_proxy": c.is_proxy,
        "proxy_name": c.proxy_name,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "submitted_at": c.submitted_at,
        "due_at": c.due_at,
        "overdue": bool(c.due_at and c.state not in ("completed", "rejected", "cancelled") and c.due_at < now),
    }


async def _detail(call: Call, view: CaseView) -> CaseDetailOut:
    sv = call.services
    async with sv.db.transaction() as s:
        checklist = await sv.documents.checklist_status(s, view.case.matter_id, view.case.id)
    writer = may(call.me, Action.WRITE, view.scope)
    c = view.case
    return CaseDetailOut(
        **case_out(view, sv.clock.now()),
        applicant_id_number=c.applicant_id_number if writer else None,
        # An invited expert, inspector or guest needs to know who, not how to reach them.
        applicant_phone=mask_phone(c.applicant_phone) if call.me.invite_id is not None else c.applicant_phone,
        reject_reason=c.reject_reason,
        allowed_transitions=sv.cases.allowed_moves(c.state) if may(call.me, Action.TRANSITION, view.scope) else [],
        checklist=[ChecklistEntry.model_validate(i) for i in checklist],
        checklist_complete=not missing_required(checklist),
    )


@api.route(
    "GET",
    "/cases",
    summary="Cases visible to the caller",
    tags=["cases"],
    query=CaseQuery,
    response=Page[CaseOut],
)
async def list_cases(call: Call) -> Page[CaseOut]:
    q, sv = call.query, call.services
    async with sv.db.transaction() as s:
        views, total = await sv.cases.search(
            s, call.me, state=q.state, matter_code=q.matter, query=q.q, limit=q.limit, offset=q.offset
        )
    now = sv.clock.now()
    return Page[CaseOut](
        items=[CaseOut(**case_out(v, now)) for v in views], total=total, limit=q.limit, offset=q.offset
    )


@api.route(
    "POST",
    "/cases",
    summary="Open a case for a matter at the caller's service point",
    tags=["cases"],
    body=CaseCreate,
    response=CaseDetailOut,
    status=201,
)
async def create_case(call: Call) -> CaseDetailOut:
    async with call.services.db.transaction() as s:
        view = await call.services.cases.create(s, call.me, call.body)
    return await _detail(call, view)


@api.route(
    "GET",
    "/cases/{case_id}",
    summary="One case with its checklist status",
    tags=["cases"],
    response=CaseDetailOut,
)
async def get_case(call: Call) -> CaseDetailOut:
    async with call.services.db.transaction() as s:
        view = await call.services.cases.load(s, call.me, call.path_int("case_id"), Action.READ)
    return await _detail(call, view)


@api.route(
    "PATCH",
    "/cases/{case_id}",
    summary="Edit a draft case's applicant data",
    tags=["cases"],
    body=CaseUpdate,
    response=CaseDetailOut,
)
async def update_case(call: Call) -> CaseDetailOut:
    async with call.services.db.transaction() as s:
        view = await call.services.cases.update(s, call.me, call.path_int("case_id"), call.body)
    return await _detail(call, view)


@api.route(
    "POST",
    "/cases/{case_id}/transitions",
    summary="Move a case to another state",
    tags=["cases"],
    body=Transition,
    response=CaseDetailOut,
)
async def transition_case(call: Call) -> CaseDetailOut:
    sv, case_id, out = call.services, call.path_int("case_id"), Outbox()
    async with sv.db.transaction() as s:
        complete: bool | None = None
        missing: list[str] = []
        if call.body.to == "submitted":
            view = await sv.cases.load(s, call.me, case_id, Action.READ)
            missing = missing_required(await sv.documents.checklist_status(s, view.case.matter_id, case_id))
            complete = not missing
        view = await sv.queue.move_case(
            s, call.me, case_id, call.body, out, checklist_complete=complete, missing=missing
        )
    await sv.queue.publish(out)
    return await _detail(call, view)


@api.route(
    "GET",
    "/cases/{case_id}/audit",
    summary="The case's audit trail, verified",
    tags=["cases"],
    response=AuditOut,
    invitees=False,
)
async def case_audit(call: Call) -> AuditOut:
    sv, case_id = call.services, call.path_int("case_id")
    async with sv.db.transaction() as s:
        await sv.cases.load(s, call.me, case_id, Action.READ)
        entries = list(await CaseRepository(s).audit(case_id))
    result = audit.verify_entries(case_id, entries)
    return AuditOut(
        entries=[AuditEntryOut.model_validate(e, from_attributes=True) for e in entries],
        verified=result.ok,
        broken_at=result.broken_at,
    )


# -- invites ----------------------------------------------------------------


def _invite_out(invite: Any, token: str | None = None) -> InviteOut:
    out = InviteOut.model_validate(invite, from_attributes=True)
    out.token = token
    return out


@api.route(
    "POST",
    "/cases/{case_id}/invites",
    summary="Invite an expert, inspector or outside party",
    tags=["invites"],
    body=InviteCreate,
    response=InviteOut,
    status=201,
)
async def create_invite(call: Call) -> InviteOut:
    sv, case_id = call.services, call.path_int("case_id")
    body = call.body
    async with sv.db.transaction() as s:
        view = await sv.cases.load(s, call.me, case_id, Action.WRITE)
        if body.role not in (Role.EXPERT, Role.INSPECTOR, Role.GUEST):
            raise ValidationFailed("invites are for experts, inspectors and guests", code="invalid_invite_role")
        if body.role is Role.INSPECTOR and not may_inspect(call.me, view.scope):
            # An inspector's photos and fixes are signed by the server as evidence: only the inspecting side
            # (the case's department) names who reports from the site, never the applicant's own service point.
            raise Forbidden("only the inspecting department invites an inspector", code="inspector_invite_forbidden")
        display_name, invitee = body.display_name, body.invitee_user_id
        if body.expert_id is not None:
            expert = await ExpertRepository(s).get(body.expert_id)
            if expert is None or not expert.active:
                raise NotFound("no such expert", code="expert_not_found")
            if body.role is not Role.EXPERT:
                raise ValidationFailed("an expert of the library is invited as an expert", code="invalid_invite_role")
            display_name = display_name or expert.name
            invitee = invitee or expert.user_id
        if display_name is None:
            raise ValidationFailed(
                "display_name is required",
                code="validation_error",
                details={"errors": [{"loc": ["display_name"], "message": "required", "type": "missing"}]},
            )
        if body.session_id is not None:
            session = await SessionRepository(s).get(body.session_id)
            if session is None or session.case_id != case_id:
                raise NotFound("no such session in this case", code="session_not_found")
            if session.state != "open":
                raise Conflict("the session has ended", code="session_ended")
        invite, token = await sv.auth.create_invite(
            s,
            case_id=case_id,
            created_by=call.me,
            role=body.role,
            display_name=display_name,
            invitee_user_id=invitee,
            ttl=body.ttl_seconds,
            session_id=body.session_id,
            expert_id=body.expert_id,
        )
        await audit.append(
            s,
            sv.clock,
            case_id,
            call.me,
            "invite.created",
            {
                "invite_id": invite.id,
                "role": invite.role,
                "display_name": invite.display_name,
                "session_id": invite.session_id,
                "expert_id": invite.expert_id,
            },
        )
    return _invite_out(invite, token)


@api.route("GET", "/cases/{case_id}/invites", summary="Invites of a case", tags=["invites"], response=Page[InviteOut])
async def list_invites(call: Call) -> Page[InviteOut]:
    sv, case_id = call.services, call.path_int("case_id")
    async with sv.db.transaction() as s:
        await sv.cases.load(s, call.me, case_id, Action.WRITE)
        rows = await InviteRepository(s).for_case(case_id)
    return Page[InviteOut](items=[_invite_out(i) for i in rows], total=len(rows), limit=len(rows), offset=0)


@api.route("DELETE", "/cases/{case_id}/invites/{invite_id}", summary="Revoke an invite", tags=["invites"], status=204)
async def revoke_invite(call: Call) -> web.Response:
    sv, case_id, invite_id = call.services, call.path_int("case_id"), call.path_int("invite_id")
    async with sv.db.transaction() as s:
        await sv.cases.load(s, call.me, case_id, Action.WRITE)
        invite = await InviteRepository(s).get(invite_id)
        if invite is None or invite.case_id != case_id:
            raise NotFound("no such invite", code="invite_not_found")
        await sv.auth.revoke_invite(s, invite)
        await audit.append(s, sv.clock, case_id, call.me, "invite.revoked", {"invite_id": invite_id})
    return web.Response(status=204)


@api.route(
    "POST",
    "/cases/{case_id}/invites/redeem",
    summary="Join a case's session through an invite link",
    tags=["invites"],
    body=RedeemBody,
    response=RedeemOut,
    auth=False,
)
async def redeem_invite(call: Call) -> RedeemOut:
    return await _redeem(call, case_id=call.path_int("case_id"), session_id=None)


@api.route(
    "POST",
    "/sessions/{session_id}/invites/redeem",
    summary="Join a consultation or inspection session through its invite link",
    tags=["invites"],
    body=RedeemBody,
    response=RedeemOut,
    auth=False,
)
async def redeem_session_invite(call: Call) -> RedeemOut:
    return await _redeem(call, case_id=None, session_id=call.path_int("session_id"))


async def _redeem(call: Call, *, case_id: int | None, session_id: int | None) -> RedeemOut:
    sv = call.services
    addr = client_addr(call.request, sv.settings.trust_forwarded_for, sv.settings.trusted_proxies)
    async with sv.db.transaction() as s:
        invite, pair = await sv.auth.redeem_invite(
            s, case_id=case_id, session_id=session_id, token=call.body.token, client_addr=addr
        )
        await audit.append(
            s,
            sv.clock,
            invite.case_id,
            None,
            "invite.redeemed",
            {
                "invite_id": invite.id,
                "role": invite.role,
                "display_name": invite.display_name,
                "client_addr": addr,
            },
        )
    return RedeemOut(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        case_id=invite.case_id,
        role=invite.role,
        display_name=invite.display_name,
        session_id=invite.session_id,
    )
