"""The organisation tree, departments, windows and user administration."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from server.api.routing import Api, Call, Page, PageQuery
from server.errors import Forbidden
from server.services import accounts
from server.services.principal import Role
from server.storage.models import User
from server.storage.orgs import OrgRepository
from server.storage.queue import WindowRepository
from server.storage.users import UserRepository

api = Api(invitees=False)


class UnitOut(BaseModel):
    id: int
    code: str
    kind: str
    tier: int
    name_zh: str
    name_en: str
    parent_id: int | None


class DepartmentOut(BaseModel):
    id: int
    unit_id: int
    code: str
    name_zh: str
    name_en: str


class WindowOut(BaseModel):
    id: int
    code: str
    department_id: int
    unit_id: int
    name_zh: str
    name_en: str
    #: ``open``, ``paused`` or ``closed``.
    state: str
    #: The clerk signed in (id and display name), or null.
    clerk_user_id: int | None
    clerk_name: str | None
    signed_in_at: datetime | None
    #: A tidal window (潮汐窗口) closes itself at ``closes_at``.
    tidal: bool
    closes_at: datetime | None
    #: Matter codes the window serves; empty: all of its department's matters.
    matter_codes: list[str]


class OrgOut(BaseModel):
    units: list[UnitOut]
    departments: list[DepartmentOut]
    windows: list[WindowOut]


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    role: str
    unit_id: int
    department_id: int | None
    active: bool

    @classmethod
    def of(cls, u: User) -> UserOut:
        return cls(
            id=u.id,
            username=u.username,
            display_name=u.display_name,
            role=u.role,
            unit_id=u.unit_id,
            department_id=u.department_id,
            active=u.active,
        )


@api.route("GET", "/org", summary="Units (tiers 1–3), departments and cloud windows", tags=["org"], response=OrgOut)
async def org(call: Call) -> OrgOut:
    async with call.services.db.transaction() as s:
        repo = OrgRepository(s)
        units, departments, windows = await repo.units(), await repo.departments(), await repo.windows()
        matters = await WindowRepository(s).served_matter_codes([w.id for w in windows])
        clerk_ids = sorted({w.clerk_user_id for w in windows if w.clerk_user_id is not None})
        clerks = {u.id: u.display_name for u in await UserRepository(s).by_ids(clerk_ids)}
    return OrgOut(
        units=[UnitOut.model_validate(u, from_attributes=True) for u in units],
        departments=[DepartmentOut.model_validate(d, from_attributes=True) for d in departments],
        windows=[
            WindowOut(
                id=w.id,
                code=w.code,
                department_id=w.department_id,
                unit_id=w.unit_id,
                name_zh=w.name_zh,
                name_en=w.name_en,
                state=w.state,
                clerk_user_id=w.clerk_user_id,
                clerk_name=clerks.get(w.clerk_user_id) if w.clerk_user_id is not None else None,
                signed_in_at=w.signed_in_at,
                tidal=w.tidal,
                closes_at=w.closes_at,
                matter_codes=matters.get(w.id, []),
            )
            for w in windows
        ],
    )


def _admin(call: Call) -> None:
    if call.me.role is not Role.ADMIN:
        raise Forbidden("administrators only", code="forbidden")


@api.route("GET", "/users", summary="List accounts (admin)", tags=["users"], query=PageQuery, response=Page[UserOut])
async def list_users(call: Call) -> Page[UserOut]:
    _admin(call)
    async with call.services.db.transaction() as s:
        rows, total = await UserRepository(s).list(limit=call.query.limit, offset=call.query.offset)
    return Page[UserOut](
        items=[UserOut.of(u) for u in rows], total=total, limit=call.query.limit, offset=call.query.offset
    )


@api.route(
    "POST",
    "/users",
    summary="Create an account (admin)",
    tags=["users"],
    body=accounts.UserCreate,
    response=UserOut,
    status=201,
)
async def create_user(call: Call) -> UserOut:
    _admin(call)
    async with call.services.db.transaction() as s:
        user = await accounts.create_user(s, call.services.clock, call.body)
    return UserOut.of(user)
