"""``nbflow run -c TASK.OPTION=VALUE -p TASK.ARG VALUE``: per-task overrides, for a spec (run in
this process) and a notebook (the kernel's ``%nbflow run`` gets them), through subprocesses."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nbflow.overrides import ENV_VAR

from .conftest import env as base_env
from .conftest import nbflow

STEPS = '''\
import os


def data():
    return [1.23456, 2.34567]


def round_values(values, decimals):
    return [round(v, decimals) for v in values]


def flaky(values, marker):
    """Fails its first attempt (counted in the marker file), then succeeds."""
    n = int(open(marker).read()) if os.path.exists(marker) else 0
    with open(marker, "w") as f:
        f.write(str(n + 1))
    if n < 1:
        raise RuntimeError("the first try fails")
    return len(values)
'''

SPEC = """\
name: overrides
parameters:
  decimals: {type: integer, default: 1}
  marker: {type: string, default: marker.txt}
tasks:
  data: {use: "steps:data"}
  rounded:
    use: "steps:round_values"
    args: {values: {$task: data}, decimals: {$param: decimals}}
    export: true
  coarse:
    use: "steps:round_values"
    args: {values: {$task: data}, decimals: {$param: decimals}}
    export: true
  flaky:
    use: "steps:flaky"
    args: {values: {$task: data}, marker: {$param: marker}}
    cache: false
"""


def env() -> dict[str, str]:
    out = base_env()
    out.pop(ENV_VAR, None)
    return out


def run(*args: Any, cwd: Path) -> Any:
    return nbflow("run", *args, cwd=cwd, env=env())


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    (tmp_path / "steps.py").write_text(STEPS)
    path = tmp_path / "flow.yaml"
    path.write_text(SPEC)
    return path


def summary(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    data["rows"] = {r["task"]: r for r in data["tasks"]}
    return data


def test_a_spec_runs_with_a_task_argument_and_a_task_option(spec, tmp_path):
    out = tmp_path / "summary.json"
    proc = run(spec, "-p", "rounded.decimals", "3", "-c", "flaky.retries=1", "-o", out,
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = summary(out)
    assert result["exports"] == {"rounded": [1.235, 2.346], "coarse": [1.2, 2.3]}
    assert result["rows"]["flaky"]["state"] == "succeeded"
    assert result["rows"]["flaky"]["attempts"] == 2


def test_without_the_option_the_spec_task_fails(spec, tmp_path):
    proc = run(spec, cwd=tmp_path)
    assert proc.returncode == 1
    assert "the first try fails" in proc.stderr


def test_a_changed_task_argument_recomputes_only_that_task(spec, tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "summary.json"
    common = ("-c", "flaky.retries=1", "--cache-dir", cache, "-o", out)
    assert run(spec, "-p", "rounded.decimals", "2", *common, cwd=tmp_path).returncode == 0
    assert run(spec, "-p", "rounded.decimals", "2", *common, cwd=tmp_path).returncode == 0
    rows = summary(out)["rows"]
    assert (rows["rounded"]["state"], rows["coarse"]["state"]) == ("cached", "cached")
    proc = run(spec, "-p", "rounded.decimals", "4", *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = summary(out)
    assert result["rows"]["rounded"]["state"] == "succeeded"
    assert result["rows"]["coarse"]["state"] == "cached"
    assert result["rows"]["data"]["state"] == "cached"
    assert result["exports"]["rounded"] == [1.2346, 2.3457]


@pytest.mark.parametrize(("args", "message"), [
    (("-c", "flaky.retrys=1"), "'retrys' is not a task option. Did you mean 'retries'?"),
    (("-c", "flaky.retries=-1"), "option 'retries' must be 0 or more, got -1"),
    (("-c", "flaky.retries"), "give TASK.OPTION=VALUE"),
    (("-c", "flaky.map=data"), "shapes the graph"),
    (("-c", "flakey.retries=1"), "not a task of flow 'overrides'. Did you mean 'flaky'?"),
    (("-p", "rounded.decimalz", "2"), "Did you mean 'decimals'?"),
    (("-p", "rounded.decimals", "x"), "is an integer"),
    (("-p", "rounded.data", "[1]"), "result of upstream task 'data'"),
    (("-p", "rounded.retries", "2"), "set it with -c rounded.retries=2"),
])
def test_bad_overrides_of_a_spec_are_one_line_and_exit_2(spec, tmp_path, args, message):
    proc = run(spec, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "marker.txt").exists()  # nothing ran


def write_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext nbflow"),
        nbformat.v4.new_code_cell("decimals = 1\nmarker = 'marker.txt'",
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("%%nbflow task data\ndata = [1.23456, 2.34567]"),
        nbformat.v4.new_code_cell(
            "%%nbflow task rounded --export\nrounded = [round(v, decimals) for v in data]"),
        nbformat.v4.new_code_cell(
            "%%nbflow task coarse --export\ncoarse = [round(v, decimals) for v in data]"),
        nbformat.v4.new_code_cell(textwrap.dedent("""\
            %%nbflow task flaky --no-cache
            import os
            n = int(open(marker).read()) if os.path.exists(marker) else 0
            with open(marker, 'w') as f:
                f.write(str(n + 1))
            if n < 1:
                raise RuntimeError('the first try fails')
            flaky = n + 1""")),
        nbformat.v4.new_code_cell("%nbflow run"),
    ]
    nbformat.write(nb, path)
    return path


def test_a_notebook_runs_with_a_task_argument_and_a_task_option(tmp_path):
    write_notebook(tmp_path / "nb.ipynb")
    proc = run("nb.ipynb", "-p", "rounded.decimals", "3", "-p", "decimals", "0",
               "-c", "flaky.retries=1", "-o", "out.ipynb", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines()[1:]}
    assert rows["flaky"][1:3] == ["succeeded", "2"]
    assert "export rounded = [1.235, 2.346]" in proc.stdout
    assert "export coarse = [1.0, 2.0]" in proc.stdout  # the notebook's parameter, -p decimals 0
    assert "warning" not in proc.stderr


def test_a_notebook_task_typo_is_refused_before_the_kernel_starts(tmp_path):
    write_notebook(tmp_path / "nb.ipynb")
    proc = run("nb.ipynb", "-c", "flakey.retries=1", cwd=tmp_path)
    assert proc.returncode == 2
    assert "nb.ipynb has no task 'flakey'. Did you mean 'flaky'?" in proc.stderr
    assert not (tmp_path / "nb-output.ipynb").exists()


def test_a_notebook_unknown_argument_fails_its_run_cell_with_a_suggestion(tmp_path):
    write_notebook(tmp_path / "nb.ipynb")
    proc = run("nb.ipynb", "-p", "rounded.decimalz", "3", cwd=tmp_path)
    assert proc.returncode == 1
    assert "raised UsageError: Task 'rounded': option 'decimalz'" in proc.stderr
    assert "Did you mean 'decimals'?" in proc.stderr
    assert not (tmp_path / "marker.txt").exists()  # no task ran
