"""A workflow notebook as a papermill batch job: parameters feed task cells; failures exit non-zero."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest

from .conftest import NOTEBOOKS

pytestmark = pytest.mark.slow


def papermill(tmp_path, *params: str) -> tuple[subprocess.CompletedProcess[str], object]:
    out = tmp_path / "out.ipynb"
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOKS / "params.ipynb"), str(out),
           "-k", "python3", "--no-progress-bar", *params]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    return proc, nbformat.read(out, as_version=4)


def stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")


def test_parameters_feed_task_cells(tmp_path):
    proc, nb = papermill(tmp_path, "-p", "n", "4", "-p", "scale", "10")
    assert proc.returncode == 0, proc.stderr
    assert nb.metadata.papermill.parameters == {"n": 4, "scale": 10}
    run_cell = next(c for c in nb.cells if c.source == "%nbflow run")
    assert "nbflow: run succeeded" in stdout(run_cell)
    assert stdout(nb.cells[-1]) == "total = 60\n"


def test_a_failing_task_makes_papermill_exit_non_zero(tmp_path):
    proc, nb = papermill(tmp_path, "-p", "fail", "True", "-p", "n", "3")
    assert proc.returncode != 0
    assert "FlowFailed" in proc.stderr
    run_cell = next(c for c in nb.cells if c.source == "%nbflow run")
    [err] = [o for o in run_cell.outputs if o.output_type == "error"]
    assert err.ename == "FlowFailed"
    tb = "\n".join(err.traceback)
    declared = next(c for c in nb.cells if c.source.startswith("%%nbflow task checked"))
    assert f'<cell In[{declared.execution_count}]: task checked>", line 3, in checked' in tb
    assert "ValueError: asked to fail with n=3" in tb
    assert nb.cells[-1].outputs == []  # papermill stopped at the failing cell
