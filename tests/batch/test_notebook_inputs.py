"""Notebooks that papermill alone refuses: no kernelspec, no language (issue 20)."""

from __future__ import annotations

import nbformat
import pytest

from nbflow.batch.execute import JobResult, format_summary

from .conftest import nbflow


@pytest.mark.slow
def test_a_notebook_without_a_kernelspec_runs_with_parameters(tmp_path):
    nb = nbformat.v4.new_notebook()  # no kernelspec, no language_info
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print('x is', x)")]
    nbformat.write(nb, tmp_path / "bare.ipynb")
    proc = nbflow("run", "bare.ipynb", "-p", "x", "3", "-o", "out.ipynb", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"output notebook: {tmp_path / 'out.ipynb'}" in proc.stdout
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert out.cells[-1].outputs[0]["text"] == "x is 3\n"


def test_the_summary_names_no_output_notebook_when_none_was_written(tmp_path):
    result = JobResult(notebook=str(tmp_path / "nb.ipynb"), output=str(tmp_path / "out.ipynb"),
                       params={}, status="error", duration=0.0,
                       error="RuntimeError: Kernel didn't respond", written=False)
    head = format_summary(result).splitlines()[0]
    assert head == "nbflow: nb.ipynb error in 0.0s; no output notebook was written"
    assert "out.ipynb" not in format_summary(result)
