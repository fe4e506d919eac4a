"""ecoscope-workflows compilation specs: registered tasks by function name, and every
argument the spec leaves open a typed parameter of the run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import jsonschema
import pytest
import yaml

import nbflow as nf
from nbflow.formats import detect

SPEC = textwrap.dedent('''\
    name: observation-summary
    cache_root: /tmp/ignored-cache
    tasks:
      get_observations: {}
      filter_observations:
        observations: get_observations
      summarize:
        observations: filter_observations
    ''')


def nbflow(*args, cwd):
    return subprocess.run([sys.executable, "-m", "nbflow", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "eco.yaml"
    path.write_text(SPEC)
    return path


def test_it_is_told_from_its_keys(spec):
    assert detect(yaml.safe_load(SPEC)) == "ecoscope"
    flow = nf.Flow.from_spec(spec)
    assert list(flow.tasks) == ["get_observations", "filter_observations", "summarize"]
    assert flow.upstreams("summarize") == ("filter_observations",)


def test_params_lists_the_open_arguments_with_their_annotations(spec, tmp_path):
    out = nbflow("params", spec, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["region"]
    props = schema["properties"]
    assert sorted(props) == ["days", "min_count", "region", "title"]
    assert props["days"] == {"type": "integer", "minimum": 1, "maximum": 365,
                             "description": "days of history", "default": 30}
    assert props["region"] == {"type": "string", "pattern": "^[A-Z]",
                               "description": "the region to fetch"}
    form = nbflow("params", spec, "--format", "yaml", cwd=tmp_path).stdout
    assert "region:   # required: it has no default" in form


def test_a_filled_form_runs_it(spec, tmp_path):
    form = nbflow("params", spec, "--format", "yaml", cwd=tmp_path).stdout
    filled = form.replace("region:   # required: it has no default", "region: Serengeti")
    filled = filled.replace("days: 30", "days: 11")
    (tmp_path / "params.yaml").write_text(filled)
    run = nbflow("run", spec, "-f", "params.yaml", "-o", "out.json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    states = {t["task"]: t["state"] for t in json.loads((tmp_path / "out.json").read_text())
              ["tasks"]}
    assert set(states.values()) == {"succeeded"}
    result = nf.Flow.from_spec(spec).run(params={"region": "Serengeti", "days": 11})
    counts = [(d * 7) % 11 for d in range(11)]
    assert result.results["summarize"] == {
        "title": "summary", "n": sum(c >= 5 for c in counts),
        "total": sum(c for c in counts if c >= 5)}
    bad = nbflow("run", spec, "-p", "region", "Serengeti", "-p", "days", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "greater than or equal to 1" in bad.stderr


def test_shared_open_arguments_are_named_per_task(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text("name: two\ntasks:\n  get_observations: {}\n  summarize:\n"
                    "    observations: get_observations\n  filter_observations:\n"
                    "    observations: get_observations\n")
    schema = json.loads(nbflow("params", path, cwd=tmp_path).stdout)
    assert "min_count" in schema["properties"] and "title" in schema["properties"]
    twice = tmp_path / "twice.yaml"
    twice.write_text("name: t\ntasks:\n  summarize: {}\n  filter_observations: {}\n")
    names = sorted(json.loads(nbflow("params", twice, cwd=tmp_path).stdout)["properties"])
    assert names == ["filter_observations-observations", "min_count",
                     "summarize-observations", "title"]


@pytest.mark.parametrize(("text", "fragment", "line"), [
    ("name: x\ntasks:\n  numbers: {}\n",
     "task 'numbers' is registered by more than one package: eco.numbers, testtasks.numbers",
     3),
    ("name: x\ntasks:\n  get_observation: {}\n",
     "no registered task is called 'get_observation'. Did you mean one of 'get_observations'", 3),
    ("name: x\ntasks:\n  get_observations: {}\n  summarize:\n    observations: get_obs\n",
     "'get_obs' is not a task of this spec. Did you mean 'get_observations'?", 5),
    ("name: x\ntasks:\n  get_observations: {}\n  summarize:\n"
     "    observation: get_observations\n",
     "eco.summarize takes no argument 'observation'. Did you mean 'observations'?", 5),
])
def test_bad_specs_name_the_file_key_and_line(tmp_path, text, fragment, line):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(nf.SpecError) as err:
        nf.Flow.from_spec(path)
    assert fragment in str(err.value) and err.value.line == line
    out = nbflow("validate", path, cwd=tmp_path)
    assert out.returncode == 2 and fragment in out.stderr


def test_format_forces_a_reading(tmp_path):
    path = tmp_path / "eco.yaml"
    path.write_text(SPEC)
    out = nbflow("validate", path, "--format", "nbflow", cwd=tmp_path)
    assert out.returncode == 2 and "get_observations" in out.stderr
    assert nbflow("validate", path, "--format", "ecoscope", cwd=tmp_path).returncode == 0
