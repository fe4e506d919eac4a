"""An xarray workflow on the cluster: read a multi-year daily NetCDF, per-season and
per-variable statistics as mapped tasks, a report."""

from __future__ import annotations

import numpy as np
import pytest
from dask_clusters import local_fixture  # noqa: F401  (the `local` fixture)

import nbflow as nf

xr = pytest.importorskip("xarray")
pytest.importorskip("h5netcdf")


def make_dataset(path: str) -> xr.Dataset:
    """Three years of daily temperature and precipitation on a small grid."""
    time = np.arange("2001-01-01", "2004-01-01", dtype="datetime64[D]")
    rng = np.random.default_rng(0)
    day = np.arange(time.size)
    seasonal = 10 * np.sin(2 * np.pi * (day - 100) / 365.25)
    shape = (time.size, 4, 5)
    temp = 12 + seasonal[:, None, None] + rng.normal(0, 1, shape)
    precip = rng.gamma(2.0, 1.5, shape)
    ds = xr.Dataset(
        {"temperature": (("time", "lat", "lon"), temp.astype("float32")),
         "precipitation": (("time", "lat", "lon"), precip.astype("float32"))},
        coords={"time": time.astype("datetime64[ns]"), "lat": np.linspace(40, 50, 4),
                "lon": np.linspace(0, 10, 5)},
    )
    ds.to_netcdf(path, engine="h5netcdf")
    return ds


def test_seasonal_statistics_as_mapped_tasks_on_the_cluster(local, tmp_path):
    path = str(tmp_path / "daily.nc")
    reference = make_dataset(path)
    flow = nf.Flow("climate")

    @flow.task
    def groups(path: str = path):
        with xr.open_dataset(path, engine="h5netcdf", chunks={"time": 365}) as ds:
            return [(var, season) for var in sorted(ds.data_vars)
                    for season in ("DJF", "MAM", "JJA", "SON")]

    @flow.task(map="groups")
    def stats(groups, path: str = path):
        var, season = groups
        with xr.open_dataset(path, engine="h5netcdf", chunks={"time": 365}) as ds:
            da = ds[var].where(ds["time.season"] == season, drop=True)
            # the chunks are computed on the worker that runs this branch
            mean, std = float(da.mean().compute(scheduler="sync")), float(
                da.std().compute(scheduler="sync"))
        return {"variable": var, "season": season, "mean": mean, "std": std}

    @flow.task
    def report(stats):
        lines = [f"{s['variable']:<14}{s['season']:<5}{s['mean']:8.2f}{s['std']:8.2f}"
                 for s in stats]
        return "\n".join(lines)

    run = flow.run(executor="dask")
    assert run.task("stats").branches == 8
    assert all(w.startswith("inproc://") for w in [run.task("stats").where])
    text = run.results["report"]
    assert len(text.splitlines()) == 8
    by_key = {(s["variable"], s["season"]): s for s in run.results["stats"]}
    for var in ("temperature", "precipitation"):
        for season in ("DJF", "JJA"):
            expected = reference[var].where(reference["time.season"] == season, drop=True)
            assert by_key[(var, season)]["mean"] == pytest.approx(float(expected.mean()), rel=1e-4)
    assert by_key[("temperature", "JJA")]["mean"] > by_key[("temperature", "DJF")]["mean"] + 10
