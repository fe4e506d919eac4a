"""Ephemeral job maps under nbflow: Ephemeral's four test jobs, run-time branching, bad input."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow.errors import SpecError
from nbflow.formats.ephemeral import ephemeral_spec, ephemeral_uses
from nbflow.spec import flow_from_spec, parse_spec
from nbflow.spec_calls import imported_modules

JOBS = Path(__file__).parent / "ephemeral_jobs"
SEASONS = ["spring", "summer", "winter", "autumn"]
PARAMETERS = ["tmax", "tmin", "precip"]


def nbflow(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbflow", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=110)


def copy_jobs(tmp_path: Path) -> Path:
    """The job maps and their ``main`` package, in a folder of this test's own."""
    jobs = tmp_path / "jobs"
    shutil.copytree(JOBS, jobs, ignore=shutil.ignore_patterns("__pycache__"))
    return jobs


def run_cli(job: Path, tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "out.json"
    result = nbflow("run", job, "-o", out, *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary: dict[str, Any] = json.loads(out.read_text())
    assert summary["status"] == "succeeded"
    return summary["exports"]  # type: ignore[no-any-return]


def load(job: Path) -> nf.Flow:
    return flow_from_spec(ephemeral_spec(parse_spec(job.read_text(), str(job))))


def with_absolute_path(jobs: Path, nc: Path) -> Path:
    """The dask job with its NetCDF path made absolute (workers have their own cwd)."""
    job = jobs / "dask-xarray-job.json"
    data = json.loads(job.read_text())
    data["datasource"]["content"]["path"] = str(nc)
    job.write_text(json.dumps(data, indent=2))
    return job


def expected_statistics(nc: Path) -> dict[str, list[dict[str, Any]]]:
    """What the dask job's outputs hold, computed here with xarray directly."""
    import xarray as xr

    with xr.open_dataset(nc, engine="h5netcdf") as ds:
        tas = ds["tas"].load()
    out: dict[str, list[dict[str, Any]]] = {}
    for stat in ("mean", "max", "min"):
        out[f"{stat}-out"] = [
            {"season": s, "statistic": stat,
             "value": float(getattr(tas.where(tas["time.season"] == s, drop=True), stat)())}
            for s in ("DJF", "MAM", "JJA", "SON")]
    return out


def assert_statistics(exports: dict[str, Any], nc: Path) -> None:
    expected = expected_statistics(nc)
    for out, rows in expected.items():
        assert [(r["season"], r["statistic"]) for r in exports[out]] == \
            [(r["season"], r["statistic"]) for r in rows]
        assert [r["value"] for r in exports[out]] == pytest.approx([r["value"] for r in rows])


# -- the four jobs, as Ephemeral's tests run them --------------------------------------------


def test_example_job(tmp_path):
    exports = run_cli(copy_jobs(tmp_path) / "example-job.json", tmp_path)
    assert exports["out"] == [{"input": "We got: This is a test!this is our test string input"}]


def test_branching_job(tmp_path):
    exports = run_cli(copy_jobs(tmp_path) / "branching-job.json", tmp_path)
    assert exports["short-output"] == [{"lengths": [2, 5, 3, 2, 5]}]
    assert exports["long-output"] == [{"lengths": [6, 7, 9]}]


def test_multi_layer_vector_job(tmp_path):
    exports = run_cli(copy_jobs(tmp_path) / "multi-layer-vector-job.json", tmp_path)
    assert exports["combined-output"] == [{"combined": s + p} for s in SEASONS for p in PARAMETERS]


@pytest.mark.slow
def test_dask_xarray_job(tmp_path):
    job = with_absolute_path(copy_jobs(tmp_path), tmp_path / "climate.nc")
    exports = run_cli(job, tmp_path)
    assert_statistics(exports, tmp_path / "climate.nc")


# -- run-time branching ------------------------------------------------------------------------


def test_later_seasons_go_on_while_the_first_is_held():
    """Spring's split-parameters waits on an event; the other seasons' combine-words
    branches finish meanwhile; then spring goes on, and the output is in input order."""
    flow = load(JOBS / "multi-layer-vector-job.json")
    split = sys.modules["main.parsing.split"]
    operations = sys.modules["main.strings.operations"]
    gate = threading.Event()
    combined: queue.Queue[dict[str, Any]] = queue.Queue()
    split.GATES["spring"] = gate
    operations.LISTENERS.append(combined)
    try:
        run = flow.run(executor="threads", background=True)
        later = {combined.get(timeout=30)["combined"] for _ in range(9)}  # spring is held
        assert later == {s + p for s in SEASONS[1:] for p in PARAMETERS}
        assert not gate.is_set() and run.task("split-parameters").state == "running"
        gate.set()
        run.wait()
    finally:
        gate.set()
        split.GATES.clear()
        operations.LISTENERS.clear()
    assert {combined.get(timeout=5)["combined"] for _ in range(3)} == {
        "spring" + p for p in PARAMETERS}
    assert run.results["combined-output"] == [
        {"combined": s + p} for s in SEASONS for p in PARAMETERS]
    # one branch per season below the first returned list, none declared up front
    assert run.task("combine-words").branches == 4


def test_a_list_returned_inside_a_branch_branches_again(tmp_path):
    """Three levels of lists: the output has every combination, in the lists' order."""
    (tmp_path / "grid.py").write_text(
        "def split(data, *, key, name):\n"
        "    rest = {k: v for k, v in data.items() if k != key}\n"
        "    return [{name: x, **rest} for x in data[key]]\n"
        "def join(data):\n"
        "    return {'label': data['a'] + data['b'] + data['c']}\n")
    job = {
        "datasource": {"source": "direct",
                       "content": {"as": ["x", "y"], "bs": ["1", "2", "3"], "cs": ["!", "?"]}},
        "tasks": [{"name": "in", "type": "input"}]
        + [{"name": f"split-{k}", "type": "function", "namespace": "grid", "method": "split",
            "init_args": {"key": k + "s", "name": k}} for k in "abc"]
        + [{"name": "join", "type": "function", "namespace": "grid", "method": "join"},
           {"name": "out", "type": "output"}],
        "workflow": [["in", "split-a"], ["split-a", "split-b"], ["split-b", "split-c"],
                     ["split-c", "join"], ["join", "out"]],
    }
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(job))
    run = load(path).run()
    assert run.results["out"] == [{"label": a + b + c} for a in "xy" for b in "123" for c in "!?"]


def test_the_modules_a_job_imports():
    job = JOBS / "branching-job.json"
    mapping = ephemeral_spec(parse_spec(job.read_text(), str(job)))
    assert ephemeral_uses(mapping) == [
        "main.parsing.strings:split_string", "main.strings.operations:capitalize_words",
        "main.parsing.strings:filter_string_length", "main.strings.operations:char_count"]
    modules = imported_modules(ephemeral_uses(mapping), JOBS)
    assert [m.module for m in modules] == ["main.parsing.strings", "main.strings.operations"]
    assert all(m.origin.startswith("beside the spec") for m in modules)


def test_empty_lists_and_an_output_below_the_input(tmp_path):
    (tmp_path / "few.py").write_text(
        "def none(data):\n    return []\n"
        "def each(data):\n    return [{'x': x} for x in data['xs']]\n"
        "async def double(data):\n    return {'x': 2 * data['x']}\n")
    job = {"datasource": {"source": "direct", "content": {"xs": []}},
           "tasks": [{"name": "in", "type": "input"},
                     {"name": "each", "type": "function", "namespace": "few", "method": "each"},
                     {"name": "double", "type": "function", "namespace": "few",
                      "method": "double"},
                     {"name": "none", "type": "function", "namespace": "few", "method": "none"},
                     {"name": "after-none", "type": "function", "namespace": "few",
                      "method": "double"},
                     {"name": "doubled", "type": "output"}, {"name": "nothing", "type": "output"},
                     {"name": "raw", "type": "output"}],
           "workflow": [["in", "each"], ["each", "double"], ["double", "doubled"],
                        ["in", "none"], ["none", "after-none"], ["after-none", "nothing"],
                        ["in", "raw"]]}
    path = tmp_path / "few.json"
    path.write_text(json.dumps(job))
    run = load(path).run()
    assert run.results["doubled"] == [] and run.results["nothing"] == []
    assert run.results["raw"] == [{"xs": []}]
    job["datasource"]["content"]["xs"] = [1, 2, 3]
    path.write_text(json.dumps(job))
    for executor in ("threads", "inline", "processes"):  # async functions on each
        run = load(path).run(executor=executor)
        assert run.results["doubled"] == [{"x": 2}, {"x": 4}, {"x": 6}], executor


def test_a_function_that_returns_no_dict_fails_its_task(tmp_path):
    (tmp_path / "bad.py").write_text("def number(data):\n    return 3\n")
    job = {"datasource": {"source": "direct", "content": {}},
           "tasks": [{"name": "in", "type": "input"},
                     {"name": "f", "type": "function", "namespace": "bad", "method": "number"},
                     {"name": "out", "type": "output"}],
           "workflow": [["in", "f"], ["f", "out"]]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(job))
    run = load(path).run(raise_on_failure=False)
    assert run.task("f").state == "failed"
    assert "returned a int; an Ephemeral function returns a dict or a list of dicts" \
        in str(run.task("f").error.error)
    assert run.task("out").state == "skipped"


def test_a_file_datasource_and_a_registered_namespace(tmp_path):
    (tmp_path / "input.json").write_text(json.dumps({"s": "[1, 2, 3]"}))
    (tmp_path / "wrap.py").write_text("import json\n"
                                      "def parse(data):\n    return {'n': json.loads(data['s'])}\n")
    job = {"datasource": {"source": "file", "path": "input.json"},
           "tasks": [{"name": "in", "type": "input"},
                     {"name": "parse", "type": "function", "namespace": "wrap",
                      "method": "parse"},
                     {"name": "out", "type": "output"}],
           "workflow": [["in", "parse"], ["parse", "out"]]}
    path = tmp_path / "file.json"
    path.write_text(json.dumps(job))
    assert load(path).run().results["out"] == [{"n": [1, 2, 3]}]


# -- on a dask cluster started with the `dask` command ------------------------------------------


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parents[1] / "dask"))
    try:
        from dask_clusters import dask_cluster, start_cli_cluster
    finally:
        sys.path.pop(0)
    cluster = start_cli_cluster(tmp_path_factory.mktemp("dask-cli"), [[], []])
    try:
        yield cluster
    finally:
        dask_cluster.reset()
        cluster.stop()


