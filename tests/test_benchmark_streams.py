"""benchmarks/streams.py stays runnable (its targets are checked by running it in full)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "streams.py"


def test_streams_benchmark_quick_mode_runs():
    out = subprocess.run([sys.executable, str(BENCHMARK), "--quick"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "µs per item" in out.stdout
    for line in ("stream at least as fast as map", "within 2x of the queue pipeline",
                 "memory flat"):
        assert line in out.stdout, out.stdout
