"""Cases (办件): opening, visibility, editing and the state machine.

States: ``draft → submitted → in_session → accepted | rejected → completed``,
or ``cancelled`` before a decision.  Each move is allowed only to the roles
in :data:`TRANSITIONS` and only on a case the actor may act on
(``server.services.policy``); anything else is a 409 (wrong state) or a
403/404 (wrong actor).  Every change writes the audit trail.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import Clock
from server.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.services import audit
from server.services.identity import id_number_hash, is_valid_id_number, normalise_id_number
from server.services.policy import Action, CaseScope, may
from server.services.principal import Principal, Role
from server.storage.cases import CaseFilter, CaseRepository
from server.storage.matters import MatterRepository
from server.storage.models import Case, Matter
from server.storage.orgs import OrgRepository
from server.storage.users import UserRepository

STATES = ("draft", "submitted", "in_session", "accepted", "rejected", "completed", "cancelled")
OPEN_STATES = frozenset({"draft", "submitted", "in_session"})

_STAFF = frozenset({Role.COMMUNITY_STAFF, Role.ADMIN})
_CLERK = frozenset({Role.CLERK, Role.ADMIN})

#: (from, to) → roles that may make the move.
TRANSITIONS: dict[tuple[str, str], frozenset[Role]] = {
    ("draft", "submitted"): _STAFF,
    ("draft", "cancelled"): _STAFF,
    ("submitted", "cancelled"): _STAFF,
    ("submitted", "in_session"): _CLERK,
    ("submitted", "accepted"): _CLERK,
    ("submitted", "rejected"): _CLERK,
    ("in_session", "submitted"): _CLERK,
    ("in_session", "accepted"): _CLERK,
    ("in_session", "rejected"): _CLERK,
    ("accepted", "completed"): _CLERK,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _check_id_number(value: str) -> str:
    value = normalise_id_number(value)
    if not is_valid_id_number(value):
        raise ValueError("not a valid 18-digit resident ID number")
    return value


class CaseCreate(_Strict):
    matter_code: str = Field(min_length=1, max_length=32)
    applicant_name: str = Field(min_length=1, max_length=100)
    applicant_id_number: str = Field(min_length=18, max_length=18)
    applicant_phone: str = Field(pattern=r"^\+?[0-9][0-9 -]{5,18}[0-9]$")
    is_proxy: bool = False
    proxy_name: str | None = Field(default=None, min_length=1, max_length=100)
    proxy_user_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    #: Only an admin opens a case on behalf of a unit; staff use their own.
    unit_code: str | None = Field(default=None, max_length=32)
    #: The centre whose department handles the case (the unit itself or an
    #: ancestor); default: the nearest one that has the matter's department.
    centre_code: str | None = Field(default=None, max_length=32)

    _id = field_validator("applicant_id_number")(_check_id_number)

    @model_validator(mode="after")
    def _proxy(self) -> CaseCreate:
        if self.is_proxy and not (self.proxy_name or self.proxy_user_id):
            raise ValueError("a proxy (代办) case needs proxy_name or proxy_user_id")
        if not self.is_proxy and (self.proxy_name or self.proxy_user_id):
            raise ValueError("proxy_name/proxy_user_id given but is_proxy is false")
        return self


class CaseUpdate(_Strict):
    applicant_name: str | None = Field(default=None, min_length=1, max_length=100)
    applicant_id_number: str | None = Field(default=None, min_length=18, max_length=18)
    applicant_phone: str | None = Field(default=None, pattern=r"^\+?[0-9][0-9 -]{5,18}[0-9]$")
    is_proxy: bool | None = None
    proxy_name: str | None = Field(default=None, max_length=100)

    @field_validator("applicant_id_number")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        return None if value is None else _check_id_number(value)


class Transition(_Strict):
    to: str = Field(pattern=r"^[a-z_]+$", max_length=16)
    reason: str | None = Field(default=None, max_length=2000)


@dataclass
class CaseView:
    case: Case
    matter: Matter
    scope: CaseScope


class CaseService:
    def __init__(self, *, clock: Clock, secret: str) -> None:
        self.clock = clock
        self.secret = secret

    # -- loading with authorisation ---------------------------------------

    async def scope_of(self, s: AsyncSession, case: Case) -> CaseScope:
        dept_path = await CaseRepository(s).department_unit_path(case.department_id)
        return CaseScope(case.id, case.unit_id, case.unit_path, case.department_id, dept_path)

    async def load(
        self, s: AsyncSession, principal: Principal, case_id: int, action: Action, *, for_update: bool = False
    ) -> CaseView:
        """The case if ``principal`` may do ``action`` on it.

        A case the principal may not even read is reported as not found, so
        ids do not leak which cases exist; one it may read but not change is 403.
        """
        case = await CaseRepository(s).get(case_id, for_update=for_update)
        if case is None:
            raise NotFound("no such case", code="case_not_found")
        scope = await self.scope_of(s, case)
        if not may(principal, Action.READ, scope):
            raise NotFound("no such case", code="case_not_found")
        if not may(principal, action, scope):
            raise Forbidden(f"you may not {action} this case", code="forbidden")
        matter = await MatterRepository(s).get(case.matter_id)
        assert matter is not None
        return CaseView(case, matter, scope)

    def visibility(self, principal: Principal) -> CaseFilter:
        match principal.role:
            case Role.ADMIN:
                return CaseFilter()
            case Role.COMMUNITY_STAFF:
                return CaseFilter(unit_id=principal.unit_id)
            case Role.CLERK:
                if principal.department_id is None:
                    return CaseFilter(nothing=True)
                return CaseFilter(department_id=principal.department_id)
            case Role.SUPERVISOR:
                return CaseFilter(subtree_path=principal.unit_path)
            case _:
                if principal.invite_case_id is not None:
                    return CaseFilter(case_id=principal.invite_case_id)
                return CaseFilter(nothing=True)

    async def search(
        self,
        s: AsyncSession,
        principal: Principal,
        *,
        state: str | None,
        matter_code: str | None,
        query: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[CaseView], int]:
        base = self.visibility(principal)
        matter_id: int | None = None
        if matter_code:
            matter = await MatterRepository(s).by_code(matter_code)
            if matter is None:
                return [], 0
            matter_id = matter.id
        f = CaseFilter(
            unit_id=base.unit_id,
            department_id=base.department_id,
            subtree_path=base.subtree_path,
            case_id=base.case_id,
            nothing=base.nothing,
            state=state,
            matter_id=matter_id,
            query=query,
        )
        rows, total = await CaseRepository(s).search(f, limit=limit, offset=offset)
        matters = MatterRepository(s)
        views = []
        for case in rows:
            matter = await matters.get(case.matter_id)
            assert matter is not None
            views.append(CaseView(case, matter, await self.scope_of(s, case)))
        return views, total

    # -- changes ------------------------------------------------------------

    async def create(self, s: AsyncSession, principal: Principal, body: CaseCreate) -> CaseView:
        orgs = OrgRepository(s)
        if principal.role is Role.ADMIN:
            if not body.unit_code:
                raise ValidationFailed("unit_code is required when an admin opens a case", code="unit_required")
            unit = await orgs.unit_by_code(body.unit_code)
            if unit is None:
                raise ValidationFailed("no such unit", code="unit_not_found", details={"unit_code": body.unit_code})
        elif principal.role is Role.COMMUNITY_STAFF:
            if body.unit_code is not None:
                raise ValidationFailed("staff open cases at their own unit", code="unit_not_allowed")
            assert principal.unit_id is not None
            unit = await orgs.unit(principal.unit_id)
            assert unit is not None
        else:
            raise Forbidden("only service-point staff open cases", code="forbidden")
        matter = await MatterRepository(s).by_code(body.matter_code)
        if matter is None or not matter.active:
            raise ValidationFailed("no such matter", code="matter_not_found", details={"matter_code": body.matter_code})
        if not matter.remote_capable:
            raise ValidationFailed("this matter cannot be handled remotely", code="matter_not_remote")
        candidates = [unit, *await orgs.ancestors(unit)]
        if body.centre_code is not None:
            candidates = [u for u in candidates if u.code == body.centre_code]
            if not candidates:
                raise ValidationFailed(
                    "centre_code must name this unit or a centre above it",
                    code="invalid_centre",
                    details={"centre_code": body.centre_code},
                )
        department = None
        for candidate in candidates:
            department = await orgs.department_by_code(candidate.id, matter.department_code)
            if department is not None:
                break
        if department is None:
            raise ValidationFailed(
                "no department above this unit handles the matter",
                code="no_department",
                details={"department_code": matter.department_code},
            )
        if body.proxy_user_id is not None:
            if principal.role is Role.COMMUNITY_STAFF and body.proxy_user_id != principal.user_id:
                raise ValidationFailed("staff can only name themselves as proxy", code="invalid_proxy")
            if await UserRepository(s).get(body.proxy_user_id) is None:
                raise ValidationFailed(
                    "no such user", code="user_not_found", details={"proxy_user_id": body.proxy_user_id}
                )
        now = self.clock.now()
        case = Case(
            matter_id=matter.id,
            unit_id=unit.id,
            unit_path=unit.path,
            department_id=department.id,
            applicant_name=body.applicant_name,
            applicant_id_number=body.applicant_id_number,
            applicant_id_hash=id_number_hash(self.secret, body.applicant_id_number),
            applicant_phone=body.applicant_phone,
            is_proxy=body.is_proxy,
            proxy_name=body.proxy_name,
            proxy_user_id=body.proxy_user_id,
            state="draft",
            reject_reason=None,
            created_by=principal.user_id,
            created_at=now,
            updated_at=now,
            submitted_at=None,
            due_at=None,
        )
        await CaseRepository(s).add(case)
        await audit.append(s, self.clock, case.id, principal, "case.created", {"matter": matter.code})
        return CaseView(case, matter, await self.scope_of(s, case))

    async def update(self, s: AsyncSession, principal: Principal, case_id: int, body: CaseUpdate) -> CaseView:
        view = await self.load(s, principal, case_id, Action.WRITE, for_update=True)
        case = view.case
        if case.state != "draft":
            raise Conflict("only a draft case can be edited", code="case_not_editable", details={"state": case.state})
        changes = body.model_dump(exclude_unset=True)
        if not changes:
            raise ValidationFailed("nothing to change", code="empty_update")
        for key, value in changes.items():
            if value is None and key != "proxy_name":
                raise ValidationFailed(f"{key} cannot be null", code="validation_error", details={"field": key})
            setattr(case, key, value)
        if "applicant_id_number" in changes:
            case.applicant_id_hash = id_number_hash(self.secret, case.applicant_id_number)
        if case.is_proxy and not (case.proxy_name or case.proxy_user_id):
            raise ValidationFailed("a proxy (代办) case needs proxy_name", code="validation_error")
        case.updated_at = self.clock.now()
        await s.flush()
        # The audit names the fields, never the values (the ID number must not leak).
        await audit.append(s, self.clock, case.id, principal, "case.updated", {"fields": sorted(changes)})
        return view

    async def transition(
        self,
        s: AsyncSession,
        principal: Principal,
        case_id: int,
        body: Transition,
        *,
        checklist_complete: bool | None = None,
        missing: list[str] | None = None,
        guard: Callable[[Case], Awaitable[None]] | None = None,
    ) -> CaseView:
        """Move the case; ``guard`` (the call state machine) may still refuse once the move is legal for the case."""
        view = await self.load(s, principal, case_id, Action.TRANSITION, for_update=True)
        case = view.case
        if body.to not in STATES:
            raise ValidationFailed("unknown state", code="unknown_state", details={"to": body.to, "states": STATES})
        roles = TRANSITIONS.get((case.state, body.to))
        if roles is None:
            raise Conflict(
                f"a {case.state} case cannot become {body.to}",
                code="illegal_transition",
                details={"from": case.state, "to": body.to, "allowed": self.allowed_moves(case.state)},
            )
        if principal.role not in roles:
            raise Forbidden(f"{principal.role} may not move a case to {body.to}", code="transition_forbidden")
        if body.to == "rejected" and not body.reason:
            raise ValidationFailed("a rejection needs a reason", code="reason_required")
        if body.to == "submitted" and case.state == "draft" and checklist_complete is False:
            raise Conflict(
                "required materials are missing",
                code="checklist_incomplete",
                details={"missing": missing or []},
            )
        if guard is not None:
            await guard(case)
        now = self.clock.now()
        previous = case.state
        case.state = body.to
        case.updated_at = now
        if body.to == "rejected":
            case.reject_reason = body.reason
        if body.to == "submitted" and case.submitted_at is None:
            case.submitted_at = now
            case.due_at = now + timedelta(days=view.matter.promised_days)
        await s.flush()
        details: dict[str, Any] = {"from": previous, "to": body.to}
        if body.reason:
            details["reason"] = body.reason
        await audit.append(s, self.clock, case.id, principal, "case.transition", details)
        return view

    @staticmethod
    def allowed_moves(state: str) -> list[str]:
        return sorted(to for (frm, to) in TRANSITIONS if frm == state)
