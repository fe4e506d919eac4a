"""Workflow specs: load, validate with key paths and lines, run, round-trip."""

from __future__ import annotations

import json
import textwrap

import pytest

import nbflow as nf
from nbflow.spec import dump_spec, load_spec, schema

GOOD = textwrap.dedent(
    """\
    nbflow: 1
    name: squares
    description: sum of squares
    parameters:
      n: {type: integer, default: 4, help: how many numbers}
      offset: {type: integer, default: 0}
    tasks:
      numbers:
        use: testtasks.numbers
        args: {n: {$param: n}}
      square:
        use: testtasks.square
        map: numbers
        args: {x: {$task: numbers}}
        retries: 1
      total:
        use: nbflow_testtasks.tasks:total
        args:
          values: {$task: square}
          offset: {$param: offset}
      check:
        use: testtasks.is_big
        args: {value: {$task: total}}
        run_if: testtasks.is_big
        after: [numbers]
    """
)


def write(tmp_path, text, name="flow.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_spec_runs_with_registered_and_importable_functions(tmp_path):
    flow = nf.Flow.from_spec(write(tmp_path, GOOD))
    assert flow.name == "squares" and list(flow.tasks) == ["numbers", "square", "total", "check"]
    assert flow.upstreams("square") == ("numbers",)
    run = flow.run()
    assert run.results["square"] == [0, 1, 4, 9]
    assert run.results["total"] == 14
    assert run.results["check"] is True
    run = flow.run(params={"n": 2, "offset": 1})
    assert run.results["total"] == 2
    assert run.states["check"] == "skipped"  # run_if: total is not big


def test_json_specs_work_too(tmp_path):
    import yaml

    data = yaml.safe_load(GOOD)
    path = write(tmp_path, json.dumps(data, indent=2), "flow.json")
    assert nf.Flow.from_spec(path).run().results["total"] == 14


def test_round_trip(tmp_path):
    flow = nf.Flow.from_spec(write(tmp_path, GOOD))
    data = flow.to_spec()
    assert data["tasks"]["square"] == {"use": "testtasks.square", "args": {"x": {"$task": "numbers"}},
                                       "map": "numbers", "retries": 1}
    assert data["parameters"]["n"] == {"type": "integer", "default": 4, "help": "how many numbers"}
    again = nf.Flow.from_spec(data).to_spec()
    assert again == data
    out = tmp_path / "copy.yaml"
    flow.to_spec(out)
    assert nf.Flow.from_spec(out).run().results["total"] == 14


def test_group_round_trips(tmp_path):
    text = GOOD.replace("    retries: 1\n", "    retries: 1\n    group: squares\n")
    assert text != GOOD
    flow = nf.Flow.from_spec(write(tmp_path, text))
    assert flow.tasks["square"].options.group == "squares"
    assert flow.tasks["total"].options.group is None
    data = flow.to_spec()
    assert data["tasks"]["square"]["group"] == "squares"
    assert "group" not in data["tasks"]["total"]
    assert nf.Flow.from_spec(data).to_spec() == data


def test_python_flows_with_module_functions_export_to_specs():
    from nbflow_testtasks import tasks

    flow = nf.Flow("py")
    flow.add(nf.Task.from_function(tasks.numbers))
    flow.add(nf.Task.from_function(tasks.total, options={"retries": 2}))
    data = flow.to_spec()
    assert data["tasks"]["total"]["args"] == {"values": {"$param": "values"},
                                              "offset": {"$param": "offset"}}
    assert data["tasks"]["total"]["retries"] == 2
    assert data["parameters"]["n"] == {"default": 3}

    local = nf.Flow("local")

    @local.task
    def here():
        return 1

    with pytest.raises(nf.SpecError, match="cannot be named in a spec"):
        local.to_spec()


def test_literal_arguments_and_escaped_values(tmp_path):
    text = textwrap.dedent(
        """\
        name: lit
        tasks:
          total:
            use: testtasks.total
            args:
              values: [1, 2, 3]
              offset: 10
        """
    )
    assert nf.Flow.from_spec(write(tmp_path, text)).run().results["total"] == 16


def test_changing_a_literal_changes_the_cache_key(tmp_path):
    base = "name: lit\ntasks:\n  total:\n    use: testtasks.total\n    args: {values: [1], offset: %d}\n"
    a = nf.Flow.from_spec(write(tmp_path, base % 1, "a.yaml")).tasks["total"].code_key
    b = nf.Flow.from_spec(write(tmp_path, base % 2, "b.yaml")).tasks["total"].code_key
    assert a != b


BAD = [
    ("name: x\n", "'tasks' is a required property", "", 1),
    ("name: x\ntasks:\n  a:\n    use: testtasks.numbers\n    retires: 2\n",
     "'retires' is not a task key. Did you mean 'retries'?", "tasks.a.retires", 5),
    ("name: x\ntasks:\n  a:\n    use: testtasks.numbers\n    retries: many\n",
     "'many' is not of type 'integer'", "tasks.a.retries", 5),
    ("name: x\ntasks:\n  a:\n    use: testtasks.nubmers\n",
     "Did you mean 'testtasks.numbers'", "tasks.a.use", 4),
    ("name: x\ntasks:\n  a:\n    use: nbflow_testtasks.tasks:nope\n",
     "has no attribute 'nope'", "tasks.a.use", 4),
    ("name: x\ntasks:\n  a:\n    use: no_such_module_xyz:f\n",
     "cannot import module 'no_such_module_xyz'", "tasks.a.use", 4),
    ("name: x\ntasks:\n  a:\n    use: testtasks.square\n    args:\n      x: {$task: b}\n",
     "'b' is not a task of this spec", "tasks.a.args.x.$task", 6),
    ("name: x\ntasks:\n  a:\n    use: testtasks.square\n    args:\n      x: {$param: nn}\n",
     "'nn' is not a parameter of this spec", "tasks.a.args.x.$param", 6),
    ("name: x\ntasks:\n  a:\n    use: testtasks.square\n    args:\n      y: 1\n",
     "takes no argument 'y'", "tasks.a.args.y", 6),
    ("name: x\ntasks:\n  a:\n    use: testtasks.square\n",
     "needs argument(s) 'x'", "tasks.a", 3),
    ("name: x\ntasks:\n  a:\n    use: testtasks.numbers\n  b:\n    use: testtasks.square\n"
     "    map: c\n    args: {x: {$task: a}}\n",
     "map='c' must name a task passed in args", "tasks.b.map", 7),
    ("name: x\ntasks:\n  a:\n    use: testtasks.square\n    args: {x: {$task: b}}\n"
     "  b:\n    use: testtasks.square\n    args: {x: {$task: a}}\n",
     "dependency cycle", "tasks", None),
    ("name: x\nparameters:\n  n: {type: integer, default: two}\ntasks:\n  a:\n"
     "    use: testtasks.numbers\n    args: {n: {$param: n}}\n",
     "default 'two' is not of type 'integer'", "parameters.n.default", 3),
    ("name: x\ntasks:\n  a:\n    use: testtasks.total\n    args: {values: [{$task: a}]}\n",
     "must be the whole argument value", "tasks.a.args.values", 5),
    ("name: x\ntasks: [\n", "not valid YAML/JSON", "", None),
    ("name: x\ntasks:\n  a:\n    use: testtasks.numbers\n    group: ''\n",
     "''", "tasks.a.group", 5),
    ("name: x\ntasks:\n  a:\n    use: testtasks.numbers\n    group: ' '\n",
     "'group' must be a non-empty string", "tasks.a", 3),
    # issue 20: these validated, then crashed with a traceback
    ("name: x\ntasks:\n  a:\n    use: testtasks.numbers\n    executor: nonsense\n",
     "executor 'nonsense' is not an executor. Executors: dask, inline, processes, threads.",
     "tasks.a.executor", 5),
    ("name: x\ntasks:\n  a:\n    use: testtasks.numbers\n    executor: thread\n",
     "Did you mean 'threads'?", "tasks.a.executor", 5),
    ("name: x\ntasks:\n  a.b:\n    use: testtasks.numbers\n",
     "'a.b' does not match", "tasks", 2),
    ("name: x\nparameters:\n  n: {type: integer, default: [" + ", ".join(["7"] * 400) + "]}\n"
     "tasks:\n  a:\n    use: testtasks.numbers\n    args: {n: {$param: n}}\n",
     "... (1,200 characters) is not of type 'integer'", "parameters.n.default", 3),
]


@pytest.mark.parametrize("text, message, path, line", BAD, ids=[b[2] or b[1][:20] for b in BAD])
def test_bad_specs_point_at_file_key_and_line(tmp_path, text, message, path, line):
    file = write(tmp_path, text)
    with pytest.raises(nf.SpecError) as info:
        nf.Flow.from_spec(file)
    err = info.value
    assert message in str(err)
    assert err.file == str(file)
    assert ".".join(map(str, err.path)).startswith(path)
    if line is not None:
        assert err.line == line
        assert f"{file}:{line}" in str(err)


def test_spec_files_build_no_python_objects(tmp_path):
    text = "name: x\ntasks: !!python/object/apply:os.system ['echo hacked']\n"
    with pytest.raises(nf.SpecError, match="not valid YAML"):
        load_spec(write(tmp_path, text))


def test_missing_file():
    with pytest.raises(nf.SpecError, match="cannot read the spec"):
        load_spec("/nonexistent/flow.yaml")


def test_the_published_schema_is_valid_json_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema())
    jsonschema.validate({"name": "x", "tasks": {"a": {"use": "m:f"}}}, schema())


def test_dump_spec_formats(tmp_path):
    data = {"name": "x", "tasks": {"a": {"use": "m:f"}}}
    assert json.loads(dump_spec(data, tmp_path / "x.json")) == data
    assert "name: x" in dump_spec(data)
