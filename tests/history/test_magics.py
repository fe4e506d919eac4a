"""``%nbflow runs`` and ``%nbflow diff A B`` in a real kernel, and their mistakes in IPython's
in-process shell."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebook.conftest import Kernel, errors, ip, k, text  # noqa: F401  (fixtures)


def test_runs_and_diff_in_a_kernel(k: Kernel, home: Path) -> None:  # noqa: F811
    k("n = 4")
    k("%%nbflow task load\nload = list(range(n))")
    k("%%nbflow task total\nsum(load)")
    k("%nbflow run")
    k("n = 5")
    k("%nbflow run")
    table = text(k("%nbflow runs"))
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["id", "flow", "status"]
    assert len(lines) == 3 and all(" notebook " in line for line in lines[1:])
    assert "n=5" in lines[1] and "n=4" in lines[2]  # newest first
    assert len(text(k("%nbflow runs -n 1")).splitlines()) == 2
    shown = k("%nbflow diff -2 -1")
    assert not errors(shown)
    out = text(shown)
    assert "parameters:\n  n: 4 -> 5" in out
    assert "re-ran:\n  load: params\n  total: upstreams.load" in out
    newest = lines[1].split()[0]
    same = text(k(f"%nbflow diff {newest[:6]} -1"))  # a prefix, and the latest run
    assert same.startswith(f"run {newest} (notebook, succeeded) -> run {newest} ")
    assert "parameters:" not in same
    unknown = k("%nbflow diff zzzz -1")
    assert "UsageError: %nbflow diff: run 'zzzz' is not recorded" in text(unknown, "stderr")


def test_runs_with_nothing_recorded_and_bad_arguments(ip, home: Path,  # noqa: F811
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    ip("%nbflow runs")
    assert capsys.readouterr().out.strip() == f"no runs recorded in {home / 'runs.db'}"
    assert not ip("%nbflow diff -2 -1", ok=False).success
    assert "%nbflow diff: no run history at" in capsys.readouterr().err
    assert not ip("%nbflow runs -n -1", ok=False).success
    assert "-n must be 0 (all) or more" in capsys.readouterr().err
    assert not ip("%nbflow diff -1", ok=False).success
    assert "%nbflow diff: the following arguments are required: B" in capsys.readouterr().err