@pytest.mark.slow
def test_dask_xarray_job_on_a_dask_cluster(cli_cluster, tmp_path):
    job = with_absolute_path(copy_jobs(tmp_path), tmp_path / "climate.nc")
    exports = run_cli(job, tmp_path, "--cluster", cli_cluster.address)
    assert_statistics(exports, tmp_path / "climate.nc")


@pytest.mark.slow
def test_workers_get_the_job_modules_from_nbflow(cli_cluster, tmp_path):
    """The job's folder is gone once the flow is loaded: the workers run its functions
    all the same, sent by value with the tasks."""
    jobs = copy_jobs(tmp_path)
    job = with_absolute_path(jobs, tmp_path / "climate.nc")
    flow = load(job)
    shutil.move(jobs, tmp_path / "elsewhere")
    run = flow.run(executor=nf.DaskExecutor(cli_cluster.address))
    assert run.task("get-mean").where.startswith("tcp://127.0.0.1:")
    assert_statistics({t: run.results[t] for t in ("mean-out", "max-out", "min-out")},
                      tmp_path / "climate.nc")


# -- bad input: the file, the key path and the line, before anything runs ------------------------


def problem(tmp_path: Path, job: dict[str, Any] | str) -> SpecError:
    path = tmp_path / "job.json"
    text = job if isinstance(job, str) else json.dumps(job, indent=2)
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        ephemeral_spec(parse_spec(text, str(path)))
    return info.value


