"""``nbflow convert --to airflow``: the DAG module, checked by Airflow itself.

The fast tests read the generated text. The slow ones run it with Airflow 3.3.2 in its
own cached venv (``scripts/airflow-venv.sh``, about a minute the first time): the DagBag
imports it without errors, and ``dag.test()`` runs it to nbflow's own states and results.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from nbflow.convert import airflow_helpers as h
from nbflow.convert.airflow import TRIGGER_RULES, to_airflow
from nbflow.convert.model import ConvTask, ConvWorkflow, Param, Ref, load
from nbflow.errors import ExportError
from nbflow.spec import flow_from_spec

ROOT = Path(__file__).resolve().parents[2]
SPECS = Path(__file__).parent / "airflow_specs"
RULES = SPECS / "rules.yaml"
QUICKSTART = ROOT / "notebooks" / "01-quickstart.ipynb"
CLIMATE = ROOT / "examples" / "climate.yaml"
RUNNER = Path(__file__).parent / "airflow_runner.py"
#: Airflow task states as nbflow's (an upstream_failed task is nbflow's skipped one)
STATES = {"success": "succeeded", "failed": "failed", "skipped": "skipped",
          "upstream_failed": "skipped"}


def tiny(*tasks: ConvTask, params: dict[str, Param] | None = None) -> ConvWorkflow:
    return ConvWorkflow("tiny", "", params or {}, list(tasks), [], SPECS)


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


# -- the text -----------------------------------------------------------------------------------


def test_the_rules_spec_becomes_taskflow_with_params_expand_and_trigger_rules() -> None:
    text = to_airflow(load(RULES))
    compile(text, "rules_dag.py", "exec")
    assert "from airflow.sdk import Param, dag, get_current_context, task" in text
    assert "'n': Param(3, description='how many numbers', type='integer')," in text
    assert "task_square.partial().expand(arg_x=out_numbers)" in text
    assert "task_scaled.partial().expand(arg_x=out_square)" in text  # a map of a map
    assert "'values': list(arg_values)" in text  # the fan-in reads the mapped results as a list
    assert ("@task(task_id='square', retries=1, retry_delay=datetime.timedelta(seconds=0.1), "
            "max_active_tis_per_dagrun=2)") in text
    assert "execution_timeout=datetime.timedelta(seconds=60.0)" in text
    assert "@task(task_id='alert', trigger_rule='all_done')" in text
    assert "_skip_unless_failed(['fetch'])" in text
    assert "@task.bash(task_id='shout')" in text
    assert "out_big >> out_shout" in text  # after=
    assert "from af_rules import numbers as fn" in text  # imported when the task runs
    assert TRIGGER_RULES == {"success": "all_success", "failure": "all_done",
                             "always": "all_done"}


def test_a_notebook_defines_its_functions_and_setup_in_the_module() -> None:
    text = to_airflow(load(QUICKSTART))
    compile(text, "quickstart_dag.py", "exec")
    assert "def by_city(rows):" in text
    assert text.index("def by_city") < text.index("def readings(") < text.index("@dag(")
    assert "return readings(**kwargs)" in text


def test_notebook_boilerplate_is_dropped_generators_are_listed_and_unknown_functions_refused(
        ) -> None:
    gen = ConvTask("gen", "gen", source="def gen(n):\n    for i in range(n):\n        yield i",
                   args={"n": Ref("value", 3)})
    wf = ConvWorkflow("nb", "", {}, [gen], ["import nbflow as nf\nimport math", "x = math.pi"],
                      SPECS, "notebook")
    text = to_airflow(wf)
    assert "import nbflow" not in text and "import math" in text
    assert "return list(gen(**kwargs))" in text  # nbflow's result: the generator's items
    assert 'if __name__ == "__main__":\n    the_dag.test()' in text
    wf.setup.append("print(nf.__name__)")  # now the name is used: the import stays
    assert "import nbflow as nf" in to_airflow(wf)
    other = ConvTask("sensor", "sensor")  # a function task of another flow in the notebook
    with pytest.raises(ExportError, match="task 'sensor': its function 'sensor' is not defined"):
        to_airflow(ConvWorkflow("nb", "", {}, [other], ["feed = 1"], SPECS, "notebook"))


def test_parameters_keep_their_schema_and_a_none_default_is_allowed() -> None:
    params = {"k": Param("k", {"type": "integer", "minimum": 1, "default": 2}, 2, True, "how"),
              "tag": Param("tag", {"type": "string", "default": None}, None, True),
              "need": Param("need", {"type": "number", "$comment": "x"}, None, False)}
    task = ConvTask("a", "a", source="def a(k, tag, need):\n    return k",
                    args={n: Ref("param", n) for n in params})
    text = to_airflow(tiny(task, params=params))
    assert "'k': Param(2, description='how', minimum=1, type='integer')," in text
    assert "'tag': Param(None, type=['string', 'null'])," in text
    assert "'need': Param(type='number', **{'$comment': 'x'})," in text


def test_a_command_in_a_container_becomes_a_docker_operator() -> None:
    task = ConvTask("cmd", "cmd", image="localhost/tool:1", retries=2,
                    args={"n": Ref("param", "n"), "up": Ref("task", "up")},
                    command={"command": "tool --n {n} {up} '{{x}}'", "outputs": {}, "env": {
                        "LEVEL": "{n}"}, "stdin": None, "text": True, "shell": "sh"})
    up = ConvTask("up", "up", source="def up():\n    return 'a b'")
    text = to_airflow(tiny(up, task, params={"n": Param("n", {"type": "integer"}, 1, True)}))
    compile(text, "docker_dag.py", "exec")
    assert "from airflow.providers.docker.operators.docker import DockerOperator" in text
    assert "user_defined_filters={'shquote': shlex.quote}" in text
    assert ("command=['sh', '-c', \"tool --n {{ params['n'] | string | shquote }} "
            "{{ ti.xcom_pull(task_ids='up') | string | shquote }} '{x}'\"]") in text
    assert "environment={'LEVEL': \"{{ params['n'] | string | shquote }}\"}" in text
    assert "out_up >> out_cmd" in text


@pytest.mark.parametrize(("task", "feature"), [
    (ConvTask("s", "s", source="def s():\n    yield 1", stream=True), "a streaming task"),
    (ConvTask("m", "m", use="af_rules:square", map="x", run_on="always",
              args={"x": Ref("task", "up")}), "run_on='always' on a mapped task"),
    (ConvTask("p", "p", use="af_rules:numbers", image="python:3"), "a Python task in a container"),
    (ConvTask("c", "c", command={"command": "cat", "stdin": "up", "outputs": {}}), "stdin"),
    (ConvTask("c", "c", command={"command": "x > o", "outputs": {"o": "o"}}), "declared outputs"),
    (ConvTask("c", "c", command={"command": "x", "text": False}), "bytes output"),
    (ConvTask("c", "c", command={"command": "cd {job_dir}"}), "{job_dir}"),
    (ConvTask("c", "c", command={"command": "cat {up.out}"}), "{upstream.output}"),
    (ConvTask("r", "r", use="af_rules:numbers", run_if="<lambda>"), "run_if='<lambda>'"),
    (ConvTask("v", "v", use="af_rules:total", args={"values": Ref("value", object())}),
     "cannot be written into the DAG"),
])
def test_what_airflow_cannot_express_is_refused_naming_the_task(task: ConvTask,
                                                                feature: str) -> None:
    up = ConvTask("up", "up", source="def up():\n    return [1]")
    with pytest.raises(ExportError, match=f"task '{task.name}'") as err:
        to_airflow(tiny(up, task))
    assert feature in str(err.value)


def test_command_placeholders_follow_nbflows_quoting_rules() -> None:
    values = {"f": "a b;c", "many": ["x y", "z"], "n": 3}
    assert h._command("wc {f} {many} {{n}}", values, {}, "sh") == \
        "wc 'a b;c' 'x y' z {n}"
    assert h._command(["tool", "{many}", "-n{n}", "{f}"], values, {}, "sh") == \
        "tool 'x y' z -n3 'a b;c'"
    assert h._command("echo $X", values, {"X": "{f}"}, "zsh") == \
        "export X='a b;c'\nzsh -c 'echo $X'"


def test_run_if_predicates_get_only_the_inputs_they_declare() -> None:
    def pred(total: int) -> bool:
        return total > 1

    assert h._declared(pred, {"total": 2, "other": 1}) == {"total": 2}
    assert h._declared(lambda **kw: True, {"a": 1}) == {"a": 1}
    assert not h.Failed("t", ValueError("x")) and not h.Skipped("t")


# -- with Airflow -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The Airflow venv (made once, cached) and a migrated SQLite metadata db to copy."""
    made = subprocess.run(["bash", str(ROOT / "scripts" / "airflow-venv.sh")], text=True,
                          capture_output=True, timeout=900, check=False)
    if made.returncode != 0:  # no PyPI here: a failure on CI, else a skip (as containers)
        message = f"cannot make the Airflow venv:\n{made.stderr[-3000:]}"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    venv = made.stdout.strip().splitlines()[-1]
    home = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    migrated = subprocess.run([f"{venv}/bin/airflow", "db", "migrate"], env=env, text=True,
                              capture_output=True, timeout=300, check=False)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    yield {"python": f"{venv}/bin/python", "db": str(home / "airflow.db")}
    shutil.rmtree(home, ignore_errors=True)


