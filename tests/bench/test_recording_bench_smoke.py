"""``bench/recording.py --smoke``: the benchmark runs end to end (remux, MediaRecorder baseline, composite).

Timing is not judged here (docs/benchmarks.md has the figures); the run must complete and print every figure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_recording_bench_smoke() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "recording.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    for stream in ("video", "audio", "a+v"):
        row = next(line for line in lines if line.startswith(stream))
        assert row.rstrip().endswith("x"), row
    assert any(line.startswith("composite 2 x 640x480") and "real time" in line for line in lines), run.stdout
