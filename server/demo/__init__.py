"""The demo district and matter catalogue (``cloudwindow demo load``).

Passwords are generated at load time and returned once for printing; the
YAML files hold none.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from server.clock import Clock
from server.services import accounts, catalogue
from server.services.principal import Role
from server.storage.experts import ExpertRepository
from server.storage.models import Expert
from server.storage.orgs import OrgRepository
from server.storage.users import UserRepository

HERE = Path(__file__).parent


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: str
    unit: str
    password: str


def _load(name: str) -> Any:
    return yaml.safe_load((HERE / name).read_text(encoding="utf-8"))


async def _units(s: AsyncSession, nodes: list[dict[str, Any]], parent: Any) -> None:
    for node in nodes:
        unit = await accounts.add_unit(
            s,
            code=node["code"],
            kind=node["kind"],
            name_zh=node["name_zh"],
            name_en=node["name_en"],
            parent=parent,
        )
        await _units(s, node.get("children", []), unit)


async def is_loaded(s: AsyncSession) -> bool:
    first = _load("district.yaml")["org_units"][0]["code"]
    return await OrgRepository(s).unit_by_code(first) is not None


async def load(s: AsyncSession, clock: Clock, *, password: str | None = None) -> list[DemoUser]:
    """Load catalogue and district into an empty database; returns the users with their passwords."""
    await catalogue.import_spec(s, catalogue.parse_yaml((HERE / "matters.yaml").read_text(encoding="utf-8")))
    district = _load("district.yaml")
    await _units(s, district["org_units"], None)
    orgs = OrgRepository(s)
    for d in district["departments"]:
        unit = await orgs.unit_by_code(d["unit"])
        assert unit is not None
        await accounts.add_department(s, unit, d["code"], d["name_zh"], d["name_en"])
    for w in district["windows"]:
        unit = await orgs.unit_by_code(w["unit"])
        assert unit is not None
        dept = await orgs.department_by_code(unit.id, w["department"])
        assert dept is not None
        await accounts.add_window(s, dept, w["code"], w["name_zh"], w["name_en"])
    users = []
    for u in district["users"]:
        pw = password or secrets.token_urlsafe(12)
        await accounts.create_user(
            s,
            clock,
            accounts.UserCreate(
                username=u["username"],
                password=pw,
                display_name=u["display_name"],
                role=Role(u["role"]),
                unit_code=u["unit"],
                department_code=u.get("department"),
            ),
        )
        users.append(DemoUser(u["username"], u["role"], u["unit"], pw))
    await _experts(s, clock, district.get("experts", []))
    return users


async def _experts(s: AsyncSession, clock: Clock, entries: list[dict[str, Any]]) -> None:
    repo = ExpertRepository(s)
    for e in entries:
        user = await UserRepository(s).by_username(e["user"]) if e.get("user") else None
        now = clock.now()
        row = Expert(
            user_id=user.id if user else None,
            name=e["name"],
            title=e.get("title"),
            organisation=e["organisation"],
            department_code=e.get("department"),
            phone=e.get("phone"),
            email=e.get("email"),
            availability=e.get("availability", "available"),
            note=None,
            active=True,
            created_at=now,
            updated_at=now,
        )
        await repo.add(row, e["fields"])


async def reset_passwords(s: AsyncSession, *, password: str | None = None) -> list[DemoUser]:
    users = []
    for u in _load("district.yaml")["users"]:
        pw = password or secrets.token_urlsafe(12)
        await accounts.set_password(s, u["username"], pw)
        users.append(DemoUser(u["username"], u["role"], u["unit"], pw))
    return users
