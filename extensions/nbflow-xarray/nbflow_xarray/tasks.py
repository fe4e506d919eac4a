"""The tasks, registered under the ``xarray`` namespace. Heavy imports stay inside them."""

from __future__ import annotations

from typing import Any

__all__ = [
    "anomalies",
    "climatology",
    "monthly_mean",
    "open_dataset",
    "plot_seasonal",
    "report",
    "seasonal_stats",
    "synthetic_dataset",
    "variables",
]

SEASONS = ("DJF", "MAM", "JJA", "SON")


def synthetic_dataset(path: str, years: int = 3, seed: int = 0) -> str:
    """Write a synthetic daily data set (temperature, precipitation) to NetCDF; return the path."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    if years < 1:
        raise ValueError(f"years must be at least 1, got {years}")
    rng = np.random.default_rng(seed)
    time = pd.date_range("2000-01-01", periods=365 * years, freq="D")
    lat = np.array([-30.0, 0.0, 30.0, 60.0])
    lon = np.array([0.0, 90.0, 180.0])
    day = time.day_of_year.to_numpy()[:, None, None]
    cycle = np.cos(2 * np.pi * (day - 200) / 365.25)
    shape = (len(time), len(lat), len(lon))
    temperature = (15 - 0.3 * np.abs(lat)[None, :, None] + 8 * cycle
                   + rng.normal(0, 1.5, shape))
    precipitation = np.clip(rng.gamma(0.7, 3.0, shape) * (1 + 0.5 * cycle), 0, None)
    ds = xr.Dataset(
        {
            "temperature": (("time", "lat", "lon"), temperature.astype("float32"),
                            {"units": "degC"}),
            "precipitation": (("time", "lat", "lon"), precipitation.astype("float32"),
                              {"units": "mm/day"}),
        },
        coords={"time": time, "lat": lat, "lon": lon},
        attrs={"title": "nbflow-xarray synthetic data", "seed": seed},
    )
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def open_dataset(path: str, chunks: dict[str, int] | None = None) -> Any:
    """Open a NetCDF file lazily with dask chunks (default: 365 days per chunk)."""
    import xarray as xr

    return xr.open_dataset(path, engine="h5netcdf", chunks=chunks or {"time": 365})


def variables(ds: Any) -> list[str]:
    """The names of the data variables, sorted (to map over)."""
    return sorted(str(name) for name in ds.data_vars)


def seasonal_stats(ds: Any, variable: str) -> dict[str, Any]:
    """Mean, min and max of one variable per season, averaged over space."""
    if variable not in ds.data_vars:
        raise KeyError(f"{variable!r} is not a variable of the data set; it has "
                       f"{sorted(map(str, ds.data_vars))}")
    series = ds[variable].mean(("lat", "lon"))
    grouped = series.groupby("time.season")
    stats = {"mean": grouped.mean(), "min": grouped.min(), "max": grouped.max()}
    out: dict[str, Any] = {"variable": variable, "units": ds[variable].attrs.get("units", "")}
    for name, values in stats.items():
        computed = values.compute()
        for season in SEASONS:
            out[f"{season}_{name}"] = round(float(computed.sel(season=season)), 3)
    return out


def monthly_mean(ds: Any) -> Any:
    """The mean of every variable per calendar month (12 steps)."""
    return ds.groupby("time.month").mean("time")


def climatology(ds: Any) -> Any:
    """The mean annual cycle: the mean of every variable per day of year."""
    return ds.groupby("time.dayofyear").mean("time")


def anomalies(ds: Any, climatology: Any) -> Any:
    """Departures of each day from the climatology of its day of year."""
    return ds.groupby("time.dayofyear") - climatology


def report(stats: list[dict[str, Any]]) -> Any:
    """One table (a pandas DataFrame, one row per variable) from ``seasonal_stats`` results."""
    import pandas as pd

    rows = [s for s in stats if isinstance(s, dict)]
    if not rows:
        raise ValueError("no statistics to report (every seasonal_stats branch failed?)")
    return pd.DataFrame(rows).set_index("variable").sort_index()


def plot_seasonal(table: Any, stat: str = "mean") -> str:
    """A bar chart (SVG text) of one statistic per season, one panel per variable."""
    import io

    from matplotlib.figure import Figure  # no pyplot: safe in worker threads

    columns = [f"{season}_{stat}" for season in SEASONS]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise KeyError(f"the table has no {missing[0]!r} column; stat must be mean, min or max")
    figure = Figure(figsize=(3.2 * len(table.index), 2.6), layout="constrained")
    axes = figure.subplots(1, len(table.index), squeeze=False)[0]
    for ax, (variable, row) in zip(axes, table.iterrows()):
        ax.bar(SEASONS, [row[c] for c in columns], color="#0072B2")
        ax.set_title(f"{variable} ({row.get('units', '')})", fontsize=9)
        ax.tick_params(labelsize=8)
    figure.suptitle(f"seasonal {stat}", fontsize=10)
    out = io.StringIO()
    figure.savefig(out, format="svg")
    return out.getvalue()
