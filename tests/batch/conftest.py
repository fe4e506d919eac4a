"""Helpers for the batch tests: the ``nbflow`` command in a subprocess, and event logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "notebooks" / "06-batch.ipynb"
RESUME = Path(__file__).parent / "notebooks" / "resume.ipynb"


def env() -> dict[str, str]:
    """The environment of a user's shell: no pytest marker (ipykernel changes its capture)."""
    out = dict(os.environ)
    out.pop("PYTEST_CURRENT_TEST", None)
    for name in ("NBFLOW_CACHE_DIR", "NBFLOW_EVENTS_LOG", "NBFLOW_CLUSTER", "NBFLOW_EXECUTOR"):
        out.pop(name, None)
    return out


def nbflow(*args: Any, cwd: Path, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "nbflow", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=kw.pop("env", None) or env(), **kw)


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def task_states(path: Path) -> dict[str, list[str]]:
    """Every state each task went through, in order (whole tasks, not branches)."""
    out: dict[str, list[str]] = {}
    for e in events(path):
        if e["event"] == "task" and e["branch"] is None:
            out.setdefault(e["task"], []).append(e["state"])
    return out

