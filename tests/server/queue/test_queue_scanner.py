"""The background scanner: started with the app, does due work without being asked, stops with the app."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from server.app import BACKGROUND, QUEUE_SCANNER, Services
from server.clock import FakeClock
from server.settings import QueueSettings
from server.storage.models import Alert
from tests.server.queue.conftest import RecordingNotifier, seed_tickets


@pytest.fixture
def queue_settings() -> QueueSettings:
    return QueueSettings(scan_interval=0.02)


async def test_background_scanner_raises_due_alerts(
    client: TestClient, services: Services, notices: RecordingNotifier, clock: FakeClock
) -> None:
    task = client.app[BACKGROUND][QUEUE_SCANNER]
    assert not task.done()
    await seed_tickets(services, 2)
    clock.advance(900)

    async def alerted() -> int:
        while True:
            async with services.db.transaction() as s:
                n = (await s.execute(select(func.count()).where(Alert.kind == "wait_timeout"))).scalar_one()
            if n == 2:
                return int(n)
            await asyncio.sleep(0.02)

    assert await asyncio.wait_for(alerted(), 5) == 2
    await asyncio.sleep(0.1)  # more rounds: still exactly one alert per ticket
    assert len([a for a in notices.of("queue.alert") if a["kind"] == "wait_timeout"]) == 2 * 2  # room + supervisor

    async def board_sent() -> None:
        for _ in range(250):
            if notices.of("queue.changed"):
                return
            await asyncio.sleep(0.02)

    # The colour changed too (yellow after 10 minutes): the board follows without anyone flushing it.
    await board_sent()
    assert notices.of("queue.changed")[-1]["colour"] == "yellow"
    await client.close()
    assert task.done()
