from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from nbflow_xarray import tasks


@pytest.fixture(scope="module")
def nc(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "climate.nc"
    return tasks.synthetic_dataset(str(path), years=2, seed=1)


def test_the_entry_point_names_the_task_module():
    eps = importlib.metadata.entry_points(group="nbflow.tasks")
    assert any(ep.name == "xarray" and ep.value == "nbflow_xarray.tasks" for ep in eps)


def test_importing_the_task_module_stays_cheap():
    code = ("import sys, nbflow_xarray.tasks; "
            "print(sorted(m for m in ('xarray', 'dask', 'pandas', 'numpy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_open_is_lazy_and_chunked(nc):
    ds = tasks.open_dataset(nc)
    assert ds["temperature"].chunks is not None
    assert ds.sizes["time"] == 730
    assert tasks.variables(ds) == ["precipitation", "temperature"]


def test_seasonal_stats_have_a_warm_summer_in_the_north(nc):
    ds = tasks.open_dataset(nc)
    stats = tasks.seasonal_stats(ds, "temperature")
    assert stats["variable"] == "temperature" and stats["units"] == "degC"
    assert stats["JJA_mean"] > stats["DJF_mean"]
    assert stats["JJA_min"] <= stats["JJA_mean"] <= stats["JJA_max"]
    with pytest.raises(KeyError, match="not a variable"):
        tasks.seasonal_stats(ds, "wind")


def test_anomalies_average_to_zero_against_their_climatology(nc):
    ds = tasks.open_dataset(nc)
    clim = tasks.climatology(ds)
    anom = tasks.anomalies(ds, clim)
    assert abs(float(anom["temperature"].mean())) < 1e-3
    assert tasks.monthly_mean(ds).sizes["month"] == 12


def test_report_is_one_row_per_variable(nc):
    ds = tasks.open_dataset(nc)
    table = tasks.report([tasks.seasonal_stats(ds, v) for v in tasks.variables(ds)])
    assert list(table.index) == ["precipitation", "temperature"]
    assert "SON_max" in table.columns
    with pytest.raises(ValueError, match="no statistics"):
        tasks.report([])


def test_registered_through_nbflow():
    import nbflow as nf

    nf.registry.reset()
    assert "xarray.seasonal_stats" in nf.registry
    assert nf.registry.get("xarray.open_dataset").doc.startswith("Open a NetCDF file")


def test_plot_is_an_svg_with_a_panel_per_variable(nc):
    ds = tasks.open_dataset(nc)
    table = tasks.report([tasks.seasonal_stats(ds, v) for v in tasks.variables(ds)])
    svg = tasks.plot_seasonal(table)
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "temperature (degC)" in svg and "seasonal mean" in svg
    with pytest.raises(KeyError, match="stat must be mean, min or max"):
        tasks.plot_seasonal(table, stat="median")
