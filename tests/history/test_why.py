"""``nbflow why WORKFLOW TASK``: what changed in a task's key since its last recorded run.

Each check runs ``nbflow`` in a subprocess, as a user would: a new process sees an
edited module as it is on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

from nbflow.history.changes import part_changes
from tests.batch.conftest import env, nbflow

TASKS = '''\
import why_util

THRESHOLD = 2


def load(days):
    return list(range(days))


def clean(load):
    return why_util.clean_helper(load)


def report(clean):
    return [v for v in clean if v > THRESHOLD]
'''

UTIL = '''\
"""A local module the tasks import."""


def scale(values):
    return [v * 2 for v in values]


def clean_helper(values):
    return [v for v in values if v > 0]
'''

SPEC = '''\
name: sales
parameters:
  days: {type: integer, default: 30}
tasks:
  load:
    use: why_tasks:load
    args: {days: {$param: days}}
  clean:
    use: why_tasks:clean
    args: {load: {$task: load}}
  report:
    use: why_tasks:report
    args: {clean: {$task: clean}}
    export: true
'''


def _environment(home: Path) -> dict[str, str]:
    return {**env(), "NBFLOW_HOME": str(home)}


def _spec(folder: Path) -> Path:
    (folder / "why_tasks.py").write_text(TASKS)
    (folder / "why_util.py").write_text(UTIL)
    spec = folder / "wf.yaml"
    spec.write_text(SPEC)
    return spec


def test_why_names_the_parameter_module_function_and_global_that_changed(
        tmp_path: Path, home: Path) -> None:
    spec = _spec(tmp_path)
    environment = _environment(home)
    ran = nbflow("run", spec, "-o", "out.json", cwd=tmp_path, env=environment)
    assert ran.returncode == 0, ran.stderr

    same = nbflow("why", spec, "report", cwd=tmp_path, env=environment)
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith("report: would be a cache hit")

    days = nbflow("why", spec, "report", "-p", "days", "60", cwd=tmp_path, env=environment)
    assert "upstream 'load' changed: parameter 'days' 30 -> 60" in days.stdout

    (tmp_path / "why_util.py").write_text(UTIL.replace("v > 0", "v > 1"))
    edited = nbflow("why", spec, "report", cwd=tmp_path, env=environment)
    assert edited.stdout.splitlines() == [
        f"report: would re-run: its cache key changed since run {_last_run(tmp_path)}:",
        "  upstream 'clean' changed: function clean_helper in why_util.py at line 8"]
    assert nbflow("why", spec, "load", cwd=tmp_path, env=environment).stdout.startswith(
        "load: would be a cache hit")  # load does not use why_util

    (tmp_path / "why_tasks.py").write_text(TASKS.replace("THRESHOLD = 2", "THRESHOLD = 3"))
    threshold = nbflow("why", spec, "report", cwd=tmp_path, env=environment)
    assert "  global 'THRESHOLD' changed" in threshold.stdout.splitlines()


def test_why_refuses_an_unknown_task_and_a_workflow_never_run(tmp_path: Path, home: Path) -> None:
    spec = _spec(tmp_path)
    environment = _environment(home)
    never = nbflow("why", spec, "report", cwd=tmp_path, env=environment)
    assert never.returncode == 2
    assert "no run history" in never.stderr or "no recorded run" in never.stderr
    assert nbflow("run", spec, cwd=tmp_path, env=environment).returncode == 0
    typo = nbflow("why", spec, "reprot", cwd=tmp_path, env=environment)
    assert typo.returncode == 2
    assert "'reprot', which is not a task of flow 'sales'. Did you mean 'report'?" in typo.stderr
    missing = nbflow("why", tmp_path / "nope.yaml", "report", cwd=tmp_path, env=environment)
    assert missing.returncode == 2 and "no such workflow file" in missing.stderr


def test_why_of_a_notebook_runs_no_task(tmp_path: Path, home: Path) -> None:
    (tmp_path / "why_util.py").write_text(UTIL)
    notebook = tmp_path / "wf.ipynb"
    _write_notebook(notebook)
    environment = _environment(home)
    ran = nbflow("run", notebook, "-o", "out.ipynb", cwd=tmp_path, env=environment)
    assert ran.returncode == 0, ran.stderr
    (tmp_path / "why_util.py").write_text(UTIL.replace("v > 0", "v > 1"))
    found = nbflow("why", notebook, "report", "-p", "days", "6", cwd=tmp_path, env=environment)
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    assert lines[0].startswith("report: would re-run: its cache key changed since run ")
    assert "function clean_helper in why_util.py at line 8" in lines[1]
    assert "parameter 'days' 5 -> 6" in lines[1]
    assert not (tmp_path / "ran.txt").exists()  # the task cells were declared, not run


def test_why_of_a_notebook_reads_its_command_cells(tmp_path: Path, home: Path) -> None:
    notebook = tmp_path / "commands.ipynb"
    params = nbformat.v4.new_code_cell("days = 5")  # type: ignore[no-untyped-call]
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.cells = [nbformat.v4.new_code_cell("%load_ext nbflow"), params,  # type: ignore[no-untyped-call]
                *(nbformat.v4.new_code_cell(c) for c in (  # type: ignore[no-untyped-call]
                    "%%nbflow command listing\necho {days}",
                    "%%nbflow task count\nlen(listing.stdout)", "%nbflow run"))]
    nbformat.write(nb, notebook)  # type: ignore[no-untyped-call]
    environment = _environment(home)
    assert nbflow("run", notebook, "-o", "out.ipynb", cwd=tmp_path, env=environment).returncode == 0
    same = nbflow("why", notebook, "count", cwd=tmp_path, env=environment)
    assert same.stdout.startswith("count: would be a cache hit"), same.stderr
    other = nbflow("why", notebook, "count", "-p", "days", "6", cwd=tmp_path, env=environment)
    assert other.stdout.splitlines()[1] == "  upstream 'listing' changed: parameter 'days' 5 -> 6"


def test_package_versions_are_named_with_both_versions() -> None:
    assert part_changes({"package pandas": "2.2.3"}, {"package pandas": "3.0.1"}) == [
        "package pandas 2.2.3 -> 3.0.1"]


def _write_notebook(path: Path) -> None:
    params = nbformat.v4.new_code_cell("days = 5")  # type: ignore[no-untyped-call]
    params.metadata["tags"] = ["parameters"]
    cells = ["%load_ext nbflow\nimport why_util\nTHRESHOLD = 2",
             "%%nbflow task load\nopen('ran.txt', 'a').close()\nload = list(range(days))",
             "%%nbflow task clean\nwhy_util.clean_helper(load)",
             "%%nbflow task report --export\n[v for v in clean if v > THRESHOLD]",
             "%nbflow run",
             "import os\nos.remove('ran.txt')"]
    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.cells = [nbformat.v4.new_code_cell(cells[0]), params,  # type: ignore[no-untyped-call]
                *(nbformat.v4.new_code_cell(c) for c in cells[1:])]  # type: ignore[no-untyped-call]
    nbformat.write(nb, path)  # type: ignore[no-untyped-call]


def _last_run(folder: Path) -> str:
    return str(json.loads((folder / "out.json").read_text())["lineage"]["report"]["run_id"])
