"""The ``nbflow`` command end to end: real papermill, real kernels, in subprocesses."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import wait_until

from nbflow.cli import build_parser

from .conftest import EXAMPLE, RESUME, env, events, nbflow, task_states

slow = pytest.mark.slow


def stdout_of(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")


def cell_with(nb, text: str):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(text))


def test_every_subcommand_and_flag_has_help():
    parser = build_parser()
    seen = 0
    stack = [parser]
    while stack:
        p = stack.pop()
        assert p.description or p is parser
        for action in p._actions:
            if action.choices and isinstance(action.choices, dict):  # subcommands
                stack.extend(action.choices.values())
            elif action.dest != "help":
                assert action.help, f"{p.prog} {action.option_strings or action.dest} has no help"
                seen += 1
    assert seen > 15
    for argv in (["--help"], ["run", "--help"], ["sweep", "--help"], ["params", "--help"],
                 ["cache", "--help"], ["cache", "info", "--help"], ["cache", "clear", "--help"]):
        out = subprocess.run([sys.executable, "-m", "nbflow", *argv], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.startswith("usage: nbflow"), argv


@slow
def test_run_succeeds_prints_a_summary_and_writes_every_output(tmp_path):
    proc = nbflow("run", EXAMPLE, "-o", "out.ipynb", "--log-events", "ev.jsonl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "06-batch.ipynb succeeded" in proc.stdout
    for task in ("samples", "split", "model", "baseline", "score", "baseline_score", "gate"):
        assert f"\n  {task} " in proc.stdout
    assert "export score = 0.97" in proc.stdout
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.execution_count is not None
            assert not [o for o in cell.outputs if o.output_type == "error"]
    assert "nbflow: run succeeded" in stdout_of(cell_with(nb, "%nbflow run"))
    assert "quality gate passed" in stdout_of(cell_with(nb, "print(f\"line"))
    log = events(tmp_path / "ev.jsonl")
    assert [e["value"] for e in log if e["event"] == "export"] == [pytest.approx(0.9743)]
    assert all(s[-1] == "succeeded" for s in task_states(tmp_path / "ev.jsonl").values())


@slow
def test_parameters_from_p_and_f_reach_the_tasks(tmp_path):
    (tmp_path / "p.yaml").write_text("n: 40\nseed: 3\nholdout: 0.5\n")
    proc = nbflow("run", EXAMPLE, "-o", "out.ipynb", "-f", "p.yaml", "-p", "n", "100",
                  "-p", "noise", "0.5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert nb.metadata.papermill.parameters == {"n": 100, "seed": 3, "holdout": 0.5,
                                                "noise": 0.5}
    assert "[split]\n50 training samples, 50 test samples\n" in \
        stdout_of(cell_with(nb, "%nbflow run"))


@slow
def test_a_failed_task_exits_1_and_says_which(tmp_path):
    proc = nbflow("run", EXAMPLE, "-o", "out.ipynb", "-p", "noise", "10", cwd=tmp_path)
    assert proc.returncode == 1
    assert "nbflow run: failed:" in proc.stderr
    assert "FlowFailed" in proc.stderr and "gate" in proc.stderr
    assert [ln.split()[:2] for ln in proc.stderr.splitlines() if ln.startswith("  gate ")] == \
        [["gate", "failed"]]
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    [err] = [o for o in cell_with(nb, "%nbflow run").outputs if o.output_type == "error"]
    assert "below min_r2=0.6" in "\n".join(err.traceback)


def _no_params_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize(("args", "message"), [
    (["run", "missing.ipynb"], "nbflow run: notebook 'missing.ipynb' does not exist"),
    (["run", "plain.ipynb", "-p", "x", "2"],
     "nbflow run: plain.ipynb has no cell tagged 'parameters', so -p/-f cannot set anything"),
    (["run", EXAMPLE, "-p", "noize", "2"], "has no parameter 'noize'. Did you mean 'noise'?"),
    (["run", EXAMPLE, "-p", "n", "many"],
     "nbflow run: -p n 'many': parameter 'n' is an integer (default 200 in the parameters "
     "cell), and 'many' is not an integer"),
    (["run", EXAMPLE, "-f", "nothere.yaml"], "cannot read parameters file 'nothere.yaml'"),
    (["sweep", EXAMPLE, "--grid", "nothere.yaml", "--out-dir", "o"],
     "nbflow sweep: cannot read grid file 'nothere.yaml'"),
    (["sweep", EXAMPLE, "--grid", "bad.yaml", "--out-dir", "o"],
     "nbflow sweep: grid file 'bad.yaml' is not valid YAML/JSON"),
    (["sweep", EXAMPLE, "--grid", "typo.yaml", "--out-dir", "o"],
     "has no parameter 'noize'. Did you mean 'noise'?"),
    (["params", "missing.ipynb"], "nbflow params: notebook 'missing.ipynb' does not exist"),
    (["run", EXAMPLE, "--bogus"], "error: unrecognized arguments: --bogus (see nbflow --help)"),
    (["cache", "info"], "nbflow cache: no cache directory"),
    # issue 20
    (["run", EXAMPLE, "--log-events", "logs"],
     "nbflow run: --log-events 'logs' is a directory; give a file, such as 'logs/events.jsonl'"),
    (["run", EXAMPLE, "-o", "logs"], "nbflow run: -o 'logs' is a directory"),
    (["run", EXAMPLE, "-p", "noise", "nan"], "nbflow run: -p noise 'nan': nan is not a finite"),
    (["run", EXAMPLE, "-p", "noise", "inf"], "-p noise 'inf': inf is not a finite number"),
    (["sweep", EXAMPLE, "--grid", "nan.yaml", "--out-dir", "o"],
     "nan.yaml job 1: noise: nan is not a finite number"),
])
def test_bad_input_is_one_line_and_exit_2_before_any_kernel(tmp_path, args, message):
    _no_params_notebook(tmp_path / "plain.ipynb")
    (tmp_path / "bad.yaml").write_text("grid: {noise: [1, 2}\n")
    (tmp_path / "typo.yaml").write_text("grid: {noize: [1, 2]}\n")
    (tmp_path / "nan.yaml").write_text("grid: {noise: [1.0, .nan]}\n")
    (tmp_path / "logs").mkdir()
    proc = nbflow(*args, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # no kernel started: it would print its TCP warning
    assert message in lines[0]
    assert not list(tmp_path.glob("*-output.ipynb")) and not (tmp_path / "o").exists()


@slow
def test_a_dead_kernel_is_reported_and_the_notebook_kept(tmp_path):
    proc = nbflow("run", RESUME, "-o", "out.ipynb", "-p", "crash", "True", cwd=tmp_path)
    assert proc.returncode == 3
    assert "nbflow run: kernel died: the kernel died while running cell In[" in proc.stderr
    assert "'%nbflow run'" in proc.stderr
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    [err] = [o for o in cell_with(nb, "%nbflow run").outputs if o.output_type == "error"]
    assert err.ename == "DeadKernelError"
    assert "nbflow: task 'last'" in stdout_of(cell_with(nb, "%%nbflow task last"))


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@slow
def test_a_killed_run_resumes_recomputing_only_unfinished_tasks(tmp_path):
    gate = tmp_path / "gate"
    gate.touch()
    args = [sys.executable, "-m", "nbflow", "run", str(RESUME), "-o", "out.ipynb",
            "-p", "gate", str(gate), "--cache-dir", "cache"]
    proc = subprocess.Popen([*args, "--log-events", "e1.jsonl"], cwd=tmp_path, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kernels: list[int] = []
    try:
        log = tmp_path / "e1.jsonl"
        wait_until(lambda: proc.poll() is not None
                   or (log.exists() and "running" in task_states(log).get("slow", [])), 90)
        assert proc.poll() is None, "the run ended before slow started"
        # results are written by a background thread, just after each task: wait for
        # those of first and second (a file appears whole, renamed from a hidden temporary)
        cache = tmp_path / "cache"
        wait_until(lambda: len([f for f in cache.glob("??/*.nbr")
                                if not f.name.startswith(".")]) >= 2, 30)
        kernels = _children(proc.pid)
        assert kernels, "no kernel process found"
        proc.kill()  # SIGKILL: no cleanup at all
        proc.wait(10)
    finally:
        _kill(proc.pid)
        for pid in kernels:
            _kill(pid)
    first = task_states(tmp_path / "e1.jsonl")
    assert first["first"][-1] == first["second"][-1] == "succeeded"
    assert first["slow"][-1] == "running"
    assert "succeeded" not in first.get("last", [])

    gate.unlink()
    again = subprocess.run([*args, "--log-events", "e2.jsonl"], cwd=tmp_path, env=env(),
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    second = task_states(tmp_path / "e2.jsonl")
    assert second["first"] == ["cached"] and second["second"] == ["cached"]
    assert "running" in second["slow"] and second["slow"][-1] == "succeeded"
    assert "running" in second["last"] and second["last"][-1] == "succeeded"
    assert "export last = 21" in again.stdout


def _payload(path: Path):
    import pickle

    return pickle.loads(path.read_bytes().split(b"\n", 1)[1])


@slow
def test_a_corrupt_cache_file_is_recomputed_not_loaded(tmp_path):
    run = ["run", RESUME, "-o", "out.ipynb", "--cache-dir", "cache"]
    assert nbflow(*run, cwd=tmp_path).returncode == 0
    files = sorted((tmp_path / "cache").glob("??/*.nbr"))
    assert len(files) == 4
    [second] = [f for f in files if _payload(f) == 2]  # the result of task `second`
    second.write_bytes(second.read_bytes()[:-3])  # truncated
    info = nbflow("cache", "info", "--cache-dir", "cache", cwd=tmp_path)
    assert info.returncode == 0 and "4 results" in info.stdout

    proc = nbflow(*run, "--log-events", "ev.jsonl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    states = task_states(tmp_path / "ev.jsonl")
    assert states["first"] == ["cached"]
    assert "running" in states["second"] and states["second"][-1] == "succeeded"
    # the recomputed value is the same, so what depends on it keeps its cached result
    assert states["slow"] == ["cached"] and states["last"] == ["cached"]
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "last = 21" in stdout_of(cell_with(nb, "print("))
    assert _payload(second) == 2  # rewritten whole

    e = env()
    e["NBFLOW_CACHE_DIR"] = str(tmp_path / "cache")
    cleared = nbflow("cache", "clear", cwd=tmp_path, env=e)
    assert cleared.returncode == 0 and "deleted 4 results" in cleared.stdout
    assert "0 results" in nbflow("cache", "info", cwd=tmp_path, env=e).stdout


@slow
def test_params_json_validates_and_yaml_round_trips_through_run(tmp_path):
    import jsonschema

    proc = nbflow("params", EXAMPLE, "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate({"noise": 2.5, "seed": 4}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"seed": "four"}, schema)
    assert schema["properties"]["noise"] == {
        "type": "number", "default": 1.0,
        "description": "standard deviation of the measurement noise"}

    assert nbflow("params", EXAMPLE, "--format", "yaml", "-o", "form.yaml",
                  cwd=tmp_path).returncode == 0
    form = tmp_path / "form.yaml"
    form.write_text(form.read_text().replace("n: 200", "n: 80"))
    proc = nbflow("run", EXAMPLE, "-f", "form.yaml", "-o", "out.ipynb", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "[split]\n60 training samples, 20 test samples\n" in \
        stdout_of(cell_with(nb, "%nbflow run"))


@slow
def test_a_sweep_runs_every_job_and_summarises_with_one_failing_kind(tmp_path):
    (tmp_path / "grid.yaml").write_text(
        "grid:\n  noise: [0.5, 2.0, 10.0]\n  seed: [1, 2]\nparams:\n  n: 120\n")
    proc = nbflow("sweep", EXAMPLE, "--grid", "grid.yaml", "--out-dir", "out",
                  "--parallel", "3", cwd=tmp_path, timeout=240)
    assert proc.returncode == 1, proc.stderr
    assert "6/6" in proc.stderr  # the progress bar finished
    assert "nbflow sweep: 4 of 6 jobs succeeded" in proc.stdout
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [j["params"] for j in data] == [
        {"n": 120, "noise": noise, "seed": seed}
        for noise in (0.5, 2.0, 10.0) for seed in (1, 2)]
    for job in data:
        assert Path(job["output"]).is_file()
        assert 0 < job["duration"] < 200
        score = job["exports"]["score"]
        if job["params"]["noise"] == 10.0:
            assert job["status"] == "failed" and score < 0.6
            assert job["tasks"]["gate"] == "failed" and "FlowFailed" in job["error"]
        else:
            assert job["status"] == "succeeded" and score > 0.6 and job["error"] is None
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert {"param.noise", "param.seed", "param.n", "status", "duration", "output",
            "export.score"} <= set(rows[0])
    assert [r["status"] for r in rows].count("failed") == 2
    assert float(rows[0]["export.score"]) == data[0]["exports"]["score"]