def good_job() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((JOBS / "branching-job.json").read_text())
    return data


def line_of(tmp_path: Path, needle: str) -> int:
    lines = (tmp_path / "job.json").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


def test_an_edge_to_a_missing_task(tmp_path):
    job = good_job()
    job["workflow"][3] = ["capitalize", "filter-lng"]
    shutil.copytree(JOBS / "main", tmp_path / "main")
    exc = problem(tmp_path, job)
    assert exc.path == ("workflow", 3, 1)
    assert exc.file == str(tmp_path / "job.json")
    assert exc.line == line_of(tmp_path, '"filter-lng"')
    assert "'filter-lng' is not a task of this job. Did you mean one of 'filter-long'" in str(exc)


def test_an_unknown_method_and_namespace(tmp_path):
    shutil.copytree(JOBS / "main", tmp_path / "main")
    job = good_job()
    job["tasks"][1]["method"] = "split_strng"
    exc = problem(tmp_path, job)
    assert exc.path == ("tasks", 1, "method")
    assert exc.line == line_of(tmp_path, '"split_strng"')
    assert "Did you mean 'split_string'?" in str(exc)
    job = good_job()
    job["tasks"][2]["namespace"] = "main.string.operations"
    exc = problem(tmp_path, job)
    assert exc.path == ("tasks", 2, "namespace")
    assert "'main.string.operations' is neither the namespace of a registered task" in str(exc)
    assert "Did you mean one of 'main.strings.operations'" in str(exc)


