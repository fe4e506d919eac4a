"""CryoCloud workflows under nbflow: options, splitOn/merge, runIf, runOn, global and deferred nodes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow.errors import SpecError
from nbflow.formats.cryocloud import UnsupportedKeyWarning, cryocloud_spec, module_uses
from nbflow.formats.cryocloud_options import option_parser, parse_options, triggers
from nbflow.formats.runif import RunIfError, parse_runif
from nbflow.spec import Spec, flow_from_spec, parse_spec

WORKFLOWS = Path(__file__).parent / "cryocloud_workflows"
PIPELINE = WORKFLOWS / "pipeline.json"


def spec_of(path: Path) -> Spec:
    return parse_spec(path.read_text(), str(path))


def load(path: Path, **kwargs: Any) -> nf.Flow:
    return flow_from_spec(cryocloud_spec(spec_of(path), **kwargs))


def nbflow(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbflow", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=110)


def variant(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """The pipeline with ``change`` applied, written beside a copy of its modules."""
    folder = tmp_path / "wf"
    if not folder.exists():
        shutil.copytree(WORKFLOWS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    data = json.loads(PIPELINE.read_text())
    change(data)
    path = folder / "variant.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def nodes(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every node of a workflow by name, inline children included (to change them in place)."""
    found: dict[str, dict[str, Any]] = {}

    def visit(node: dict[str, Any]) -> None:
        found[node.get("name", node["module"])] = node
        for child in node.get("children", []):
            visit(child)

    for node in data["workflow"]["nodes"]:
        visit(node)
    return found


