"""History across batch runs: a notebook run twice by ``nbflow run``, then diffed."""

from __future__ import annotations

import json
from pathlib import Path

from nbflow.history import RunStore, diff, runs

from tests.batch.conftest import EXAMPLE, env, nbflow


def test_two_notebook_batch_runs_are_recorded_and_diffed(tmp_path: Path, home: Path) -> None:
    environment = {**env(), "NBFLOW_HOME": str(home)}
    for output, extra in (("a.ipynb", ()), ("b.ipynb", ("-p", "n", "100"))):
        proc = nbflow("run", EXAMPLE, "-o", output, "--cache-dir", "cache", *extra,
                      cwd=tmp_path, env=environment)
        assert proc.returncode == 0, proc.stderr
    first, second = RunStore().runs(limit=2)[::-1]
    assert first["flow"] == second["flow"] == "notebook"
    assert first["params"]["n"] == 200 and second["params"]["n"] == 100
    assert runs()["n"].tolist() == [200, 100]
    result = diff(first["run_id"], second["run_id"])
    assert result.params == {"n": (200, 100)}
    assert result.reran["samples"] == ["params"]
    assert result.reran["gate"] == ["upstreams.score"]
    assert "samples" in result.results
    assert "gate" not in result.results  # it re-ran and still says "passed"
    shown = nbflow("runs", "diff", "-2", "-1", "--json", cwd=tmp_path, env=environment)
    assert json.loads(shown.stdout)["params"] == {"n": [200, 100]}