def test_a_bad_datasource(tmp_path):
    job = good_job()
    job["datasource"]["source"] = "dirct"
    exc = problem(tmp_path, job)
    assert exc.path == ("datasource", "source")
    assert exc.line == line_of(tmp_path, '"dirct"')
    assert "Did you mean 'direct'?" in str(exc)
    job["datasource"] = {"source": "file", "path": "nowhere.json"}
    exc = problem(tmp_path, job)
    assert exc.path == ("datasource", "path") and "cannot read the datasource" in str(exc)
    job["datasource"] = {"source": "direct", "content": ["not", "a", "dict"]}
    assert problem(tmp_path, job).path == ("datasource", "content")


def test_init_args_consumes_and_produces(tmp_path):
    shutil.copytree(JOBS / "main", tmp_path / "main")
    job = good_job()
    job["tasks"][3]["init_args"] = {"word_lenght": 5}
    exc = problem(tmp_path, job)
    assert exc.path == ("tasks", 3, "init_args", "word_lenght")
    assert "takes no keyword argument 'word_lenght'. Did you mean 'word_length'?" in str(exc)
    job = good_job()
    job["tasks"][2]["consumes"] = "string"
    exc = problem(tmp_path, job)
    assert exc.path == ("workflow", 1)
    assert "'split' produces 'list(string)' but 'capitalize' consumes 'string'" in str(exc)
    job = json.loads((JOBS / "multi-layer-vector-job.json").read_text())
    job["tasks"][1]["produces"] = "split-list"
    job["tasks"][2]["consumes"] = "split-list"
    exc = problem(tmp_path, job)
    assert exc.path == ("tasks", 1, "produces")
    assert "main.parsing.split.split_list produces 'split-map', not 'split-list'" in str(exc)


def test_annotated_types(tmp_path):
    shutil.copytree(JOBS / "main", tmp_path / "main")
    job = good_job()
    job["tasks"][3]["init_args"]["word_length"] = "five"
    exc = problem(tmp_path, job)
    assert exc.path == ("tasks", 3, "init_args", "word_length")
    assert "filter_string_length takes word_length of type int: 'five'" in str(exc)
    (tmp_path / "typed.py").write_text("def text(data: str) -> dict:\n    return {}\n"
                                       "def number(data: dict) -> int:\n    return 1\n"
                                       "def fine(data: dict) -> dict | list[dict]:\n"
                                       "    return data\n")
    job = {"datasource": {"source": "direct", "content": {}},
           "tasks": [{"name": "in", "type": "input"},
                     {"name": "f", "type": "function", "namespace": "typed", "method": "text"},
                     {"name": "out", "type": "output"}],
           "workflow": [["in", "f"], ["f", "out"]]}
    exc = problem(tmp_path, job)
    assert exc.path == ("tasks", 1, "method")
    assert "typed.text takes str first; an Ephemeral function takes the input dict" in str(exc)
    job["tasks"][1]["method"] = "number"
    assert "typed.number returns int; an Ephemeral function returns a dict or a list of dicts" \
        in str(problem(tmp_path, job))
    job["tasks"][1]["method"] = "fine"
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    assert load(path).run().results["out"] == [{}]


def test_workflow_shape(tmp_path):
    shutil.copytree(JOBS / "main", tmp_path / "main")
    job = good_job()
    job["workflow"].append(["split", "filter-long"])
    exc = problem(tmp_path, job)
    assert exc.path == ("workflow", 8, 1) and "has one parent" in str(exc)
    job = good_job()
    del job["workflow"][-1]
    exc = problem(tmp_path, job)
    assert exc.path == ("tasks", 8, "name") and "no edge leads to task 'long-output'" in str(exc)
    job = good_job()
    job["tasks"].append({"name": "in2", "type": "input"})
    assert "exactly one input task" in str(problem(tmp_path, job))
    job = good_job()
    job["tasks"][0]["typ"] = "input"
    exc = problem(tmp_path, job)
    assert exc.path == ("tasks", 0, "typ") and "Did you mean 'type'?" in str(exc)
    job = good_job()
    job["tasks"][1]["name"] = "split words"
    exc = problem(tmp_path, job)
    assert exc.path == ("tasks", 1, "name") and "cannot be a task name under nbflow" in str(exc)
    job = good_job()
    job["worflow"] = job.pop("workflow")
    exc = problem(tmp_path, job)
    assert exc.path == ("worflow",) and "Did you mean 'workflow'?" in str(exc)
