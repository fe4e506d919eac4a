"""``nbflow run`` on a terminal shows each streaming task's items and rate (tqdm)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SPEC = """\
nbflow: 1
name: counting
tasks:
  numbers:
    use: progress_tasks:numbers
  double:
    use: progress_tasks:double
    map: numbers
    args: {x: {$task: numbers}}
"""
TASKS = """\
def numbers():
    yield from range(300)

def double(x):
    return x * 2
"""


def _run(tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    """Run ``nbflow run`` with standard error on a pseudo-terminal; (exit, stdout, stderr)."""
    (tmp_path / "flow.yaml").write_text(SPEC)
    (tmp_path / "progress_tasks.py").write_text(textwrap.dedent(TASKS))
    master, slave = os.openpty()
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = tmp_path / "stdout.txt"
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "nbflow", "run", "flow.yaml", *extra],
                                cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the other end closed: the process is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    code = proc.wait(60)
    return code, out.read_text(), b"".join(chunks).decode(errors="replace")


def test_a_streaming_spec_task_shows_its_items_and_rate_on_a_terminal(tmp_path):
    code, out, err = _run(tmp_path)
    assert code == 0, err
    assert "numbers  succeeded  300/300" in out
    assert "numbers: 300 items" in err and "items/s" in err
    assert "300 done by its maps, succeeded" in err


def test_quiet_shows_no_progress(tmp_path):
    code, _, err = _run(tmp_path, "-q")
    assert code == 0
    assert "items/s" not in err
