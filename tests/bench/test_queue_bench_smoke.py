"""``bench/queue_calls.py --smoke``: the benchmark still runs end to end and its correctness checks hold.

Timing is not judged here (benchmarks are run by hand, docs/benchmarks.md); what must hold in any run is that
concurrent clerks never get the same ticket and none is left out, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import PG_ADMIN_DSN, unavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def postgres() -> None:
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        unavailable(f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc}")
    await conn.close()


def test_queue_bench_smoke(postgres: None) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "queue_calls.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CLOUDWINDOW_BENCH_PG": PG_ADMIN_DSN},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for engine in ("sqlite", "postgresql"):
        assert f"{engine}: 35 tickets, each called exactly once" in run.stdout, run.stdout
    assert "PROBLEM" not in run.stdout
