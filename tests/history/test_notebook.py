"""History of notebook runs: task cells in IPython's in-process shell, run twice, diffed."""

from __future__ import annotations

from nbflow.history import diff, runs
from tests.notebook.conftest import ip  # noqa: F401  (the shell fixture)


def test_notebook_runs_are_recorded_and_a_changed_global_is_named(ip) -> None:  # noqa: F811
    ip("FACTOR = 2\ndef double(x):\n    return x * FACTOR\nn = 4")
    ip("%%nbflow task load\nload = list(range(n))")
    ip("%%nbflow task clean\n[double(v) for v in load]")
    ip("%nbflow run")
    ip("FACTOR = 3")
    ip("%nbflow run")
    assert ip.ns["clean"] == [0, 3, 6, 9]
    history = runs(ip.flow)
    assert list(history["n"]) == [4, 4]
    assert list(history["status"]) == ["succeeded", "succeeded"]
    first, second = history["run_id"]
    result = diff(first, second)
    assert not result.params
    assert list(result.reran) == ["clean"]
    (why,) = result.reran["clean"]
    assert "FACTOR" in why
    assert set(result.results) == {"clean"}
    assert result.states == {"load": ("succeeded", "cached")}
