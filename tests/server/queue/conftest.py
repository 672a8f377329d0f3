"""Queue test helpers: an app whose scanner only runs when a test says so, recorded notices, fast seeding.

The background scanner is off (``scan_interval=0``): a test moves the fake
clock and calls ``services.queue.scan()`` itself, so every due item is
handled at a known point; likewise boards go out when the test calls
``services.queue.flush_boards()``.  ``test_queue_scanner.py`` checks the background
task separately.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from server.app import SERVICES, Services, create_app
from server.clock import FakeClock
from server.services.cases import CaseCreate
from server.services.principal import Principal, Role
from server.settings import QueueSettings, Settings
from server.storage.models import Department, OrgUnit, Ticket, Window
from server.storage.orgs import OrgRepository
from server.storage.users import UserRepository

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def id_number(n: int) -> str:
    """The ``n``-th of a family of valid, distinct 18-digit ID numbers (n < 1000)."""
    body = f"330203{1940 + n // 100:04d}0101{n % 1000:03d}"
    total = sum(int(d) * w for d, w in zip(body, _WEIGHTS, strict=True))
    return body + "10X98765432"[total % 11]


class RecordingNotifier:
    """Stands in for the signalling server: keeps every notice."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    async def notify(self, room: str, event: str, data: dict[str, Any]) -> None:
        self.sent.append((room, event, data))

    def of(self, event: str, room: str | None = None) -> list[dict[str, Any]]:
        return [d for r, e, d in self.sent if e == event and (room is None or r == room)]

    def rooms(self, event: str) -> list[str]:
        return [r for r, e, _ in self.sent if e == event]

    def clear(self) -> None:
        self.sent.clear()


def quiet_queue(**overrides: Any) -> QueueSettings:
    """No background scanner, and boards sent only when a test calls ``services.queue.flush_boards()``."""
    return QueueSettings(scan_interval=0, board_interval=3600, **overrides)


@pytest.fixture
def queue_settings() -> QueueSettings:
    return quiet_queue()


@pytest.fixture
async def client(
    aiohttp_client: Any, settings: Settings, clock: FakeClock, queue_settings: QueueSettings
) -> TestClient:
    app = create_app(settings, clock=clock, queue_settings=queue_settings)
    return await aiohttp_client(app)


@pytest.fixture
def services(client: TestClient, demo: dict[str, str]) -> Services:
    return client.app[SERVICES]


@pytest.fixture
def notices(services: Services) -> RecordingNotifier:
    recorder = RecordingNotifier()
    services.queue.notifier = recorder
    return recorder


async def principal(services: Services, username: str) -> Principal:
    async with services.db.transaction() as s:
        user = await UserRepository(s).by_username(username)
        assert user is not None
        unit = await OrgRepository(s).unit(user.unit_id)
        assert unit is not None
    return Principal(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=Role(user.role),
        unit_id=user.unit_id,
        unit_path=unit.path,
        department_id=user.department_id,
        session_id="test",
    )


async def window_id(services: Services, code: str) -> int:
    async with services.db.transaction() as s:
        return int((await s.execute(select(Window.id).where(Window.code == code))).scalar_one())


async def department_id(services: Services, unit_code: str, code: str) -> int:
    async with services.db.transaction() as s:
        stmt = (
            select(Department.id)
            .join(OrgUnit, Department.unit_id == OrgUnit.id)
            .where(OrgUnit.code == unit_code, Department.code == code)
        )
        return int((await s.execute(stmt)).scalar_one())


async def seed_cases(
    services: Services, n: int, *, start: int = 0, staff: str = "staff", centre: str = "D01", matter: str = "MZ-001"
) -> list[int]:
    """``n`` draft cases for distinct people, opened through the service (fast)."""
    who = await principal(services, staff)
    ids = []
    async with services.db.transaction() as s:
        for i in range(start, start + n):
            view = await services.cases.create(
                s,
                who,
                CaseCreate(
                    matter_code=matter,
                    applicant_name=f"申请人{i}",
                    applicant_id_number=id_number(i),
                    applicant_phone="13800138000",
                    centre_code=centre,
                ),
            )
            ids.append(view.case.id)
    return ids


async def seed_tickets(services: Services, n: int, **kw: Any) -> list[int]:
    """``n`` waiting walk-in tickets (one case each), taken through the service."""
    from server.services.queue import Outbox

    who = await principal(services, kw.get("staff", "staff"))
    case_ids = await seed_cases(services, n, **kw)
    ids = []
    async with services.db.transaction() as s:
        for case_id in case_ids:
            ids.append((await services.queue.take(s, who, case_id, Outbox())).id)
    return ids


async def tickets(services: Services) -> dict[int, Ticket]:
    async with services.db.transaction() as s:
        return {t.id: t for t in (await s.execute(select(Ticket))).scalars().all()}


async def ok(resp: Any, status: int = 200) -> Any:
    assert resp.status == status, await resp.text()
    if status == 204:
        return None
    return await resp.json()


async def refused(resp: Any, status: int, code: str) -> dict[str, Any]:
    body = await resp.json()
    assert resp.status == status, body
    assert body["code"] == code, body
    assert body["message"]
    return dict(body)
