"""Specs are code: what they import is listed, and modules beside a spec never shadow the
standard library or stay on ``sys.path``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import nbflow as nf

ROOT = Path(__file__).resolve().parents[2]


def nbflow(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbflow", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_validate_lists_every_module_a_spec_imports(tmp_path):
    (tmp_path / "helpers.py").write_text("def shout(text):\n    return text.upper()\n")
    spec = tmp_path / "flow.yaml"
    spec.write_text(textwrap.dedent("""\
        name: imports
        tasks:
          cmd: {use: "os:system", args: {command: "echo the spec ran me"}}
          text: {use: "json:dumps", args: {obj: hello}}
          loud: {use: "helpers:shout", args: {text: {$task: text}}}
          n: {use: testtasks.numbers, args: {n: 2}}
          total: {use: "nbflow_testtasks.tasks:total", args: {values: {$task: n}}}
        """))
    proc = nbflow("validate", spec, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "the spec ran me" not in proc.stdout  # validating calls no task function
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{spec}: valid workflow 'imports': 5 tasks, 0 parameters"
    assert lines[1] == "it imports 4 module(s) and runs their functions when it runs:"
    modules = {line.split()[0]: line for line in lines[2:]}
    assert list(modules) == ["os", "json", "helpers", "nbflow_testtasks.tasks"]
    assert modules["os"].endswith("standard library: os:system")
    assert f"beside the spec ({tmp_path / 'helpers.py'}): helpers:shout" in modules["helpers"]
    assert "package nbflow-testtasks" in modules["nbflow_testtasks.tasks"]
    assert modules["nbflow_testtasks.tasks"].endswith(
        ": testtasks.numbers, nbflow_testtasks.tasks:total")


def test_the_docs_say_a_spec_is_code():
    text = (ROOT / "docs" / "specs.md").read_text()
    assert "never evaluated as code" not in text
    assert "**A spec is code.** It runs the functions it names, as a script does" in text


SHADOW = """\
import json, sys
import nbflow as nf

before = list(sys.path)
flow = nf.Flow.from_spec(sys.argv[1])
after_load = list(sys.path)
run = flow.run()
print(json.dumps({
    "mean": run.results["mean"], "avg": run.results["avg"],
    "path_kept": before == after_load == sys.path,
    "statistics": sys.modules["statistics"].__file__,
}))
"""


def test_a_module_beside_the_spec_does_not_shadow_the_standard_library(tmp_path):
    specdir = tmp_path / "spec"
    specdir.mkdir()
    (specdir / "statistics.py").write_text(
        "def fmean(data):\n    return 'the local statistics.py'\n")
    # a helper beside the spec that imports statistics itself, run in a worker process
    (specdir / "helpers.py").write_text(
        "import statistics\n\ndef avg(data):\n    return statistics.fmean(data)\n")
    (specdir / "flow.yaml").write_text(textwrap.dedent("""\
        name: shadow
        tasks:
          numbers: {use: "json:loads", args: {s: "[1, 2, 3, 6]"}}
          mean: {use: "statistics:fmean", args: {data: {$task: numbers}}}
          avg: {use: "helpers:avg", args: {data: {$task: numbers}}, executor: processes}
        """))
    # a fresh interpreter (statistics not yet imported), started outside the spec's folder
    proc = subprocess.run([sys.executable, "-c", SHADOW, str(specdir / "flow.yaml")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["mean"] == 3.0 and out["avg"] == 3.0
    assert out["path_kept"] is True
    assert not out["statistics"].startswith(str(specdir))


def test_a_function_missing_from_a_shadowed_stdlib_name_says_why(tmp_path):
    (tmp_path / "statistics.py").write_text("def my_mean(data):\n    return 0\n")
    spec = tmp_path / "flow.yaml"
    spec.write_text("name: x\ntasks:\n  m: {use: 'statistics:my_mean', args: {data: [1]}}\n")
    try:
        nf.Flow.from_spec(spec)
    except nf.SpecError as exc:
        assert "has no attribute 'my_mean'" in str(exc)
        assert f"{tmp_path / 'statistics.py'} is not used" in str(exc)
    else:
        raise AssertionError("the local statistics.py was used")


def test_two_specs_with_a_module_of_the_same_name_each_get_their_own(tmp_path):
    flows = []
    for word in ("one", "two"):
        d = tmp_path / word
        d.mkdir()
        (d / "steps.py").write_text(f"def word():\n    return {word!r}\n")
        (d / "flow.yaml").write_text("name: w\ntasks:\n  w: {use: 'steps:word'}\n")
        flows.append(nf.Flow.from_spec(d / "flow.yaml"))
    assert [f.run().results["w"] for f in flows] == ["one", "two"]
    assert str(tmp_path / "one") not in sys.path and str(tmp_path / "two") not in sys.path