def line_of(path: Path, marker: str | tuple[str, str]) -> int:
    """The line of the first ``text`` in the file (of the first after ``anchor``: a pair)."""
    anchor, text = marker if isinstance(marker, tuple) else ("", marker)
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if anchor in line)
    for number, line in enumerate(lines[start:], start + 1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


# -- running -------------------------------------------------------------------------------------


EXPECTED_OK = {
    "Input": {"items": ["a", "b", "c"], "fail": ""},
    "Work": [{"result": "A"}, {"result": "B"}, {"result": "C"}],
    "Merge": [{"value": "A"}, {"value": "B"}, {"value": "C"}],
    "NoFailure": {"message": "nothing set to fail"},
    "Report": {"report": "ok:A,B,C"},
    "Done": {"message": "finished"},
    "Cleanup": {"message": "cleaned"},
}
EXPECTED_FAILING = {
    "Input": {"items": ["a", "b", "c"], "fail": "b"},
    "Merge": [{"value": "A"}, {"value": "-"}, {"value": "C"}],  # runOn always: the default
    "Partial": {"report": "partial:A,-,C"},
    "Done": {"message": "finished"},
    "Cleanup": {"message": "cleaned"},
    "Alarm": {"alerted": "ValueError: item b failed"},
}


def test_runs_without_a_failing_item() -> None:
    run = load(PIPELINE).run(raise_on_failure=False)
    assert run.status == "succeeded"
    assert {k: run.results[k] for k in EXPECTED_OK} == EXPECTED_OK
    skipped = {k for k, s in run.states.items() if s == "skipped"}
    assert skipped == {"ItemFailed", "Partial", "Loud", "Alarm"}


def test_runs_with_a_failing_item() -> None:
    events: list[nf.TaskEvent] = []
    run = load(PIPELINE).run(params={"fail": "b"}, raise_on_failure=False,
                             observers=[lambda batch: events.extend(
                                 e for e in batch if isinstance(e, nf.TaskEvent))])
    assert run.status == "failed"
    assert {k: run.results[k] for k in EXPECTED_FAILING} == EXPECTED_FAILING
    assert run.states["Work"] == "failed"
    assert run.task("Work").counts == {"succeeded": 2, "failed": 1}
    # runOn error inside the split: only the failed item's branch ran
    assert run.task("ItemFailed").counts == {"skipped": 2, "succeeded": 1}
    assert {k for k, s in run.states.items() if s == "skipped"} == {
        "ItemFailed", "NoFailure", "Report", "Loud"}
    # deferred: Cleanup starts once every other node (but the global handler) has ended
    started = next(i for i, e in enumerate(events) if e.task == "Cleanup" and e.state == "running")
    ended = {e.task for e in events[:started] if e.branch is None and e.state in (
        "succeeded", "failed", "skipped")}
    assert ended >= set(run.states) - {"Cleanup", "Alarm"}


def test_a_bool_option_and_a_runif() -> None:
    run = load(PIPELINE).run(params={"loud": True})
    assert run.results["Loud"] == {"message": "ok:A,B,C"}
    run = load(PIPELINE).run(params={"items": ["x"]})
    assert run.results["Report"] == {"report": "ok:X"}
    assert run.states["Loud"] == "skipped"


def test_nbflow_run_with_and_without_a_failing_item(tmp_path: Path) -> None:
    out = tmp_path / "ok.json"
    result = nbflow("run", PIPELINE, "-o", out, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(out.read_text())
    assert summary["status"] == "succeeded"
    assert {k: summary["exports"][k] for k in EXPECTED_OK} == EXPECTED_OK
    assert "Work__items" not in summary["exports"]

    out = tmp_path / "failing.json"
    result = nbflow("run", PIPELINE, "-o", out, "-p", "fail", "b", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    summary = json.loads(out.read_text())
    assert summary["status"] == "failed"
    assert {k: summary["exports"][k] for k in EXPECTED_FAILING} == EXPECTED_FAILING
    assert "item b failed" in result.stdout + result.stderr


def test_nbflow_run_takes_the_workflow_options(tmp_path: Path) -> None:
    """CryoCloud's command line: ``--NAME VALUE``, a bool a flag, a list comma-separated."""
    out = tmp_path / "out.json"
    result = nbflow("run", PIPELINE, "--items", "x,y,z", "--fail", "y", "--loud", "-o", out,
                    cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    exports = json.loads(out.read_text())["exports"]
    assert exports["Input"] == {"items": ["x", "y", "z"], "fail": "y"}
    assert exports["Partial"] == {"report": "partial:X,-,Z"}
    result = nbflow("run", PIPELINE, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--items A,B,..." in result.stdout and "the items to process" in result.stdout


def test_the_spec_mapping_is_plain_data() -> None:
    """What ``convert --to spec`` writes: JSON that builds the same flow."""
    mapping = cryocloud_spec(spec_of(PIPELINE))
    again = json.loads(json.dumps(mapping))
    assert again == mapping
    assert flow_from_spec(again).run(params={"fail": "c"}, raise_on_failure=False).results[
        "Partial"] == {"report": "partial:A,B,-"}
    assert mapping["parameters"]["items"] == {
        "type": "list", "default": ["a", "b", "c"], "description": "the items to process"}
    assert mapping["parameters"]["loud"]["type"] == "boolean"
    # ccmodule defaults apply (cc_collect: priority 40), else CryoCloud's 50
    assert [mapping["tasks"][n]["priority"] for n in ("Merge", "Report", "Input")] == [40, 50, 0]
    assert all(t["export"] for n, t in mapping["tasks"].items() if not n.endswith("__items"))
    assert module_uses(mapping) == [  # for `nbflow validate`: the modules it imports
        "cc_work:process_task", "cc_note:process_task", "cc_collect:process_task",
        "cc_report:process_task", "cc_alert:process_task"]


def write(tmp_path: Path, workflow: dict[str, Any], name: str = "wf.json") -> Path:
    folder = tmp_path / "wf"
    if not folder.exists():
        shutil.copytree(WORKFLOWS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    path = folder / name
    path.write_text(json.dumps({"workflow": workflow}, indent=2))
    return path


def test_loop_runs_sequentially_and_merges_by_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "loop", "nodes": [
        {"module": "cmdline", "name": "Input", "downstreamOf": ["entry"], "args": {
            "items": {"option": "items"}}},
        {"module": "cc_work", "name": "Each", "downstreamOf": ["Input"], "loop": "item",
         "args": {"item": {"output": "Input.items"}}},
        {"module": "cc_report", "name": "Report", "downstreamOf": ["Each"],
         "args": {"values": {"output": "Each.result"}, "label": "all"}}],
        "options": {"items": {"type": "list", "default": "p,q,r"}}})
    run = load(path).run()
    assert run.results["Each"] == {"result": ["P", "Q", "R"]}
    assert run.results["Report"] == {"report": "all:P,Q,R"}


@pytest.mark.parametrize(("resolve_on_any", "state"), [(False, "skipped"), (True, "succeeded")])
def test_resolve_on_any(tmp_path: Path, resolve_on_any: bool, state: str) -> None:
    path = write(tmp_path, {"name": "any", "nodes": [
        {"module": "cc_note", "name": "A", "downstreamOf": ["entry"], "args": {"message": "a"}},
        {"module": "cc_note", "name": "B", "downstreamOf": ["entry"], "runOn": "never"},
        {"module": "cc_note", "name": "Join", "downstreamOf": ["B", "A"],
         "resolveOnAny": resolve_on_any, "args": {"message": {"output": "parent.message"}}}]})
    run = load(path).run()
    assert run.states["B"] == "skipped"
    assert run.states["Join"] == state
    if resolve_on_any:
        assert run.results["Join"] == {"message": "a"}


def test_timeout_sets_the_cancel_event_and_runs_on_timeout(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "slow", "nodes": [
        {"module": "cc_wait", "name": "Wait", "downstreamOf": ["entry"], "args": {"seconds": "60"},
         "children": [
             {"module": "cc_note", "name": "TimedOut", "runOn": "timeout",
              "args": {"message": {"output": "parent.error"}}},
             {"module": "cc_note", "name": "Failed", "runOn": "error", "args": {"message": "x"}}]}]})
    run = load(path).run(config={"Wait.timeout": 0.2}, raise_on_failure=False)
    assert run.states == {"Wait": "failed", "TimedOut": "succeeded", "Failed": "skipped"}
    assert "TaskTimeoutError" in run.results["TimedOut"]["message"]


def test_dirwatcher_input_is_a_parameter_and_a_trigger(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "sub" / "scene.dat").write_bytes(b"12345")
    path = write(tmp_path, {"name": "watch", "options": {"inbox": {"default": str(inbox)}},
                            "nodes": [
        {"module": "dirwatcher", "name": "Input", "downstreamOf": ["entry"],
         "args": {"src": {"option": "inbox"}, "recursive": True}},
        {"module": "cc_note", "name": "Seen", "downstreamOf": ["Input"],
         "args": {"message": {"output": "Input.relpath"}}}]})
    assert triggers(spec_of(path)) == [{"node": "Input", "kind": "folder", "path": str(inbox),
                                        "recursive": True, "parameter": "fullpath"}]
    run = load(path).run(params={"fullpath": str(inbox / "sub" / "scene.dat")})
    assert run.results["Input"]["datasize"] == 5
    assert run.results["Seen"] == {"message": "sub/scene.dat"}

    data = json.loads(path.read_text())
    data["workflow"]["nodes"].append({"module": "netwatcher", "name": "Net",
                                      "downstreamOf": ["entry"], "args": {"port": "8080"}})
    path.write_text(json.dumps(data, indent=2))
    with pytest.raises(SpecError, match="a second watching input node") as info:
        cryocloud_spec(spec_of(path))
    assert info.value.line == line_of(path, '"netwatcher"')


def test_names_are_names_and_a_split_that_merges_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "names", "options": {
        "class": {"type": "list", "default": "x,y"}}, "nodes": [
        {"module": "cmdline", "name": "in", "downstreamOf": ["entry"],
         "args": {"items": {"option": "class"}}},
        {"module": "cc_work", "name": "combined-output", "downstreamOf": ["in"],
         "splitOn": "item", "merge": True, "args": {"item": {"output": "in.items"}}},
        {"module": "cc_report", "name": "R", "downstreamOf": ["combined-output"],
         "args": {"values": {"output": "combined-output.result"}, "label": "L"}}]})
    run = load(path).run(params={"class": ["p", "q", "r"]})
    assert run.results["combined-output"] == [{"result": "P"}, {"result": "Q"}, {"result": "R"}]
    assert run.results["R"] == {"report": "L:P,Q,R"}


def test_a_split_that_is_not_a_list_fails_into_the_global_handler(tmp_path: Path) -> None:
    path = write(tmp_path, {"name": "bad", "nodes": [
        {"module": "cmdline", "name": "I", "downstreamOf": ["entry"]},
        {"module": "cc_work", "name": "W", "downstreamOf": ["I"], "splitOn": "item",
         "args": {"item": "notalist"}},
        {"module": "cc_alert", "name": "G", "global": True,
         "args": {"error": {"output": "parent.error"}}}]})
    run = load(path).run(raise_on_failure=False)
    assert run.states == {"I": "succeeded", "W__items": "failed", "W": "skipped",
                          "G": "succeeded"}
    assert run.results["G"] == {
        "alerted": "TypeError: node 'W': splitOn 'item' must be a list, got str 'notalist'"}


def test_a_run_if_predicate_with_kwargs_gets_every_argument(tmp_path: Path) -> None:
    """The spec feature the CryoCloud gate stands on (``nbflow.spec_calls.SpecCondition``)."""
    (tmp_path / "gates.py").write_text(
        "seen = []\n"
        "def gate(**kwargs):\n"
        "    seen.append(sorted(kwargs))\n"
        "    return kwargs['limit'] > kwargs['n']\n"
        "def double(n, limit):\n"
        "    return 2 * n\n")
    (tmp_path / "spec.yaml").write_text(
        "name: gate\nparameters: {n: {type: integer, default: 1}}\n"
        "tasks:\n  d: {use: 'gates:double', args: {n: {$param: n}, limit: 5}, "
        "run_if: 'gates:gate'}\n")
    flow = flow_from_spec(str(tmp_path / "spec.yaml"))
    assert flow.run().results["d"] == 2
    assert flow.run(params={"n": 7}).states["d"] == "skipped"
    assert sys.modules["gates"].seen[0] == ["limit", "n"]  # imported from beside the spec


# -- options on the command line -----------------------------------------------------------------


def test_option_parser() -> None:
    spec = spec_of(PIPELINE)
    assert parse_options(spec, ["--items", "x,y", "--loud", "--fail", "x"]) == {
        "items": ["x", "y"], "loud": True, "fail": "x"}
    assert parse_options(spec, []) == {}
    text = option_parser(spec, add_help=True, prog="nbflow run pipeline.json").format_help()
    assert "--items A,B,..." in text and "the items to process" in text
    assert "--loud" in text and "repeat the report" in text


# -- runIf -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "values", "expected"), [
    ("output:A.x != 'skip'", {"A.x": "go"}, True),
    ("output:A.x == 'go' and not option:dry == 'True'", {"A.x": "go", "dry": True}, False),
    ("output:A.kind in ('ice', 'water') or option:force == 'True'",
     {"A.kind": "rock", "force": False}, False),
    ("(output:A.n >= '2')", {"A.n": 3}, True),  # compared as strings, as CryoCloud does
])
def test_runif_evaluates_on_strings(text: str, values: dict[str, Any], expected: bool) -> None:
    assert parse_runif(text).evaluate(lambda ref: values[ref.name]) is expected


