"""User accounts and the organisation tree."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import Clock
from server.errors import Conflict, ValidationFailed
from server.services.auth import hash_password
from server.services.principal import Role
from server.storage.models import Department, OrgUnit, User, Window
from server.storage.orgs import OrgRepository
from server.storage.users import UserRepository

UNIT_KINDS = {"district_centre": 1, "town_centre": 2, "service_point": 3}


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    username: str = Field(pattern=r"^[A-Za-z0-9_.-]{2,64}$")
    password: str = Field(min_length=10, max_length=256)
    display_name: str = Field(min_length=1, max_length=200)
    role: Role
    unit_code: str = Field(min_length=1, max_length=32)
    department_code: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _check(self) -> UserCreate:
        if self.role is Role.GUEST:
            raise ValueError("guest is not an account role")
        if self.role is Role.CLERK and not self.department_code:
            raise ValueError("a clerk needs department_code")
        return self


async def create_user(s: AsyncSession, clock: Clock, body: UserCreate) -> User:
    orgs = OrgRepository(s)
    unit = await orgs.unit_by_code(body.unit_code)
    if unit is None:
        raise ValidationFailed("no such unit", code="unit_not_found", details={"unit_code": body.unit_code})
    department_id = None
    if body.department_code:
        department = await orgs.department_by_code(unit.id, body.department_code)
        if department is None:
            raise ValidationFailed(
                "the unit has no such department",
                code="department_not_found",
                details={"unit_code": body.unit_code, "department_code": body.department_code},
            )
        department_id = department.id
    users = UserRepository(s)
    if await users.by_username(body.username) is not None:
        raise Conflict("username is taken", code="username_taken")
    return await users.add(
        User(
            username=body.username,
            display_name=body.display_name,
            password_hash=hash_password(body.password),
            role=str(body.role),
            unit_id=unit.id,
            department_id=department_id,
            active=True,
            created_at=clock.now(),
        )
    )


async def set_password(s: AsyncSession, username: str, password: str) -> None:
    user = await UserRepository(s).by_username(username)
    if user is None:
        raise ValidationFailed("no such user", code="user_not_found")
    user.password_hash = hash_password(password)
    await s.flush()


async def add_unit(
    s: AsyncSession, *, code: str, kind: str, name_zh: str, name_en: str, parent: OrgUnit | None
) -> OrgUnit:
    tier = UNIT_KINDS.get(kind)
    if tier is None:
        raise ValidationFailed("unknown unit kind", code="validation_error", details={"kind": kind})
    if (parent is None) != (tier == 1) or (parent is not None and parent.tier != tier - 1):
        raise ValidationFailed("a unit must sit directly under the tier above it", code="validation_error")
    return await OrgRepository(s).add_unit(
        OrgUnit(code=code, kind=kind, tier=tier, name_zh=name_zh, name_en=name_en), parent
    )


async def add_department(s: AsyncSession, unit: OrgUnit, code: str, name_zh: str, name_en: str) -> Department:
    if unit.tier == 3:
        raise ValidationFailed("departments sit at centres, not service points", code="validation_error")
    return await OrgRepository(s).add_department(
        Department(unit_id=unit.id, code=code, name_zh=name_zh, name_en=name_en)
    )


async def add_window(s: AsyncSession, department: Department, code: str, name_zh: str, name_en: str) -> Window:
    return await OrgRepository(s).add_window(
        Window(
            code=code,
            department_id=department.id,
            unit_id=department.unit_id,
            name_zh=name_zh,
            name_en=name_en,
            state="closed",
        )
    )
