"""The per-process cache of login-session checks (``server.services.auth.SessionCache``).

What must hold: a logout or invite revocation made through this process is
refused on the very next request; one this process cannot see (another
server process's logout, a session revoked or an account disabled straight
in the database) is refused once ``SESSION_CACHE_TTL`` seconds have passed,
never later.  The fake clock moves time; nothing here waits.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select, update

from server.app import SERVICES, create_app
from server.clock import FakeClock
from server.services.auth import SESSION_CACHE_TTL, SessionCache
from server.services.principal import Principal, Role
from server.settings import Settings
from server.storage.models import AuthSession, User
from tests.conftest import Session, login

ME = "/api/v1/me"


async def _status(session: Session) -> int:
    return int((await session.get(ME)).status)


async def test_logout_through_another_process_is_refused_within_the_bound(
    aiohttp_client: Any, client: TestClient, settings: Settings, clock: FakeClock, demo: dict[str, str]
) -> None:
    # A second server process: its own app (and cache) on the same database and secret.
    other_client = await aiohttp_client(create_app(settings, clock=clock))
    here = await login(client, "staff")
    there = Session(other_client, here.token, here.refresh)
    assert await _status(here) == 200 and await _status(there) == 200  # both processes have checked the session
    assert (await here.post("/api/v1/auth/logout")).status == 204
    assert await _status(here) == 401  # this process: at once
    # The other process trusts its last check for at most SESSION_CACHE_TTL seconds, then asks again.
    clock.advance(SESSION_CACHE_TTL)
    resp = await there.get(ME)
    assert resp.status == 401
    assert (await resp.json())["code"] == "session_revoked"


async def test_revocations_in_the_database_apply_within_the_bound(
    client: TestClient, clock: FakeClock, demo: dict[str, str]
) -> None:
    services = client.app[SERVICES]
    staff, clerk = await login(client, "staff"), await login(client, "clerk")
    assert await _status(staff) == 200 and await _status(clerk) == 200
    async with services.db.transaction() as s:
        staff_id = select(User.id).where(User.username == "staff").scalar_subquery()
        await s.execute(update(AuthSession).where(AuthSession.user_id == staff_id).values(revoked_at=clock.now()))
        await s.execute(update(User).where(User.username == "clerk").values(active=False))
    clock.advance(SESSION_CACHE_TTL / 2)
    assert await _status(staff) == 200  # still inside the bound: the documented delay, not a leak past it
    clock.advance(SESSION_CACHE_TTL / 2)
    assert await _status(staff) == 401
    resp = await clerk.get(ME)
    assert resp.status == 401
    assert (await resp.json())["code"] == "account_disabled"


async def test_a_session_past_its_end_is_refused_even_if_checked_a_moment_ago(
    client: TestClient, clock: FakeClock, demo: dict[str, str]
) -> None:
    services = client.app[SERVICES]
    staff = await login(client, "staff")
    async with services.db.transaction() as s:
        await s.execute(update(AuthSession).values(expires_at=clock.now() + timedelta(seconds=0.5)))
    assert await _status(staff) == 200
    clock.advance(0.5)
    assert await _status(staff) == 401


def _principal(session_id: str) -> Principal:
    return Principal(
        user_id=1,
        username="u",
        display_name="u",
        role=Role.CLERK,
        unit_id=1,
        unit_path="/1/",
        department_id=1,
        session_id=session_id,
        client_addr="127.0.0.1",
    )


def test_a_check_that_read_the_session_before_its_logout_cannot_cache_it() -> None:
    clock = FakeClock()
    cache = SessionCache(clock, ttl=2.0)
    far = datetime(2030, 1, 1, tzinfo=UTC)
    # A request read the live session from the database; meanwhile the logout ran (and committed) ...
    cache.forget_session("a")
    cache.forget_invite(7)
    # ... and only then does the request store what it read: refused, so the next request asks the database.
    cache.put(_principal("a"), None, far)
    cache.put(_principal("b"), 7, far)
    assert cache.get("a") is None and cache.get("b") is None
    cache.put(_principal("c"), None, far)
    cached = cache.get("c")
    assert cached is not None and cached.client_addr is None  # the address is the request's, not the cache's
    clock.advance(2.0)
    assert cache.get("c") is None


def test_the_cache_is_bounded_and_can_be_turned_off() -> None:
    clock = FakeClock()
    far = datetime(2030, 1, 1, tzinfo=UTC)
    cache = SessionCache(clock, ttl=2.0, max_entries=3)
    for sid in "abcde":
        cache.put(_principal(sid), None, far)
    assert [sid for sid in "abcde" if cache.get(sid) is not None] == ["c", "d", "e"]
    off = SessionCache(clock, ttl=0)
    off.put(_principal("a"), None, far)
    assert off.get("a") is None
