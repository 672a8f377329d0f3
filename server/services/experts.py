"""The expert library (专家库): experts by field, department, contact and availability; consultation notes.

Staff (admin, supervisor, clerk, community staff) search the library to
pick whom to invite; admins keep it; an expert with an account sets their
own availability.  Notes and the conclusion of a consultation are written
into the case (``case_notes``) and audited.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import Clock
from server.errors import Conflict, Forbidden, NotFound, ValidationFailed
from server.services import audit
from server.services.cases import CaseService
from server.services.policy import Action, may
from server.services.principal import Principal, Role
from server.storage.experts import ExpertRepository, NoteRepository
from server.storage.models import CaseNote, Expert
from server.storage.sessions import SessionRepository
from server.storage.users import UserRepository

Availability = Literal["available", "busy", "unavailable"]
#: Roles that may search the library (the invitee roles may not).
LIBRARY_READERS = (Role.ADMIN, Role.SUPERVISOR, Role.CLERK, Role.COMMUNITY_STAFF)
_FIELD = r"^[a-z0-9_]{1,64}$"


class ExpertCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    title: str | None = Field(default=None, max_length=100)
    organisation: str = Field(min_length=1, max_length=200)
    department_code: str | None = Field(default=None, pattern=r"^[a-z_]{1,64}$")
    fields: list[str] = Field(min_length=1, max_length=20)
    phone: str | None = Field(default=None, pattern=r"^[0-9+\- ]{3,32}$")
    email: str | None = Field(default=None, max_length=200, pattern=r"^[^@\s]+@[^@\s]+$")
    availability: Availability = "available"
    note: str | None = Field(default=None, max_length=2000)
    #: The expert's account (role ``expert``), if any.
    user_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


class ExpertUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=100)
    title: str | None = Field(default=None, max_length=100)
    organisation: str | None = Field(default=None, min_length=1, max_length=200)
    department_code: str | None = Field(default=None, pattern=r"^[a-z_]{1,64}$")
    fields: list[str] | None = Field(default=None, min_length=1, max_length=20)
    phone: str | None = Field(default=None, pattern=r"^[0-9+\- ]{3,32}$")
    email: str | None = Field(default=None, max_length=200, pattern=r"^[^@\s]+@[^@\s]+$")
    availability: Availability | None = None
    note: str | None = Field(default=None, max_length=2000)
    active: bool | None = None


class NoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: Literal["note", "conclusion"] = "note"
    text: str = Field(min_length=1, max_length=20_000)
    session_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


def _check_fields(fields: list[str]) -> list[str]:
    bad = [f for f in fields if not re.match(_FIELD, f)]
    if bad:
        raise ValidationFailed(
            "fields are lower-case codes (food_safety)", code="validation_error", details={"fields": bad}
        )
    return fields


class ExpertService:
    def __init__(self, *, clock: Clock, cases: CaseService) -> None:
        self.clock = clock
        self.cases = cases

    @staticmethod
    def require_reader(principal: Principal) -> None:
        if principal.role not in LIBRARY_READERS or principal.invite_case_id is not None:
            raise Forbidden("the expert library is for staff", code="forbidden")

    async def search(
        self,
        s: AsyncSession,
        principal: Principal,
        *,
        field: str | None,
        department_code: str | None,
        availability: str | None,
        query: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[tuple[Expert, list[str]]], int]:
        self.require_reader(principal)
        repo = ExpertRepository(s)
        rows, total = await repo.search(
            field=field,
            department_code=department_code,
            availability=availability,
            query=query,
            limit=limit,
            offset=offset,
        )
        fields = await repo.fields([r.id for r in rows])
        return [(r, fields[r.id]) for r in rows], total

    async def get(self, s: AsyncSession, principal: Principal, expert_id: int) -> tuple[Expert, list[str]]:
        repo = ExpertRepository(s)
        row = await repo.get(expert_id)
        own = row is not None and principal.user_id is not None and row.user_id == principal.user_id
        if not own:
            self.require_reader(principal)
        if row is None:
            raise NotFound("no such expert", code="expert_not_found")
        return row, (await repo.fields([row.id]))[row.id]

    async def create(self, s: AsyncSession, principal: Principal, body: ExpertCreate) -> tuple[Expert, list[str]]:
        if principal.role is not Role.ADMIN:
            raise Forbidden("only an administrator keeps the expert library", code="forbidden")
        fields = _check_fields(body.fields)
        repo = ExpertRepository(s)
        if body.user_id is not None:
            user = await UserRepository(s).get(body.user_id)
            if user is None or user.role != str(Role.EXPERT):
                raise ValidationFailed(
                    "user_id must name an account with the expert role",
                    code="invalid_expert_account",
                    details={"user_id": body.user_id},
                )
            if await repo.by_user(body.user_id) is not None:
                raise Conflict("this account is already in the library", code="expert_account_taken")
        now = self.clock.now()
        row = Expert(
            user_id=body.user_id,
            name=body.name,
            title=body.title,
            organisation=body.organisation,
            department_code=body.department_code,
            phone=body.phone,
            email=body.email,
            availability=body.availability,
            note=body.note,
            active=True,
            created_at=now,
            updated_at=now,
        )
        await repo.add(row, fields)
        return row, sorted(set(fields))

    async def update(
        self, s: AsyncSession, principal: Principal, expert_id: int, body: ExpertUpdate
    ) -> tuple[Expert, list[str]]:
        repo = ExpertRepository(s)
        row = await repo.get(expert_id)
        own = row is not None and principal.user_id is not None and row.user_id == principal.user_id
        if principal.role is not Role.ADMIN:
            if not own or principal.invite_case_id is not None:
                self.require_reader(principal)
                raise Forbidden("only an administrator or the expert may change this entry", code="forbidden")
            if body.model_dump(exclude_unset=True).keys() - {"availability"}:
                raise Forbidden("an expert may change only their availability", code="forbidden")
        if row is None:
            raise NotFound("no such expert", code="expert_not_found")
        changes = body.model_dump(exclude_unset=True)
        fields = changes.pop("fields", None)
        for key, value in changes.items():
            if value is None and key in ("name", "organisation", "availability", "active"):
                raise ValidationFailed(f"{key} may not be null", code="validation_error")
            setattr(row, key, value)
        if fields is not None:
            await repo.set_fields(row.id, _check_fields(fields))
        row.updated_at = self.clock.now()
        await s.flush()
        return row, (await repo.fields([row.id]))[row.id]

    # -- consultation notes -------------------------------------------------

    async def add_note(self, s: AsyncSession, principal: Principal, case_id: int, body: NoteCreate) -> CaseNote:
        """Notes: whoever may change the case, or an expert invited to it; the conclusion: a clerk or admin."""
        view = await self.cases.load(s, principal, case_id, Action.READ, for_update=True)
        writer = may(principal, Action.WRITE, view.scope)
        invited_expert = principal.role is Role.EXPERT and principal.invite_case_id == case_id
        if body.kind == "conclusion":
            if not (writer and principal.role in (Role.CLERK, Role.ADMIN)):
                raise Forbidden("the conclusion is written by the case's clerk", code="forbidden")
        elif not (writer or invited_expert):
            raise Forbidden("you may not write notes into this case", code="forbidden")
        if body.session_id is not None:
            session = await SessionRepository(s).get(body.session_id)
            if session is None or session.case_id != case_id:
                raise NotFound("no such session in this case", code="session_not_found")
        row = await NoteRepository(s).add(
            CaseNote(
                case_id=case_id,
                session_id=body.session_id,
                kind=body.kind,
                text=body.text,
                author_user_id=principal.user_id,
                author_name=principal.display_name,
                author_role=str(principal.role),
                created_at=self.clock.now(),
            )
        )
        await audit.append(
            s,
            self.clock,
            case_id,
            principal,
            f"consultation.{body.kind}",
            {"note_id": row.id, "session_id": body.session_id, "length": len(body.text)},
        )
        return row

    async def notes(self, s: AsyncSession, principal: Principal, case_id: int) -> list[CaseNote]:
        await self.cases.load(s, principal, case_id, Action.READ)
        return list(await NoteRepository(s).for_case(case_id))
