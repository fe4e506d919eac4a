"""A plain flow's task keys cover its helpers, local modules and package versions."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import types
from pathlib import Path

import nbflow as nf
from nbflow import code_sources
from nbflow.key_parts import FunctionKey

HELPERS = "SCALE = 2\n\n\ndef scale(x):\n    return x * SCALE\n"

FLOW = '''
import nbflow as nf
import {helpers}

LIMIT = 3
seen = []


def twice(x):
    return 2 * x


def make(k):
    def add(x):
        return x + k
    return add


plus = make(1)
flow = nf.Flow("plain", cache=nf.MemoryStore())


@flow.task
def a():
    seen.append(1)
    return twice(LIMIT)


@flow.task
def b():
    return {helpers}.scale(1)


@flow.task
def c():
    return plus(1)
'''


def states(flow: nf.Flow) -> dict[str, str]:
    run = flow.run()
    run.wait(10)
    return dict(run.states)


def save_and_reload(module: types.ModuleType, text: str, stamp: int) -> None:
    """Save a module's file (a new mtime) and reload it, as after an edit in an editor."""
    path = Path(module.__file__ or "")
    path.write_text(text)
    os.utime(path, (stamp, stamp))
    importlib.reload(module)


def test_a_local_module_edit_reruns_the_tasks_that_use_it(load):
    load("pf_helpers", HELPERS)
    mod = load("pf_flow", FLOW.format(helpers="pf_helpers"))
    assert set(states(mod.flow).values()) == {"succeeded"}
    assert set(states(mod.flow).values()) == {"cached"}  # `seen` grew: not an input
    save_and_reload(mod.pf_helpers, "# a comment\n" + HELPERS, 1_800_000_000)
    assert set(states(mod.flow).values()) == {"cached"}
    save_and_reload(mod.pf_helpers, HELPERS.replace("SCALE = 2", "SCALE = 3"), 1_800_000_100)
    assert states(mod.flow) == {"a": "cached", "b": "succeeded", "c": "cached"}
    # the parts the run history keeps: a local module is its file's digest
    assert list(mod.flow.tasks["b"].key_parts) == ["module pf_helpers"]


def test_helpers_closures_and_constants_are_parts(load):
    load("pf_helpers2", HELPERS)
    mod = load("pf_flow2", FLOW.format(helpers="pf_helpers2"))
    parts = FunctionKey(mod.a).components()
    assert parts["global 'LIMIT'"] == nf.cache.hash_value(3)
    assert "function 'twice'" in parts
    assert parts["global 'seen'"] == "type:builtins.list"  # data that is not a constant
    states(mod.flow)
    mod.LIMIT = 4
    mod.plus = mod.make(2)
    assert states(mod.flow) == {"a": "succeeded", "b": "cached", "c": "succeeded"}


def test_an_unchanged_module_file_is_parsed_once(load):
    mod = load("pf_memo", HELPERS)
    first = code_sources.module_source(mod)
    assert first is not None and code_sources.module_source(mod) is first
    again = load("pf_memo", HELPERS.replace("2", "5"))
    second = code_sources.module_source(again)
    assert second is not None and second.digest != first.digest
    assert code_sources.describe_change("module pf_memo", first.digest, second.digest) == \
        "global SCALE in pf_memo.py at line 1"
    details = code_sources.module_details(second.digest)
    assert details is not None and details["defs"]["function scale"][1] == 4


def test_package_versions_come_from_the_distribution():
    assert code_sources.distributions_of("_pytest.fixtures") == {
        "pytest": importlib.metadata.version("pytest")}
    assert code_sources.distributions_of("os.path") == {}


def test_a_module_edited_but_not_reloaded_keeps_the_key_of_the_code_that_runs(load, tmp_path):
    load("pf_stale", HELPERS)
    mod = load("pf_flow3", FLOW.format(helpers="pf_stale"))
    assert states(mod.flow)["b"] == "succeeded"
    path = tmp_path / "pf_stale.py"
    path.write_text(HELPERS.replace("SCALE = 2", "SCALE = 3"))
    os.utime(path, (1_800_000_000, 1_800_000_000))
    assert states(mod.flow)["b"] == "cached"  # the old code still runs: its result holds
    importlib.reload(mod.pf_stale)
    run = mod.flow.run()
    run.wait(10)
    assert run.states["b"] == "succeeded" and run.results["b"] == 3
