"""Migration 0006 (document review columns) goes down to 0005 and up again on both engines."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from server.storage.database import Database
from server.storage.migrate import alembic_config
from server.storage.models import Base

REVIEW_COLUMNS = {"review_state", "review_reason", "reviewed_by", "reviewed_at"}


async def _columns(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(lambda c: {col["name"] for col in sa.inspect(c).get_columns("documents")})


async def test_0006_down_and_up(db_url: str) -> None:
    db = Database(db_url)
    try:
        assert REVIEW_COLUMNS <= await _columns(db)
        await db.engine.dispose()
        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0005")
        assert not (REVIEW_COLUMNS & await _columns(db))
        await db.engine.dispose()
        await asyncio.to_thread(command.upgrade, alembic_config(db_url), "head")
        assert REVIEW_COLUMNS <= await _columns(db)

        def diff(sync_conn: object) -> list[object]:
            context = MigrationContext.configure(sync_conn, opts={"compare_type": True})  # type: ignore[arg-type]
            return list(compare_metadata(context, Base.metadata))

        async with db.engine.connect() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await db.close()
