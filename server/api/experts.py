"""The expert library (专家库) and consultation notes of a case."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from server.api.routing import Api, Call, Page
from server.services.experts import ExpertCreate, ExpertUpdate, NoteCreate
from server.storage.models import CaseNote, Expert

api = Api()


class ExpertQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,64}$")
    department: str | None = Field(default=None, pattern=r"^[a-z_]{1,64}$")
    availability: str | None = Field(default=None, pattern=r"^(available|busy|unavailable)$")
    q: str | None = Field(default=None, min_length=1, max_length=100)
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class ExpertOut(BaseModel):
    id: int
    user_id: int | None
    name: str
    title: str | None
    organisation: str
    department_code: str | None
    fields: list[str]
    phone: str | None
    email: str | None
    availability: str
    note: str | None
    active: bool
    updated_at: datetime

    @classmethod
    def of(cls, row: Expert, fields: list[str]) -> ExpertOut:
        return cls.model_validate({**{c: getattr(row, c) for c in cls.model_fields if c != "fields"}, "fields": fields})


class NoteOut(BaseModel):
    id: int
    case_id: int
    session_id: int | None
    kind: str
    text: str
    author_user_id: int | None
    author_name: str
    author_role: str
    created_at: datetime

    @classmethod
    def of(cls, row: CaseNote) -> NoteOut:
        return cls.model_validate(row, from_attributes=True)


@api.route(
    "GET",
    "/experts",
    summary="Search the expert library (by field, department, availability, name)",
    tags=["experts"],
    query=ExpertQuery,
    response=Page[ExpertOut],
)
async def list_experts(call: Call) -> Page[ExpertOut]:
    q, sv = call.query, call.services
    async with sv.db.transaction() as s:
        rows, total = await sv.experts.search(
            s,
            call.me,
            field=q.field,
            department_code=q.department,
            availability=q.availability,
            query=q.q,
            limit=q.limit,
            offset=q.offset,
        )
    return Page[ExpertOut](items=[ExpertOut.of(r, f) for r, f in rows], total=total, limit=q.limit, offset=q.offset)


@api.route(
    "POST",
    "/experts",
    summary="Add an expert to the library (admin)",
    tags=["experts"],
    body=ExpertCreate,
    response=ExpertOut,
    status=201,
)
async def create_expert(call: Call) -> ExpertOut:
    async with call.services.db.transaction() as s:
        row, fields = await call.services.experts.create(s, call.me, call.body)
    return ExpertOut.of(row, fields)


@api.route("GET", "/experts/{expert_id}", summary="One expert of the library", tags=["experts"], response=ExpertOut)
async def get_expert(call: Call) -> ExpertOut:
    async with call.services.db.transaction() as s:
        row, fields = await call.services.experts.get(s, call.me, call.path_int("expert_id"))
    return ExpertOut.of(row, fields)


@api.route(
    "PATCH",
    "/experts/{expert_id}",
    summary="Change an expert's entry (admin) or availability (the expert)",
    tags=["experts"],
    body=ExpertUpdate,
    response=ExpertOut,
)
async def update_expert(call: Call) -> ExpertOut:
    async with call.services.db.transaction() as s:
        row, fields = await call.services.experts.update(s, call.me, call.path_int("expert_id"), call.body)
    return ExpertOut.of(row, fields)


@api.route(
    "POST",
    "/cases/{case_id}/notes",
    summary="Write a consultation note or the conclusion into the case",
    tags=["consultations"],
    body=NoteCreate,
    response=NoteOut,
    status=201,
)
async def add_note(call: Call) -> NoteOut:
    async with call.services.db.transaction() as s:
        row = await call.services.experts.add_note(s, call.me, call.path_int("case_id"), call.body)
    return NoteOut.of(row)


@api.route(
    "GET",
    "/cases/{case_id}/notes",
    summary="Consultation notes and conclusions of the case",
    tags=["consultations"],
    response=Page[NoteOut],
)
async def list_notes(call: Call) -> Page[NoteOut]:
    async with call.services.db.transaction() as s:
        rows = await call.services.experts.notes(s, call.me, call.path_int("case_id"))
    return Page[NoteOut](items=[NoteOut.of(r) for r in rows], total=len(rows), limit=len(rows), offset=0)
