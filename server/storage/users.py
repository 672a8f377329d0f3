"""Accounts, login sessions and invites."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.storage.models import AuthSession, Invite, OrgUnit, User


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, user: User) -> User:
        self.s.add(user)
        await self.s.flush()
        return user

    async def get(self, user_id: int) -> User | None:
        return await self.s.get(User, user_id)

    async def by_ids(self, user_ids: Sequence[int]) -> Sequence[User]:
        if not user_ids:
            return []
        return (await self.s.execute(select(User).where(User.id.in_(user_ids)))).scalars().all()

    async def by_username(self, username: str) -> User | None:
        stmt = select(User).where(func.lower(User.username) == username.lower())
        return (await self.s.execute(stmt)).scalar_one_or_none()

    async def list(self, *, limit: int, offset: int) -> tuple[Sequence[User], int]:
        total = (await self.s.execute(select(func.count()).select_from(User))).scalar_one()
        stmt = select(User).order_by(User.id).limit(limit).offset(offset)
        return (await self.s.execute(stmt)).scalars().all(), total


class AuthSessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, row: AuthSession) -> AuthSession:
        self.s.add(row)
        await self.s.flush()
        return row

    async def get(self, session_id: str, *, for_update: bool = False) -> AuthSession | None:
        return await self.s.get(AuthSession, session_id, with_for_update=for_update or None)

    async def with_user(self, session_id: str) -> tuple[AuthSession, User | None, str | None] | None:
        """The login session, its account and the account's unit path, in one statement (a request's auth check)."""
        stmt = (
            select(AuthSession, User, OrgUnit.path)
            .outerjoin(User, User.id == AuthSession.user_id)
            .outerjoin(OrgUnit, OrgUnit.id == User.unit_id)
            .where(AuthSession.id == session_id)
        )
        row = (await self.s.execute(stmt)).one_or_none()
        return (row[0], row[1], row[2]) if row is not None else None

    async def by_refresh_hash(self, refresh_hash: str, *, for_update: bool = False) -> AuthSession | None:
        stmt = select(AuthSession).where(AuthSession.refresh_hash == refresh_hash)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.s.execute(stmt)).scalar_one_or_none()

    async def revoke(self, session_id: str, at: datetime) -> None:
        stmt = (
            update(AuthSession)
            .where(AuthSession.id == session_id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        await self.s.execute(stmt)


class InviteRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.s = session

    async def add(self, invite: Invite) -> Invite:
        self.s.add(invite)
        await self.s.flush()
        return invite

    async def get(self, invite_id: int) -> Invite | None:
        return await self.s.get(Invite, invite_id)

    async def by_token_hash(self, token_hash: str) -> Invite | None:
        stmt = select(Invite).where(Invite.token_hash == token_hash).with_for_update()
        return (await self.s.execute(stmt)).scalar_one_or_none()

    async def claim(self, invite_id: int, at: datetime) -> bool:
        """Mark the invite used; False if someone else used or revoked it first."""
        stmt = (
            update(Invite)
            .where(Invite.id == invite_id, Invite.used_at.is_(None), Invite.revoked_at.is_(None))
            .values(used_at=at)
        )
        result = await self.s.execute(stmt)
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def for_case(self, case_id: int) -> Sequence[Invite]:
        stmt = select(Invite).where(Invite.case_id == case_id).order_by(Invite.id)
        return (await self.s.execute(stmt)).scalars().all()
