"""examples/climate.yaml end to end, with the nbflow-xarray extension's registered tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

import nbflow as nf

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "climate.yaml"


@pytest.mark.parametrize("executor", ["threads", "inline"])
def test_climate_spec_runs(tmp_path, executor):
    flow = nf.Flow.from_spec(EXAMPLE)
    run = flow.run(params={"path": str(tmp_path / "c.nc"), "years": 2}, executor=executor)
    assert run.states == dict.fromkeys(["data", "ds", "names", "seasonal", "table"], "succeeded")
    assert run.task("seasonal").branches == 2  # one branch per variable
    table = run.results["table"]
    assert list(table.index) == ["precipitation", "temperature"]
    assert table.loc["temperature", "JJA_mean"] > table.loc["temperature", "DJF_mean"]
    assert flow.tasks["table"].options.export


def test_climate_spec_round_trips():
    flow = nf.Flow.from_spec(EXAMPLE)
    assert nf.Flow.from_spec(flow.to_spec()).to_spec() == flow.to_spec()


def test_climate_spec_runs_on_dask(tmp_path):
    from nbflow.executors import dask_cluster

    dask_cluster.local_cluster(n_workers=1, threads_per_worker=2, processes=False)
    try:
        flow = nf.Flow.from_spec(EXAMPLE)
        run = flow.run(params={"path": str(tmp_path / "c.nc"), "years": 1}, executor="dask")
        assert set(run.states.values()) == {"succeeded"}
        assert run.task("seasonal").where.startswith("inproc://")
        assert list(run.results["table"].index) == ["precipitation", "temperature"]
    finally:
        dask_cluster.reset()
