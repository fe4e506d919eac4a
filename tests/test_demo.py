"""The README's demo command, on a clean copy of the repository with a fresh virtual environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return [line for line in out.stdout.splitlines() if line]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_command_from_a_clean_copy(tmp_path):
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/demo.sh" in readme
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files make a clean copy")
    copy = tmp_path / "nbflow"
    for name in tracked_files():
        source = ROOT / name
        if source.is_file():
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBFLOW_", "VIRTUAL_ENV"))}
    env.pop("PYTEST_CURRENT_TEST", None)
    env["PYTHON"] = sys.executable  # the same interpreter version; a venv of its own
    result = subprocess.run(["bash", "scripts/demo.sh"], cwd=copy, env=env, capture_output=True,
                            text=True, timeout=580)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (copy / ".venv" / "bin" / "nbflow").exists()
    out = copy / "build" / "demo" / "01-quickstart.ipynb"
    assert f"output notebook: {out}" in result.stdout
    assert "Oslo   mean" in result.stdout  # the workflow's report
    nb = json.loads(out.read_text())
    assert nb["metadata"]["papermill"]["exception"] in (None, False)
    svg = [o for c in nb["cells"] for o in c.get("outputs", [])
           if "image/svg+xml" in o.get("data", {})]
    assert svg, "the output notebook should carry the final DAG as SVG"
