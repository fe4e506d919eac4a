"""A killed sweep keeps the summary of its finished jobs, and a re-run skips them (issue 20)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until

from .conftest import RESUME, env, nbflow

pytestmark = pytest.mark.slow


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the jobs' ``nbflow run`` and their kernels)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _summary(out: Path) -> list[dict]:
    try:
        return json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return []


def test_a_killed_sweep_keeps_its_summary_and_a_rerun_skips_finished_jobs(tmp_path):
    gate = tmp_path / "gate"
    gate.touch()
    # jobs 0 and 1 finish at once; job 2 waits in its `slow` task while the gate file exists
    (tmp_path / "grid.yaml").write_text(
        f"jobs:\n  - {{gate: ''}}\n  - {{gate: ''}}\n  - {{gate: {str(gate)!r}}}\n")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "nbflow", "sweep", str(RESUME), "--grid", "grid.yaml",
            "--out-dir", "out", "--parallel", "1", "--no-progress"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    below: list[int] = []
    try:
        wait_until(lambda: proc.poll() is not None or len(_summary(out)) == 2, 240,
                   "two jobs finished")
        assert proc.poll() is None, "the sweep ended before job 2 was stuck"
        below = _descendants(proc.pid)
        proc.kill()  # SIGKILL: no cleanup, no summary written at the end
        proc.wait(10)
    finally:
        for pid in [proc.pid, *below]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    first = _summary(out)
    assert [(j["job"], j["status"]) for j in first] == [(0, "succeeded"), (1, "succeeded")]
    assert first[0]["exports"] == {"last": 21}
    outputs = {j["job"]: Path(j["output"]) for j in first}
    stamps = {i: p.stat().st_mtime_ns for i, p in outputs.items()}

    gate.unlink()
    again = nbflow("sweep", RESUME, "--grid", "grid.yaml", "--out-dir", "out", "--parallel", "1",
                   "--no-progress", cwd=tmp_path, timeout=240)
    assert again.returncode == 0, again.stderr
    assert "3 of 3 jobs succeeded (2 reused from a previous sweep" in again.stdout
    summary = _summary(out)
    assert [(j["job"], j["status"], j["reused"]) for j in summary] == [
        (0, "succeeded", True), (1, "succeeded", True), (2, "succeeded", False)]
    assert summary[2]["exports"] == {"last": 21}
    assert {i: p.stat().st_mtime_ns for i, p in outputs.items()} == stamps  # not run again

    forced = nbflow("sweep", RESUME, "--grid", "grid.yaml", "--out-dir", "out", "--parallel", "1",
                    "--no-progress", "--rerun", cwd=tmp_path, timeout=240)
    assert forced.returncode == 0, forced.stderr
    assert "reused" not in forced.stdout.splitlines()[0]
    assert all(not j["reused"] for j in _summary(out))
    assert all(p.stat().st_mtime_ns != stamps[i] for i, p in outputs.items())