def run_dag(airflow: dict[str, str], text: str, where: Path, pythonpath: list[Path],
            conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """Import the DAG with Airflow's DagBag and, given ``conf``, ``dag.test()`` it.

    ``pythonpath`` is all the venv gets besides Airflow: nbflow itself is not there."""
    home, dags = where / "home", where / "dags"
    home.mkdir(parents=True)
    dags.mkdir()
    shutil.copy(airflow["db"], home / "airflow.db")
    (dags / "nbflow_dag.py").write_text(text)
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath)}
    out = where / "airflow.json"
    args = [airflow["python"], str(RUNNER), str(dags / "nbflow_dag.py"), str(out)]
    if conf is not None:
        args += ["--test", json.dumps(conf)]
    done = subprocess.run(args, env=env, cwd=where, text=True, capture_output=True,
                          timeout=600, check=False)
    assert done.returncode == 0 and out.exists(), done.stderr[-5000:]
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["import_errors"] == {}
    return report


def as_nbflow(tasks: dict[str, Any]) -> dict[str, str]:
    """Airflow's task states in nbflow's words; a mapped task sums up its branches."""
    states = {}
    for name, entry in tasks.items():
        s = entry["state"]
        if isinstance(s, list):
            s = "failed" if "failed" in s else "success" if set(s) == {"success"} else "skipped"
        states[name] = STATES[s]
    return states


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_rules_dag_runs_in_airflow_to_nbflows_results(airflow: dict[str, str],
                                                          tmp_path: Path) -> None:
    wf = load(RULES)
    report = run_dag(airflow, to_airflow(wf), tmp_path, [SPECS], conf={"n": 4})
    run = flow_from_spec(RULES).run(params={"n": 4}, raise_on_failure=False)
    assert as_nbflow(report["tasks"]) == dict(run.states)
    values = {n: e["value"] for n, e in report["tasks"].items()}
    expected = {n: run.results[n] for n, s in run.states.items() if s == "succeeded"}
    expected["shout"] = expected["shout"].stdout.strip()  # a bash task's XCom: stdout's last line
    assert {n: values[n] for n in expected} == jsonable(expected)
    assert values["cleanup"] == {"parse_ok": False, "parse_type": "Skipped", "total": 60}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_quickstart_notebook_runs_in_airflow_to_the_notebooks_results(
        airflow: dict[str, str], tmp_path: Path) -> None:
    report = run_dag(airflow, to_airflow(load(QUICKSTART)), tmp_path, [], conf={})
    assert set(as_nbflow(report["tasks"]).values()) == {"succeeded"}
    values = {n: e["value"] for n, e in report["tasks"].items()}
    assert values == jsonable(notebook_results(tmp_path))


