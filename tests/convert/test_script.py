"""``nbflow convert --to script``: the script, run as a real subprocess, gives nbflow's results."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from nbflow.convert.model import ConvTask, ConvWorkflow, load
from nbflow.convert.script import to_script
from nbflow.convert.script_runtime import _jsonable
from nbflow.errors import ExportError
from nbflow.spec import flow_from_spec

ROOT = Path(__file__).resolve().parents[2]
FILES = Path(__file__).parent / "files"
QUICKSTART = ROOT / "notebooks" / "01-quickstart.ipynb"
CLIMATE = ROOT / "examples" / "climate.yaml"
RULES = FILES / "rules.yaml"

#: the kernel-side code that writes a notebook run's states and results as the script does
EXTRACT = """
import json, nbflow
from nbflow.convert.script_runtime import _jsonable
_run = nbflow.notebook_flow().last_run
json.dump({{"states": dict(_run.states), "exports": _jsonable(
    {{n: _run.results[n] for n, s in _run.states.items() if s == "succeeded"}})}},
    open({out!r}, "w"))
"""


def exported(path: Path) -> ConvWorkflow:
    """The workflow at ``path`` with every task exported, so that every result is compared."""
    wf = load(path)
    for t in wf.tasks:
        t.export = True
    return wf


def comparable(data: dict[str, Any], wf: ConvWorkflow) -> dict[str, Any]:
    """States and results, without command results (nbflow's carry the host and image)."""
    commands = {t.name for t in wf.tasks if t.command}
    return {"states": data["states"],
            "exports": {k: v for k, v in data["exports"].items() if k not in commands}}


def run_script(wf: ConvWorkflow, cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                                 dict[str, Any]]:
    """Write the script into ``cwd`` (so ``use`` modules copied there import) and run it."""
    script = cwd / "flow.py"
    script.write_text(to_script(wf))
    out = cwd / "out.json"
    done = subprocess.run([sys.executable, str(script), "--json", str(out), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)
    data = json.loads(out.read_text()) if out.exists() else {}
    return done, data


def notebook_results(path: Path, cwd: Path) -> dict[str, Any]:
    """Run the notebook's cells up to its first ``%nbflow run`` in a real kernel; its results."""
    nb = nbformat.read(path, as_version=4)
    first_run = next(i for i, c in enumerate(nb.cells)
                     if c.cell_type == "code" and c.source.startswith("%nbflow run"))
    nb.cells = nb.cells[: first_run + 1]
    return kernel_results(nb, cwd)


def kernel_results(nb: Any, cwd: Path) -> dict[str, Any]:
    """Execute ``nb`` (errors allowed: a failed task fails the run cell) and read its results."""
    out = cwd / "kernel.json"
    nb.cells.append(nbformat.v4.new_code_cell(EXTRACT.format(out=str(out))))
    NotebookClient(nb, kernel_name="python3", timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    errors = [o for o in nb.cells[-1].outputs if o.output_type == "error"]
    assert not errors, "\n".join(errors[0].traceback)
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def spec_results(path: Path, params: dict[str, Any]) -> dict[str, Any]:
    run = flow_from_spec(path).run(params=params, raise_on_failure=False)
    results = {n: run.results[n] for n, s in run.states.items() if s == "succeeded"}
    return {"states": dict(run.states), "exports": _jsonable(results)}


@pytest.mark.slow
def test_quickstart_script_gives_the_notebooks_results(tmp_path: Path) -> None:
    wf = exported(QUICKSTART)
    done, data = run_script(wf, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "readings  succeeded" in done.stdout
    assert "import nbflow" not in to_script(wf)  # plain Python
    assert data == notebook_results(QUICKSTART, tmp_path)


def test_climate_script_gives_nbflow_runs_results(tmp_path: Path, monkeypatch: Any) -> None:
    wf = exported(CLIMATE)
    monkeypatch.chdir(tmp_path)
    done, data = run_script(wf, tmp_path, "-p", "years", "2")
    assert done.returncode == 0, done.stderr
    assert data == spec_results(CLIMATE, {"years": 2})
    assert "export table =" in done.stdout


def test_mapped_workflow_with_trigger_rules_and_a_failing_branch(tmp_path: Path,
                                                                 monkeypatch: Any) -> None:
    shutil.copy(FILES / "rules_tasks.py", tmp_path)
    wf = exported(RULES)
    monkeypatch.chdir(tmp_path)
    done, data = run_script(wf, tmp_path, "-p", "scale", "2")
    assert done.returncode == 1  # invert[0] failed
    assert "ZeroDivisionError: division by zero" in done.stderr
    assert "invert[0]: attempt 1 failed" in done.stderr  # retried once
    assert "only_big  skipped (run_if returned False)" in done.stdout
    expected = spec_results(RULES, {"scale": 2})
    assert comparable(data, wf) == comparable(expected, wf)
    assert data["exports"]["words"] == ["4", "2.0"]  # the command's stdout; 2 read as a number


def test_parameters_from_config_then_p_are_checked(tmp_path: Path) -> None:
    shutil.copy(FILES / "rules_tasks.py", tmp_path)
    wf = load(RULES)
    wf.by_name["words"].export = True
    (tmp_path / "params.yaml").write_text("n: 2\nscale: 3\n")
    done, data = run_script(wf, tmp_path, "--config", "params.yaml", "-p", "n", "3")
    assert data["exports"]["words"] == ["3", "3.0"], done.stderr
    done, _ = run_script(wf, tmp_path, "-p", "n", "many")
    assert done.returncode == 2
    assert "parameter n: 'many' is not integer" in done.stderr
    done, _ = run_script(wf, tmp_path, "-p", "nn", "3")
    assert "unknown parameter(s) nn; the parameters are: n, scale" in done.stderr
    wf.params["n"] = type(wf.params["n"])("n", {"type": "integer"}, None, False)
    done, _ = run_script(wf, tmp_path)
    assert "missing required parameter(s) n" in done.stderr


def tiny(*tasks: ConvTask, setup: list[str] | None = None) -> ConvWorkflow:
    return ConvWorkflow("tiny", "", {}, list(tasks), setup or [], Path.cwd(), "notebook")


def test_timeouts_and_async_tasks(tmp_path: Path) -> None:
    stuck = ConvTask("stuck", "stuck", timeout=0.2, export=True, source=(
        "def stuck():\n    import threading\n    threading.Event().wait(60)"))
    waits = ConvTask("waits", "waits", timeout=0.2, is_async=True, source=(
        "async def waits():\n    import asyncio\n    await asyncio.Event().wait()"))
    fine = ConvTask("fine", "fine", is_async=True, export=True, source=(
        "async def fine():\n    return 42"))
    done, data = run_script(tiny(stuck, waits, fine), tmp_path)
    assert done.returncode == 1
    assert data["states"] == {"stuck": "failed", "waits": "failed", "fine": "succeeded"}
    assert data["exports"] == {"fine": 42}
    assert "TaskTimeoutError: still running after its timeout of 0.2 s" in done.stderr
    assert "TaskTimeoutError: cancelled after its timeout of 0.2 s" in done.stderr


@pytest.mark.parametrize("option, feature", [
    ({"stream": True}, "streams"), ({"batch_size": 2}, "batch_size"),
    ({"image": "busybox"}, "container image 'busybox'")])
def test_what_a_script_cannot_do_is_refused_naming_the_task(option: dict[str, Any],
                                                            feature: str) -> None:
    task = ConvTask("numbers", "numbers", source="def numbers():\n    yield 1", **option)
    with pytest.raises(ExportError, match=f"task 'numbers': .*{feature}"):
        to_script(tiny(task))


def test_workflow_code_that_rebinds_a_runtime_name_is_refused() -> None:
    task = ConvTask("a", "a", source="def a():\n    return 1")
    with pytest.raises(ExportError, match="defines Run, which the script's runtime uses"):
        to_script(tiny(task, setup=["Run = 1"]))
