"""``bench/queue_calls.py --smoke``: the benchmark still runs end to end and its correctness checks hold.

Timing is not judged here (benchmarks are run by hand, docs/benchmarks.md); what must hold in any run is that
concurrent clerks never get the same ticket and none is left out, on SQLite and on PostgreSQL, in the burst and
the paced mode, and (with Redis at 127.0.0.1:6379) with two server processes sharing the PostgreSQL database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import redis

from tests.conftest import PG_ADMIN_DSN, unavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def postgres() -> None:
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        unavailable(f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc}")
    await conn.close()


REDIS_URL = os.environ.get("CLOUDWINDOW_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _redis() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def test_queue_bench_smoke(postgres: None) -> None:
    two = _redis()
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "queue_calls.py"), "--smoke", "--processes", "1,2" if two else "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CLOUDWINDOW_BENCH_PG": PG_ADMIN_DSN, "CLOUDWINDOW_BENCH_REDIS": REDIS_URL},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # Per engine: 5 baseline calls, then 30 tickets for the burst and 30 for the paced mode per process count.
    assert "sqlite: 65 tickets, each called exactly once" in run.stdout, run.stdout
    assert f"postgresql: {125 if two else 65} tickets, each called exactly once" in run.stdout, run.stdout
    for mode in ("baseline", "burst", "paced"):
        assert f" {mode} " in run.stdout, run.stdout
    assert "PROBLEM" not in run.stdout