def notebook_results(cwd: Path) -> dict[str, Any]:
    """The quickstart's results, from its cells up to the first ``%nbflow run`` in a kernel."""
    nb = nbformat.read(QUICKSTART, as_version=4)
    first_run = next(i for i, c in enumerate(nb.cells)
                     if c.cell_type == "code" and c.source.startswith("%nbflow run"))
    out = cwd / "kernel.json"
    nb.cells = nb.cells[: first_run + 1] + [nbformat.v4.new_code_cell(
        "import json, nbflow\n"
        f"json.dump(dict(nbflow.notebook_flow().last_run.results), open({str(out)!r}, 'w'))")]
    NotebookClient(nb, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return json.loads(out.read_text())  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_climate_dag_and_a_docker_dag_import_in_airflow(airflow: dict[str, str],
                                                            tmp_path: Path) -> None:
    # xarray is not in the Airflow venv: the DAG still imports, its tasks import when they run
    report = run_dag(airflow, to_airflow(load(CLIMATE)), tmp_path / "climate", [])
    assert report["dag_ids"] == ["climate"]
    task = ConvTask("cmd", "cmd", image="localhost/tool:1", args={"n": Ref("param", "n")},
                    command={"command": "echo {n}", "outputs": {}, "env": {}})
    docker = tiny(task, params={"n": Param("n", {"type": "integer"}, 1, True)})
    assert run_dag(airflow, to_airflow(docker), tmp_path / "docker", [])["dag_ids"] == ["tiny"]

