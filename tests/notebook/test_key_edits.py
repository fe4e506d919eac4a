"""The twelve kinds of edit of issue 19: which tasks re-run, and what ``%nbflow why`` names.

Each case declares the same notebook (a local module ``helpers.py``, a tiny package
``tinypkg`` installed in version 1.0, notebook helpers, globals and task cells), runs
it, makes one edit, and checks ``%nbflow why`` before the next run (its prediction),
the tasks the next run recomputes (``succeeded``; every other task is ``cached``),
and ``%nbflow why`` after it (the reason recorded).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from nbflow import code_sources

HELPERS = '''\
SCALE = 2


def clean_helper(rows):
    """Scale every row."""
    return [r * SCALE for r in rows]
'''

NOTEBOOK = '''\
import importlib
import helpers
import tinypkg
THRESHOLD = 10
days = 30
def inner(x):
    return x + 1
def helper(x):
    return inner(x) * 2
def make_adder(k):
    def add(x):
        return x + k
    return add
adder = make_adder(1)
def with_default(x, step=1):
    return x + step
def check(x):
    return x > THRESHOLD
'''

CELLS = {
    "source": "source = list(range(days))",
    "downstream": "downstream = len(source)",
    "t_helper": "t_helper = [helper(x) for x in range(3)]",
    "t_module": "t_module = helpers.clean_helper([1, 2])",
    "t_closure": "t_closure = adder(1)",
    "t_default": "t_default = with_default(1)",
    "t_package": "t_package = tinypkg.bump(1)",
    "t_global": "t_global = check(11)",
}


def write(path: Path, text: str, stamp: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp[0] += 10
    os.utime(path, (stamp[0], stamp[0]))  # a new mtime, as an editor's save gives


def install(site: Path, version: str, stamp: list[int]) -> None:
    """``tinypkg`` VERSION in a site-packages directory of its own (same code in each)."""
    write(site / "tinypkg" / "__init__.py", "def bump(x):\n    return x + 1\n", stamp)
    info = site / f"tinypkg-{version}.dist-info"
    write(info / "METADATA", f"Metadata-Version: 2.1\nName: tinypkg\nVersion: {version}\n", stamp)
    write(info / "top_level.txt", "tinypkg\n", stamp)


def module_line(name: str) -> int:
    return next(i for i, line in enumerate(HELPERS.splitlines(), 1) if name in line)


#: edit name -> (what the edit does, the tasks that re-run, what `why TASK` names)
EDITS = {
    "a helper's body": ("helper", {"t_helper"}, "t_helper", "function 'helper' changed"),
    "a nested helper": ("inner", {"t_helper"}, "t_helper",
                        "function 'inner' (read by 'helper') changed"),
    "a function in a local module": (
        "module function", {"t_module"}, "t_module",
        f"function clean_helper in helpers.py at line {module_line('def clean_helper')}"),
    "a constant in a local module": ("module constant", {"t_module"}, "t_module",
                                     "global SCALE in helpers.py at line 1"),
    "a closure value": ("closure", {"t_closure"}, "t_closure",
                        "closure value 'k' of 'adder' changed"),
    "a default argument": ("default", {"t_default"}, "t_default",
                           "default 'step' of 'with_default' changed"),
    "a package version": ("package", {"t_package"}, "t_package", "package tinypkg 1.0 -> 2.0"),
    "a parameter": ("parameter", {"source", "downstream"}, "source", "parameter 'days' 30 -> 60"),
    "a global": ("global", {"t_global"}, "t_global",
                 "global 'THRESHOLD' (read by 'check') changed"),
    "an upstream change": ("upstream", {"source", "downstream"}, "downstream",
                           "upstream 'source'"),
    "a comment only": ("comment", set(), "t_helper", None),
    "formatting only": ("formatting", set(), "t_module", None),
}


def edit(ip, kind: str, tmp_path: Path, stamp: list[int]) -> None:
    helpers = tmp_path / "local" / "helpers.py"
    if kind == "helper":
        ip("def helper(x):\n    return inner(x) * 3")
    elif kind == "inner":
        ip("def inner(x):\n    return x + 2")
    elif kind == "module function":
        write(helpers, HELPERS.replace("r * SCALE", "r * SCALE + 1"), stamp)
        ip("importlib.reload(helpers)")
    elif kind == "module constant":
        write(helpers, HELPERS.replace("SCALE = 2", "SCALE = 3"), stamp)
        ip("importlib.reload(helpers)")
    elif kind == "closure":
        ip("adder = make_adder(5)")
    elif kind == "default":
        ip("with_default.__defaults__ = (2,)")
    elif kind == "package":
        v1, v2 = (str(tmp_path / v / "site-packages") for v in ("v1", "v2"))
        ip(f"sys.path[sys.path.index({v1!r})] = {v2!r}\n"
           "del sys.modules['tinypkg']\nimport tinypkg")
    elif kind == "parameter":
        ip("days = 60")
    elif kind == "global":
        ip("THRESHOLD = 20")
    elif kind == "upstream":
        ip("%%nbflow task source\nsource = list(range(days + 1))")
    elif kind == "comment":
        ip("def helper(x):\n    # twice the next one\n    return inner(x) * 2  # here")
        write(helpers, "# helpers for the notebook\n" + HELPERS.replace(
            "    return", "    # scaled\n    return"), stamp)
        ip("importlib.reload(helpers)")
    elif kind == "formatting":
        write(helpers, HELPERS.replace("[r * SCALE for r in rows]",
                                       "[\n        r*SCALE\n        for r in rows\n    ]"), stamp)
        ip("importlib.reload(helpers)")
        ip("%%nbflow task source\nsource = list( range( days ) )\n")
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("name", list(EDITS))
def test_an_edit_reruns_exactly_what_it_affects(ip, capsys, tmp_path, monkeypatch, name):
    kind, reran, task, named = EDITS[name]
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "helpers", raising=False)
    monkeypatch.delitem(sys.modules, "tinypkg", raising=False)
    stamp = [1_700_000_000]
    write(tmp_path / "local" / "helpers.py", HELPERS, stamp)
    install(tmp_path / "v1" / "site-packages", "1.0", stamp)
    install(tmp_path / "v2" / "site-packages", "2.0", stamp)
    # directories named site-packages, so tinypkg counts as a package, not a local module
    sys.path[:0] = [str(tmp_path / "local"), str(tmp_path / "v1" / "site-packages")]
    ip("import sys")
    ip(NOTEBOOK)
    for cell, body in CELLS.items():
        ip(f"%%nbflow task {cell}\n{body}")
    ip("%nbflow run")
    assert set(ip.flow.last_run.states.values()) == {"succeeded"}

    edit(ip, kind, tmp_path, stamp)
    if kind.startswith("module "):  # the cheap staleness check sees a reloaded module too
        assert ip.flow.stale("t_module") == "module helpers changed"
    elif kind in ("comment", "formatting"):
        assert ip.flow.stale("t_module") is None
    capsys.readouterr()
    ip(f"%nbflow why {task}")
    before = capsys.readouterr().out
    ip("%nbflow run")
    states = ip.flow.last_run.states
    assert {n for n, s in states.items() if s == "succeeded"} == reran, states
    assert {n for n, s in states.items() if s != "succeeded"} == set(CELLS) - reran
    assert set(states.values()) <= {"succeeded", "cached"}
    capsys.readouterr()
    ip(f"%nbflow why {task}")
    after = capsys.readouterr().out
    if named is None:
        assert f"Next run: {task} will be reused" in before, before
        assert "reused from the cache" in after, after
    else:
        assert f"Next run: {task} will re-run: " in before and named in before, before
        assert "recomputed in run" in after and named in after, after
    code_sources.reset()


def test_the_package_directories_are_not_local(tmp_path):
    """The fixture's premise: a module under a site-packages directory is a package's."""
    site = tmp_path / "site-packages"
    stamp = [1_700_000_000]
    install(site, "1.0", stamp)
    import types

    module = types.ModuleType("tinypkg")
    module.__file__ = str(site / "tinypkg" / "__init__.py")
    assert not code_sources.is_local_module(module)
    module.__file__ = str(tmp_path / "helpers.py")
    assert code_sources.is_local_module(module)
