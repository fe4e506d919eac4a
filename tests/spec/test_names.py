"""Names are names, not identifiers: `in`, `class` and `combined-output` name tasks and
parameters in a spec, and every tool takes them (issue 17)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import nbflow as nf
from nbflow.convert.targets import convert
from nbflow.errors import ExportError

SPEC = textwrap.dedent('''\
    nbflow: 1
    name: names
    parameters:
      class: {type: integer, default: 2, minimum: 0}
    tasks:
      in: {use: "names_helpers:one", args: {x: {$param: class}}}
      combined-output:
        use: "names_helpers:two"
        args: {y: {$task: in}}
        export: true
      count: {command: "echo {combined-output}", text: true}
    ''')


@pytest.fixture
def spec(tmp_path):
    (tmp_path / "names_helpers.py").write_text(
        "def one(x):\n    return x + 1\n\n\ndef two(y):\n    return y * 2\n")
    path = tmp_path / "names.yaml"
    path.write_text(SPEC)
    return path


def test_a_spec_with_keywords_and_dashes_runs(spec, tmp_path):
    flow = nf.Flow.from_spec(spec)
    assert flow.upstreams("combined-output") == ("in",)
    run = flow.run(params={"class": 4})
    assert run.results["combined-output"] == 10
    assert run.results["count"].stdout.strip() == "10"
    out = subprocess.run([sys.executable, "-m", "nbflow", "run", spec, "-p", "class", "1",
                          "-o", tmp_path / "out.json"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "out.json").read_text())["exports"] == {"combined-output": 4}


def test_the_targets_take_such_names_or_say_why_not(spec, tmp_path):
    [script] = convert(spec, "script", tmp_path / "script.py")
    ran = subprocess.run([sys.executable, script, "-p", "class", "3", "--json",
                          tmp_path / "r.json"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert json.loads((tmp_path / "r.json").read_text())["exports"] == {"combined-output": 8}
    [dag] = convert(spec, "airflow", tmp_path / "dag.py")
    compile(dag.read_text(), str(dag), "exec")
    assert "task_id='combined-output'" in dag.read_text()
    with pytest.raises(ExportError, match="task 'in': a notebook reads it as a variable"):
        convert(spec, "jupytext", tmp_path / "text.py")


@pytest.mark.parametrize("text", [
    "nbflow: 1\nname: d\ntasks:\n  a: {use: 'names_helpers:one', args: {x: 1}}\n"
    "  a: {use: 'names_helpers:two', args: {y: 1}}\n",
    '{"nbflow": 1, "name": "d",\n "tasks": {"a": {"use": "names_helpers:one", "args": '
    '{"x": 1}}},\n "name": "e"}\n',
])
def test_a_key_given_twice_is_an_error_with_its_line(tmp_path, text):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(nf.SpecError) as err:
        nf.Flow.from_spec(path)
    first, again = (4, 5) if text.startswith("nbflow") else (1, 3)
    assert err.value.line == again
    assert f"duplicate key '{'a' if first == 4 else 'name'}' (first given on line {first})" \
        in str(err.value)
