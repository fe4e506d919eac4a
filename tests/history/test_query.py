"""Reading the history: runs() and .tasks() DataFrames, diff, lineage, the nbflow runs command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nbflow as nf
from nbflow.errors import UnknownTaskError
from nbflow.history import diff, lineage_document, recorded_lineage, runs, tasks

from .conftest import sales_flow


def test_a_changed_parameter_diff_names_it_the_reruns_and_the_results() -> None:
    flow = sales_flow()
    first = flow.run(params={"days": 30})
    second = flow.run(params={"days": 60})
    assert second.states == {"load": "succeeded", "prices": "cached", "report": "succeeded"}
    result = diff(first.id, second.id)
    assert result.params == {"days": (30, 60)}
    assert result.reran == {"load": ["params"], "report": ["upstreams.load"]}
    assert result.changed == {"load": ["params"], "report": ["upstreams.load"]}
    assert set(result.results) == {"load", "report"}
    assert result.states == {"prices": ("succeeded", "cached")}
    text = str(result)
    assert "days: 30 -> 60" in text
    assert "load: params" in text
    assert "report: upstreams.load" in text
    assert json.loads(json.dumps(result.to_dict()))["params"] == {"days": [30, 60]}


def test_a_diff_of_identical_runs_has_no_differences() -> None:
    flow = sales_flow()
    flow.run()
    flow.run()
    result = diff("-2", "-1")
    assert not (result.params or result.changed or result.reran or result.results)
    assert result.states == {name: ("succeeded", "cached") for name in flow.tasks}
    assert "re-ran" not in str(result)
    assert "no differences" in str(diff("-1", "-1"))


def test_runs_is_a_dataframe_with_parameters_as_columns() -> None:
    flow = sales_flow()
    first = flow.run(params={"days": 2})
    second = flow.run(params={"days": 3})
    sales_flow("other").run()
    frame = nf_runs = runs(flow)
    assert list(frame.columns[:12]) == [
        "run_id", "flow", "status", "started", "ended", "duration", "tasks", "succeeded",
        "cached", "failed", "skipped", "cancelled"]
    assert list(frame["run_id"]) == [first.id, second.id]  # oldest first
    assert list(frame["days"]) == [2, 3]
    assert list(frame["tasks"]) == [3, 3]
    assert list(frame["cached"]) == [0, 1]
    assert len(runs()) == 3
    assert len(runs("other")) == 1
    assert list(runs(limit=1)["flow"]) == ["other"]
    assert nf_runs is frame


def test_tasks_is_one_row_per_task_per_run() -> None:
    flow = sales_flow()
    flow.run(params={"days": 2})
    flow.run(params={"days": 3})
    frame = runs(flow).tasks()
    assert len(frame) == 6
    assert {"run_id", "flow", "task", "state", "key", "code", "duration", "where",
            "result_hash", "preview"} <= set(frame.columns)
    assert list(frame["task"][:3]) == ["load", "prices", "report"]
    assert list(frame["state"][3:]) == ["succeeded", "cached", "succeeded"]
    assert tasks(flow).equals(frame)


def test_a_filtered_history_keeps_its_database() -> None:
    flow = sales_flow()
    flow.run(params={"days": 2})
    flow.run(params={"days": 3})
    history = runs(flow)
    latest = history[history["days"] == 3]
    assert len(latest.tasks()) == 3
    assert set(latest.tasks()["run_id"]) == {history["run_id"].iloc[-1]}


def test_runs_with_no_database_is_empty(home: Path) -> None:
    frame = runs()
    assert len(frame) == 0
    assert len(frame.tasks()) == 0
    assert not home.exists()


def test_lineage_lists_the_upstream_tasks_their_code_and_the_parameters() -> None:
    flow = sales_flow()
    run = flow.run(params={"days": 5})
    found = run.lineage("report")
    assert found["task"] == "report"
    assert found["key"] == run.task("report").key
    assert found["parameters"] == {"days": 5}
    assert [t["task"] for t in found["tasks"]] == ["load", "prices", "report"]
    load = found["tasks"][0]
    assert load["key_parts"]["code"] == flow.tasks["load"].code_key
    assert load["params"] == {"days": 5}
    assert json.loads(json.dumps(found)) == found
    assert [t["task"] for t in run.lineage("load")["tasks"]] == ["load"]
    with pytest.raises(UnknownTaskError):
        run.lineage("reprot")
    document = lineage_document(run, ["report"])
    assert document == {"run_id": run.id, "flow": "sales", "lineage": {"report": found}}
    assert list(lineage_document(run)["lineage"]) == ["load", "prices", "report"]
    recorded = recorded_lineage(run.id, "report")
    assert [t["task"] for t in recorded["tasks"]] == ["load", "prices", "report"]
    assert recorded["parameters"] == {"days": 5}
    assert recorded["tasks"][0]["key_parts"] == load["key_parts"]


def _nbflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbflow", *args], capture_output=True,
                          text=True, env=dict(os.environ), timeout=60, check=False)


def test_the_runs_command_lists_shows_and_diffs() -> None:
    flow = sales_flow()
    first = flow.run(params={"days": 30})
    second = flow.run(params={"days": 60})
    listed = _nbflow("runs")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["id", "flow", "status", "started", "duration", "tasks",
                                "parameters"]
    assert lines[1].startswith(second.id) and lines[2].startswith(first.id)
    assert "days=60" in lines[1]
    shown = _nbflow("runs", "show", second.id[:6])
    assert shown.returncode == 0, shown.stderr
    assert f"run {second.id} of flow 'sales': succeeded" in shown.stdout
    assert "report  succeeded" in shown.stdout
    assert "prices  cached" in shown.stdout
    compared = _nbflow("runs", "diff", "-2", "-1")
    assert compared.returncode == 0, compared.stderr
    assert "days: 30 -> 60" in compared.stdout
    as_json = json.loads(_nbflow("runs", "diff", first.id, second.id, "--json").stdout)
    assert as_json["reran"] == {"load": ["params"], "report": ["upstreams.load"]}
    lineage = json.loads(_nbflow("runs", "show", "-1", "--lineage", "report").stdout)
    assert lineage["parameters"] == {"days": 60}
    missing = _nbflow("runs", "show", "nope")
    assert missing.returncode == 2
    assert "run 'nope' is not recorded" in missing.stderr


def _record(run_id: str, tasks: dict[str, dict[str, object]]) -> tuple[dict, dict]:
    run = {"run_id": run_id, "flow": "f", "status": "succeeded", "params": {}}
    rows = {name: {"task": name, "state": "succeeded", "key": run_id + name, "params": {},
                   "result_hash": "h", **row} for name, row in tasks.items()}
    return run, rows


def test_a_diff_names_package_versions() -> None:
    from nbflow.history.query import compare

    run_a, tasks_a = _record("a", {"fit": {"key_parts": {"code": "c", "package pandas": "2.2.3"}}})
    run_b, tasks_b = _record("b", {"fit": {"key_parts": {"code": "c", "package pandas": "3.0.1"}}})
    result = compare(run_a, run_b, tasks_a, tasks_b)
    assert result.packages == {"pandas": ("2.2.3", "3.0.1")}
    assert result.reran == {"fit": ["package pandas"]}
    assert "  pandas: 2.2.3 -> 3.0.1" in str(result)


def test_a_diff_names_a_changed_global_that_a_helper_reads() -> None:
    namespace: dict[str, object] = {"nf": nf}
    exec(  # a module of its own, whose global can change between runs
        "THRESHOLD = 3\n"
        "def helper(x):\n    return x + THRESHOLD\n"
        "def scaled(n: int = 2):\n    return helper(n)\n", namespace)
    flow = nf.Flow("globals")
    flow.task(namespace["scaled"])
    first = flow.run()
    namespace["THRESHOLD"] = 4
    second = flow.run()
    assert second.results["scaled"] == 6
    result = diff(first.id, second.id)
    (why,) = result.reran["scaled"]
    assert "THRESHOLD" in why
    assert set(result.results) == {"scaled"}


def test_the_runs_command_in_process(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nbflow.cli import main

    assert main(["runs"]) == 0
    assert capsys.readouterr().out.strip() == f"no runs recorded in {home / 'runs.db'}"
    assert main(["runs", "show", "-1"]) == 2
    assert "no run history at" in capsys.readouterr().err
    run = sales_flow().run(params={"days": 4})
    assert main(["runs", "--flow", "sales", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["run_id"] == run.id and listed["params"] == {"days": 4}
    assert main(["runs", "--db", str(home / "runs.db"), "show", "-1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [t["task"] for t in shown["tasks"]] == ["load", "prices", "report"]
    assert main(["runs", "show", run.id, "--db", str(home / "runs.db")]) == 0
    assert f"run {run.id}" in capsys.readouterr().out
