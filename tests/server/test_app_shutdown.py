"""Shutdown never hangs on a background task that does not stop when cancelled (it is logged and left behind)."""

from __future__ import annotations

import asyncio
import logging

import pytest

import server.app as app_module
from server.app import BACKGROUND, RECORDING_JOBS, SERVICES, create_app
from server.clock import FakeClock
from server.settings import Settings


async def test_shutdown_goes_on_past_a_task_that_ignores_its_cancellation(
    settings: Settings, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app_module, "BACKGROUND_STOP_TIMEOUT", 0.2)
    app = create_app(settings, clock=clock)
    release = asyncio.Event()
    cancellations = 0

    async def stubborn() -> None:  # what a lost cancellation looks like from outside
        nonlocal cancellations
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancellations += 1

    monkeypatch.setattr(app[SERVICES].recordings, "run_jobs", stubborn)
    app.freeze()
    await app.startup()
    jobs = app[BACKGROUND][RECORDING_JOBS]
    try:
        with caplog.at_level(logging.ERROR, logger="server.http"):
            async with asyncio.timeout(10):
                await app.shutdown()
        assert cancellations == 1 and not jobs.done()
        assert "background task recording-jobs did not stop within 0.2 s" in caplog.text
    finally:
        release.set()
        jobs.cancel()
        await asyncio.gather(jobs, return_exceptions=True)
        await app.cleanup()
