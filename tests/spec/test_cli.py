"""The spec side of the `nbflow` command, through subprocesses: run, params, validate, tasks, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLIMATE = ROOT / "examples" / "climate.yaml"
QUICKSTART = ROOT / "notebooks" / "01-quickstart.ipynb"


def nbflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbflow", *map(str, args)], capture_output=True,
                          text=True, timeout=180, cwd=cwd)


def test_run_a_spec_with_parameters_and_a_json_summary(tmp_path):
    out = tmp_path / "summary.json"
    events = tmp_path / "events.jsonl"
    result = nbflow("run", CLIMATE, "-p", "years", "2", "-p", "path", tmp_path / "c.nc",
                    "-o", out, "--log-events", events, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "flow 'climate': succeeded" in result.stdout
    assert "export table =" in result.stdout
    summary = json.loads(out.read_text())
    assert summary["status"] == "succeeded"
    assert {r["task"]: r["state"] for r in summary["tasks"]}["seasonal"] == "succeeded"
    assert "temperature" in summary["exports"]["table"]
    states = [json.loads(line) for line in events.read_text().splitlines()]
    assert any(e.get("task") == "seasonal" and e.get("state") == "succeeded" for e in states)


def test_a_failing_spec_exits_1_with_the_traceback(tmp_path):
    spec = tmp_path / "fail.yaml"
    spec.write_text(textwrap.dedent("""\
        name: failing
        tasks:
          boom:
            use: testtasks.fail
            args: {message: the data is bad}
          fine:
            use: testtasks.numbers
        """))
    result = nbflow("run", spec)
    assert result.returncode == 1
    assert "ValueError: the data is bad" in result.stderr
    assert "boom" in result.stderr and "failed" in result.stderr


def test_resume_from_a_disk_cache(tmp_path):
    cache = tmp_path / "cache"
    args = ("run", CLIMATE, "-p", "years", "1", "-p", "path", tmp_path / "c.nc",
            "--cache-dir", cache)
    assert nbflow(*args).returncode == 0
    again = nbflow(*args)
    assert again.returncode == 0
    rows = [line.split() for line in again.stdout.splitlines()]
    states = {r[0]: r[1] for r in rows if len(r) > 1 and r[0] in ("data", "seasonal", "table")}
    assert states == {"data": "cached", "seasonal": "cached", "table": "cached"}


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: t\ntasks:\n  a:\n    use: testtasks.numbers\n    retires: 1\n")
    cases = [
        (("run", CLIMATE, "-p", "years", "two"), "'two' is not an integer"),
        (("run", CLIMATE, "-p", "yeras", "2"), "Did you mean 'years'"),
        (("run", typo), f"{typo}:5 at tasks.a.retires"),
        (("validate", typo), "Did you mean 'retries'"),
        (("run", tmp_path / "missing.yaml"), "cannot read the spec"),
    ]
    for args, fragment in cases:
        result = nbflow(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (args, result.stderr)


def test_specs_that_crashed_now_fail_in_one_line(tmp_path):
    """Issue 20: each of these validated (or not) and then printed a traceback."""
    nonsense = tmp_path / "nonsense.yaml"
    nonsense.write_text("name: t\ntasks:\n  a:\n    use: testtasks.numbers\n"
                        "    executor: nonsense\n")
    keyword = tmp_path / "keyword.yaml"
    keyword.write_text("name: t\ntasks:\n  a.b:\n    use: testtasks.numbers\n  b:\n"
                       "    use: testtasks.total\n    args: {values: {$task: a.b}}\n")
    good = tmp_path / "good.yaml"
    good.write_text("name: t\nparameters:\n  x: {type: number, default: 1}\ntasks:\n"
                    "  a:\n    use: testtasks.square\n    args: {x: {$param: x}}\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "inf.yaml").write_text("x: .inf\n")
    cases = [
        (("validate", nonsense), f"{nonsense}:5 at tasks.a.executor: executor 'nonsense' is not"),
        (("run", nonsense), f"{nonsense}:5 at tasks.a.executor"),
        (("validate", keyword), f"{keyword}:2 at tasks: 'a.b' does not match"),
        (("run", keyword), "'a.b' does not match"),
        (("run", good, "--log-events", tmp_path / "logs"), "--log-events"),
        (("run", good, "-p", "x", "nan"), "-p x 'nan': nan is not a finite number"),
        (("run", good, "-f", tmp_path / "inf.yaml"), "x: inf is not a finite number"),
    ]
    for args, fragment in cases:
        result = nbflow(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (args, result.stderr)
    assert "is a directory; give a file, such as" in nbflow(*cases[4][0]).stderr
    env = {**os.environ, "NBFLOW_EXECUTOR": "nonsense"}
    result = subprocess.run([sys.executable, "-m", "nbflow", "run", str(good)], env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 2
    assert result.stderr.strip() == ("nbflow run: executor='nonsense' is not an executor. "
                                     "Choose one of dask, inline, processes, threads, or pass "
                                     "an Executor object.")


def strict_json(text: str):
    def refuse(constant: str):
        raise AssertionError(f"invalid JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_nan_and_infinite_results_are_written_as_valid_json(tmp_path):
    spec = tmp_path / "nan.yaml"
    spec.write_text(textwrap.dedent("""\
        name: nans
        tasks:
          values:
            use: "json:loads"
            args: {s: "[NaN, Infinity, -Infinity, 1.5]"}
            export: true
        """))
    result = nbflow("run", spec, "-o", tmp_path / "out.json", "--log-events", tmp_path / "ev.jsonl")
    assert result.returncode == 0, result.stderr
    summary = strict_json((tmp_path / "out.json").read_text())
    assert summary["exports"] == {"values": ["NaN", "Infinity", "-Infinity", 1.5]}
    lines = [strict_json(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    [export] = [e for e in lines if e["event"] == "export"]
    assert export["value"] == ["NaN", "Infinity", "-Infinity", 1.5]


def test_validate_and_params(tmp_path):
    result = nbflow("validate", CLIMATE)
    assert result.returncode == 0
    assert "valid workflow 'climate': 5 tasks, 3 parameters" in result.stdout
    schema = json.loads(nbflow("params", CLIMATE).stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["years"] == {"type": "integer", "default": 3,
                                             "description": "years of daily data"}
    jsonschema.validate({"years": 4, "path": "x.nc"}, schema)
    form = nbflow("params", CLIMATE, "--format", "yaml").stdout
    assert "parameters` section" in form
    assert yaml.safe_load(form) == {"path": "climate.nc", "years": 3, "seed": 0}
    filled = tmp_path / "params.yaml"
    filled.write_text(form.replace("years: 3", "years: 1"))
    result = nbflow("run", CLIMATE, "-f", filled, "-p", "path", tmp_path / "c.nc", "-q")
    assert result.returncode == 0 and result.stdout == ""


def test_tasks_lists_registered_tasks_and_broken_packages():
    result = nbflow("tasks")
    assert result.returncode == 0
    assert "testtasks.total(values, offset=0)  The sum of the values, plus an offset." in result.stdout
    assert "xarray.seasonal_stats(ds, variable)" in result.stdout
    assert "broken package broken = 'nbflow_testtasks.broken'" in result.stderr


def test_export_then_run_the_exports(tmp_path):
    result = nbflow("export", QUICKSTART, "-o", tmp_path / "flow.yaml")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "flow.yaml").exists() and (tmp_path / "flow_tasks.py").exists()
    run = nbflow("run", tmp_path / "flow.yaml", "-p", "days", "20")
    assert run.returncode == 0, run.stderr
    assert "flow '01_quickstart': succeeded" in run.stdout
    assert nbflow("export", QUICKSTART, "-o", tmp_path / "flow.txt").returncode == 2
