"""``nbflow convert --to jupytext``: the text notebook, read back by jupytext and executed in a
real kernel, runs as a workflow notebook to nbflow's results."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from nbflow.convert.jupytext import to_jupytext
from nbflow.convert.model import ConvTask, ConvWorkflow, Param, Ref
from nbflow.errors import ExportError

from .test_script import (CLIMATE, QUICKSTART, RULES, FILES, comparable, exported,
                          kernel_results, notebook_results, spec_results)

jupytext = pytest.importorskip("jupytext")

pytestmark = pytest.mark.slow


def run_text_notebook(wf: ConvWorkflow, cwd: Path) -> dict[str, Any]:
    """Write the py:percent file, read it back with jupytext, run it in a kernel in ``cwd``."""
    path = cwd / "flow.py"
    path.write_text(to_jupytext(wf))
    nb = jupytext.read(path)
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert [c.metadata.get("tags") for c in nb.cells if "parameters" in
            c.metadata.get("tags", [])] == [["parameters"]]
    return kernel_results(nb, cwd)


def test_quickstart_text_notebook_gives_the_notebooks_results(tmp_path: Path) -> None:
    wf = exported(QUICKSTART)
    text = to_jupytext(wf)
    assert "# %%nbflow task clean --export\n" in text
    assert "flow.task(report, export=True)" in text  # a @flow.task function of the notebook
    assert run_text_notebook(wf, tmp_path) == notebook_results(QUICKSTART, tmp_path)


def test_climate_text_notebook_gives_nbflow_runs_results(tmp_path: Path,
                                                         monkeypatch: Any) -> None:
    wf = exported(CLIMATE)
    text = to_jupytext(wf)
    assert "# %%nbflow task seasonal --map names --retries 1 --export\n" in text
    assert "seasonal = seasonal_stats(ds=ds, variable=names)" in text
    got = run_text_notebook(wf, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert got == spec_results(CLIMATE, {})


def test_mapped_workflow_with_trigger_rules_and_a_command(tmp_path: Path,
                                                          monkeypatch: Any) -> None:
    shutil.copy(FILES / "rules_tasks.py", tmp_path)
    wf = exported(RULES)
    text = to_jupytext(wf)
    assert "# %%nbflow task total --run-on always --export\n" in text
    assert "# %%nbflow command echoed --after total --export\necho {n} {scale}" in text
    assert "flow.task(only_big, export=True, run_if=big)" in text
    got = run_text_notebook(wf, tmp_path)
    monkeypatch.chdir(tmp_path)
    expected = spec_results(RULES, {})
    assert comparable(got, wf) == comparable(expected, wf)
    assert got["states"]["invert"] == "failed" and got["states"]["only_big"] == "skipped"


def tiny(*tasks: ConvTask, params: dict[str, Param] | None = None) -> ConvWorkflow:
    return ConvWorkflow("tiny", "", params or {}, list(tasks), [], Path.cwd(), "spec")


def test_a_required_parameter_is_none_with_a_comment() -> None:
    task = ConvTask("a", "a", source="def a(n):\n    return n", args={"n": Ref("param", "n")})
    text = to_jupytext(tiny(task, params={"n": Param("n", {"type": "integer"}, None, False,
                                                      "how many")}))
    assert ("n = None  # required (integer): set it before running (papermill -p n VALUE); "
            "how many\n") in text
    assert "# %%nbflow task a\nn\n" not in text and "# %%nbflow task a\na = n\n" in text


def test_a_stream_is_refused_naming_the_task() -> None:
    task = ConvTask("numbers", "numbers", source="def numbers():\n    yield 1", stream=True)
    with pytest.raises(ExportError, match="task 'numbers': streams"):
        to_jupytext(tiny(task))


def test_run_if_on_renamed_arguments_is_refused_naming_the_task() -> None:
    task = ConvTask("b", "b", use="m:b", run_if="m:p", args={"x": Ref("task", "a")})
    with pytest.raises(ExportError, match="task 'b': run_if on a task whose arguments are "
                                          "renamed or literal \\(x\\)"):
        to_jupytext(tiny(task))