@pytest.mark.parametrize(("text", "problem"), [
    ("output:A.n > 3", "compared as strings"),
    ("__import__('os').system('true') or output:A.x == 'y'", "Call is not allowed"),
    ("output:A.x == y", "'y' is not a value"),
    ("output:A == 'x'", "is 'output:Node.key'"),
    ("option:x ==", "not a valid expression"),
    ("'a' == 'a'", "reads at least one value"),
])
def test_runif_refuses(text: str, problem: str) -> None:
    with pytest.raises(RunIfError, match=problem):
        parse_runif(text)


# -- bad input -----------------------------------------------------------------------------------


def set_key(node: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        nodes(data)[node][key] = value
    return change


BAD: list[tuple[Callable[[dict[str, Any]], None], str | tuple[str, str], str]] = [
    (set_key("Report", "downstreamof", ["Merge"]), '"downstreamof"',
     "'downstreamof' is not a CryoCloud node key. Did you mean 'downstreamOf'?"),
    (set_key("Report", "downstreamOf", ["Mrge"]), '"Mrge"', "Did you mean 'Merge'?"),
    (set_key("Report", "args", {"values": {"output": "Merge.valu"}, "label": "x"}),
     '"Merge.valu"', "Did you mean 'value'?"),
    (set_key("Input", "args", {"items": {"option": "itms"}}), '"itms"',
     "'itms' is not an option of this workflow. Did you mean 'items'?"),
    (set_key("Loud", "runIf", "option:loud == True"), "option:loud == True",
     "compared as strings"),
    (set_key("Loud", "runIf", "output:Reprt.report == 'x'"), "output:Reprt",
     "'Reprt' is not a node of this workflow. Did you mean 'Report'?"),
    (set_key("Done", "runOn", "allways"), '"allways"', "Did you mean 'always'?"),
    (set_key("Done", "module", "cc_nothere"), '"cc_nothere"', "cannot import module 'cc_nothere'"),
    (set_key("Done", "args", {"mesage": "x"}), '"mesage"',
     "module 'cc_note' takes no input 'mesage'. Did you mean 'message'?"),
    (set_key("Input", "downstreamOf", ["Done"]), '"Done"', "in a loop: Input -> Done -> Merge"),
    (set_key("Merge", "splitOn", "value"), '"splitOn": "value"', "nested splits are not supported"),
    (set_key("Report", "merge", True), ('"cc_report"', '"merge"'), "not inside a split"),
    (set_key("Report", "downstreamOf", []), ('"cc_report"', '"downstreamOf"'), "has no parent"),
    (set_key("Work", "splitOn", "items"), '"splitOn"', "not one of the node's args"),
    (set_key("Report", "name", "Done"), ('"Loud"', '"name": "Done"'),
     "a second node named 'Done' (the first is at line 86)"),
    (set_key("Report", "depends", ["Satellite"]), '"depends"',
     "depends on Satellite, which no upstream node provides"),
    (lambda d: d["workflow"]["options"]["loud"].update(type="boolean"), '"boolean"',
     "option type 'boolean' is not one of bool, list, json"),
    (lambda d: d["workflow"].update(node=[]), '"node"', "Did you mean 'nodes'?"),
    (set_key("Input", "args", {"items": {"output": "Report.report"}}), '"Report.report"',
     "'Input' reads the output of 'Report', which runs after it"),
    (set_key("Merge", "args", {"value": {"output": "ItemFailed.message"}}),
     '"ItemFailed.message"', "'Merge' reads 'ItemFailed' inside the split of 'Work'"),
    (set_key("Alarm", "downstreamOf", ["Input"]), ('"Alarm"', '"downstreamOf"'), "a global node runs when any"),
]


@pytest.mark.parametrize(("change", "marker", "problem"), BAD)
def test_bad_input_names_file_key_and_line(tmp_path: Path, change: Callable[[dict[str, Any]], None],
                                           marker: str | tuple[str, str], problem: str) -> None:
    path = variant(tmp_path, change)
    with pytest.raises(SpecError) as info:
        cryocloud_spec(spec_of(path))
    assert problem in info.value.problem
    assert info.value.file == str(path)
    assert info.value.line == line_of(path, marker), str(info.value)


def test_not_a_workflow_file(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"workflow": {"name": "x", "nodes": []}}')
    with pytest.raises(SpecError, match="a workflow needs 'nodes'"):
        cryocloud_spec(spec_of(path))


def test_unsupported_keys_are_refused_by_name_then_allowed(tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        nodes(data)["Work"]["ccnode"] = {"stat": "parent.node"}
        nodes(data)["Report"]["gpu"] = True
        nodes(data)["Report"]["post"] = [{"output": "report", "target": "s3://bucket/x"}]

    path = variant(tmp_path, change)
    with pytest.raises(SpecError) as info:
        cryocloud_spec(spec_of(path))
    message = str(info.value)
    assert all(k in message for k in ("ccnode", "gpu", "post", "--allow-unsupported"))
    assert info.value.line == line_of(path, '"ccnode"')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flow = load(path, allow_unsupported=True)
    assert [w.category for w in caught] == [UnsupportedKeyWarning]
    assert "ccnode" in str(caught[0].message) and "gpu" in str(caught[0].message)
    assert flow.run().results["Report"] == {"report": "ok:A,B,C"}
