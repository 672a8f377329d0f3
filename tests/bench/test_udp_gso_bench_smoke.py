"""``bench/udp_gso.py`` in a second: it runs, every datagram arrives (the bench checks), and it prints both figures.

Timing is not judged here (docs/benchmarks.md has the figures).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_udp_gso_bench_smoke() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "udp_gso.py"), "--frames", "200", "--gap-frames", "10", "--gap", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = [line for line in run.stdout.splitlines() if "µs/frame" in line and line.rstrip().endswith("each)")]
    assert len(rows) == 2, run.stdout
    assert "GSO sends 0," not in run.stdout, run.stdout
