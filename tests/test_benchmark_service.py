"""benchmarks/service.py stays runnable (its targets are checked by running it in full)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "service.py"


def test_service_benchmark_quick_mode_runs() -> None:
    out = subprocess.run([sys.executable, str(BENCHMARK), "--quick"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # one row per concurrency: jobs per second of flow.run, runner and service, all measured
    for concurrency in ("1", "8"):
        row = re.search(rf"^{concurrency} +(.*)$", text, re.MULTILINE)
        assert row, text
        rates = re.findall(r"([\d,]+) \(", row.group(1))
        assert len(rates) == 3 and all(int(r.replace(",", "")) > 0 for r in rates), row.group(0)
    for line in ("file stable -> started", "submit() -> started",
                 "service overhead per job at concurrency 1", "watched file: median"):
        assert line in text, text
    assert re.search(r"^(PASS|FAIL)  ", text, re.MULTILINE), text
    # every service stopped, its threads gone
    assert "threads left behind (not daemon, 2 s after the last service stopped): none" in text
