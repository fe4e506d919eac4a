"""Command tasks in specs (``command:`` instead of ``use:``), through the API and the CLI."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

import nbflow as nf
from nbflow.spec import load_spec, schema

from .test_cli import nbflow

WORDS_COUNT = "sort | uniq -c | sort -rn > counts.txt; grep -c {word} counts.txt"
WORDS = """\
nbflow: 1
name: words
parameters:
  word: {type: string, default: b}
tasks:
  text:
    command: printf 'b\\na\\nb\\n'
  count:                       # a shell command: values are shell-quoted
    command: sort | uniq -c | sort -rn > counts.txt; grep -c {word} counts.txt
    stdin: text
    outputs: {counts: counts.txt}
    retries: 1
  listed:                      # an argument list: no shell
    command: [cat, "{count.counts}"]
  greeting:
    command: echo "$GREETING" {word}
    env: {GREETING: "hello {word}"}
    export: true
  top:                         # a use: task in the same spec, after a command
    use: nbflow_testtasks.tasks:total
    args: {values: [3, 4]}
    after: [listed]
"""


def write(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_spec_with_command_tasks_runs(tmp_path):
    flow = nf.Flow.from_spec(write(tmp_path, WORDS))
    assert flow.dependencies()["listed"] == ["count"]
    assert flow.tasks["count"].command == \
        "sort | uniq -c | sort -rn > counts.txt; grep -c {word} counts.txt"
    assert flow.tasks["count"].options.retries == 1
    assert flow.tasks["count"].source == f"{tmp_path / 'flow.yaml'}:8"
    run = flow.run()
    assert run.results["count"].stdout == "1\n"  # one line of counts.txt holds "b"
    assert run.results["listed"].stdout.split() == ["2", "b", "1", "a"]
    assert run.results["greeting"].stdout == "hello b b\n"
    assert run.results["top"] == 7
    run = flow.run(params={"word": "a"})
    assert (run.results["count"].stdout, run.results["greeting"].stdout) == ("1\n", "hello a a\n")


def test_nbflow_run_runs_a_spec_with_commands(tmp_path):
    spec = write(tmp_path, WORDS)
    out = tmp_path / "summary.json"
    result = nbflow("run", spec, "-p", "word", "a", "-o", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "flow 'words': succeeded" in result.stdout
    summary = json.loads(out.read_text())
    assert {r["task"]: r["state"] for r in summary["tasks"]} == dict.fromkeys(
        ["text", "count", "listed", "greeting", "top"], "succeeded")
    assert "hello a a" in result.stdout  # the export of greeting


def test_nbflow_validate_accepts_a_spec_with_commands(tmp_path):
    result = nbflow("validate", write(tmp_path, WORDS))
    assert result.returncode == 0, result.stderr
    assert "valid workflow 'words': 5 tasks, 1 parameters" in result.stdout


def test_a_failing_command_fails_the_run_with_its_stderr(tmp_path):
    spec = write(tmp_path, """\
        name: failing
        tasks:
          boom:
            command: echo bad input >&2; exit 4
        """)
    result = nbflow("run", spec)
    assert result.returncode == 1
    assert "CommandFailed: Command task 'boom' exited with code 4" in result.stderr
    assert "bad input" in result.stderr


def test_a_json_spec_with_an_argument_list_and_bytes(tmp_path):
    spec = tmp_path / "flow.json"
    spec.write_text(json.dumps({"name": "j", "tasks": {
        "raw": {"command": ["printf", "\\377"], "text": False},
        "size": {"command": "wc -c", "stdin": "raw"},
    }}))
    run = nf.Flow.from_spec(spec).run()
    assert run.results["raw"].stdout == b"\xff"
    assert run.results["size"].stdout.strip() == "1"


def test_command_tasks_follow_the_schema():
    validator = jsonschema.Draft202012Validator(schema())
    good = {"name": "x", "tasks": {"a": {"command": ["ls", "{d}"], "outputs": {"o": "o.txt"},
                                         "stdin": "d", "env": {"A": "1"}, "text": True,
                                         "image": "alpine:3", "retries": 1},
                                   "d": {"use": "m:f"}}}
    assert list(validator.iter_errors(good)) == []
    for bad in ({"use": "m:f", "command": "ls"}, {"retries": 1}, {"command": "ls", "args": {}},
                {"use": "m:f", "env": {"A": "b"}}, {"command": []}, {"command": "ls", "env": {"A": 1}}):
        assert list(validator.iter_errors({"name": "x", "tasks": {"a": bad}})), bad


def test_command_tasks_round_trip_through_a_written_spec(tmp_path):
    flow = nf.Flow.from_spec(write(tmp_path, WORDS))
    flow.command("shout", "echo ${{X}} {word} | tr a-z A-Z", shell="bash", text=False,
                 env={"X": "{word}"}, image="localhost/tools:1")
    data = flow.to_spec()
    assert data["tasks"]["count"] == {"command": WORDS_COUNT, "stdin": "text",
                                      "outputs": {"counts": "counts.txt"}, "retries": 1}
    assert data["tasks"]["listed"] == {"command": ["cat", "{count.counts}"]}
    assert data["tasks"]["shout"] == {"command": "echo ${{X}} {word} | tr a-z A-Z",
                                      "env": {"X": "{word}"}, "text": False, "shell": "bash",
                                      "image": "localhost/tools:1"}
    again = nf.Flow.from_spec(write(tmp_path, yaml.safe_dump(data), name="again.yaml"))
    assert {n: t.code_key for n, t in again.tasks.items()} == \
        {n: t.code_key for n, t in flow.tasks.items()}


BAD = [
    ("name: x\ntasks:\n  a:\n    use: testtasks.numbers\n    command: echo\n",
     "a task has either use: (a function to call) or command: (a command to run), not both",
     "tasks.a.command", 5),
    ("name: x\ntasks:\n  a:\n    retries: 1\n",
     "a task needs use: (a registered task or an importable 'module:function') or command: "
     "(a shell command or an argument list)", "tasks.a", 3),
    ("name: x\ntasks:\n  a:\n    command: echo\n    args: {x: 1}\n",
     "args: belongs to use: tasks; a command task's inputs are the {placeholders} of its "
     "command and env values", "tasks.a.args", 5),
    ("name: x\ntasks:\n  a:\n    command: echo\n    run_if: testtasks.is_big\n",
     "run_if is not available on command tasks yet", "tasks.a.run_if", 5),
    ("name: x\ntasks:\n  a:\n    use: testtasks.numbers\n    stdin: b\n",
     "stdin: belongs to command tasks (command:)", "tasks.a.stdin", 5),
    ("name: x\ntasks:\n  word:\n    command: echo\n  a:\n    command: echo {wrod}\n",
     "{wrod} is neither a task nor a parameter of this spec. Did you mean 'word'?",
     "tasks.a.command", 6),
    ("name: x\ntasks:\n  a:\n    command: [echo, ok, '{nn}']\n",
     "{nn} is neither a task nor a parameter", "tasks.a.command.2", 4),
    ("name: x\ntasks:\n  a:\n    command: echo\n    env: {A: '{nope}'}\n",
     "{nope} is neither a task nor a parameter", "tasks.a.env.A", 5),
    ("name: x\ntasks:\n  a:\n    command: cat\n    stdin: txt\n  text:\n    command: echo\n",
     "'txt' is neither a task nor a parameter of this spec. Did you mean 'text'?",
     "tasks.a.stdin", 5),
    ("name: x\ntasks:\n  a:\n    command: cat {b.tiff}\n  b:\n    command: touch t\n"
     "    outputs: {tif: t}\n",
     "{b.tiff}: command 'b' declares no output 'tiff'. Did you mean 'tif'? Its outputs: tif.",
     "tasks.a.command", 4),
    ("name: x\ntasks:\n  a:\n    command: cat {b.out}\n  b:\n    use: testtasks.numbers\n",
     "{b.out}: 'b' is not a command task, so it has no output files", "tasks.a.command", 4),
    ("name: x\nparameters:\n  p: {default: 1}\ntasks:\n  a:\n    command: cat {p.out}\n",
     "{p.out}: 'p' is a parameter, not a command task", "tasks.a.command", 6),
    ("name: x\ntasks:\n  a:\n    command: echo {0}\n",
     "has placeholder {0} in 'echo {0}'", "tasks.a.command", 4),
    ("name: x\ntasks:\n  a:\n    command: echo {\n",
     "malformed placeholder", "tasks.a.command", 4),
    ("name: x\ntasks:\n  a:\n    command: []\n", "[] should be non-empty", "tasks.a.command", 4),
    ("name: x\ntasks:\n  a:\n    command: echo\n    env: {N: 3}\n",
     "3 is not of type 'string'", "tasks.a.env.N", 5),
    ("name: x\ntasks:\n  a:\n    command: echo\n    outputs: {1x: y}\n",
     "'1x' does not match", "tasks.a.outputs", 5),
    ("name: x\ntasks:\n  a:\n    command: echo\n    outptus: {x: y}\n",
     "'outptus' is not a task key. Did you mean 'outputs'?", "tasks.a.outptus", 5),
    ("name: x\ntasks:\n  a:\n    command: echo\n    text: yes please\n",
     "'yes please' is not of type 'boolean'", "tasks.a.text", 5),
    ("name: x\ntasks:\n  a:\n    command: echo\n    map: b\n  b:\n    use: testtasks.numbers\n",
     "map='b' must name an upstream task the command uses as a placeholder {b}",
     "tasks.a.map", 5),
    ("name: x\ntasks:\n  a:\n    command: echo\n    executor: thread\n",
     "Did you mean 'threads'?", "tasks.a.executor", 5),
    ("name: x\ntasks:\n  a:\n    command: echo\n    after: [c]\n",
     "after names 'c', which is not a task", "tasks.a.after", 5),
    ("name: x\ntasks:\n  a:\n    command: echo\n    timeout: .nan\n",
     "option 'timeout' must be a finite number", "tasks.a.timeout", 5),
]


@pytest.mark.parametrize("text, message, path, line", BAD, ids=[b[2] for b in BAD])
def test_bad_command_tasks_name_the_file_task_and_key(tmp_path, text, message, path, line):
    file = write(tmp_path, text)
    with pytest.raises(nf.SpecError) as info:
        nf.Flow.from_spec(file)
    err = info.value
    assert message in str(err)
    assert err.file == str(file)
    assert ".".join(map(str, err.path)).startswith(path)
    assert err.line == line
    assert f"{file}:{line} at {path}" in str(err)


def test_a_mapped_command_over_an_upstream(tmp_path):
    flow = nf.Flow.from_spec(write(tmp_path, """\
        name: m
        parameters:
          n: {type: integer, default: 3}
        tasks:
          items:
            use: testtasks.numbers
            args: {n: {$param: n}}
          each:
            command: [echo, "{items}"]
            map: items
        """))
    run = flow.run()
    assert [r.stdout for r in run.results["each"]] == ["0\n", "1\n", "2\n"]
    assert load_spec(tmp_path / "flow.yaml").uses == ["testtasks.numbers"]
