"""Namespace ``main.xarray``: write a synthetic daily climate NetCDF file, open it with dask."""

from __future__ import annotations

from typing import Any


def write_netcdf(data: dict[str, Any], *, years: int, variable: str) -> dict[str, Any]:
    """Write ``years`` of a daily synthetic variable on a small grid to ``data["path"]``."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    time = pd.date_range("2000-01-01", periods=365 * years, freq="D")
    lat = np.linspace(-60.0, 60.0, 5)
    lon = np.linspace(0.0, 300.0, 6)
    day = np.asarray(time.dayofyear, dtype=float)[:, None, None]
    values = (10.0 + 12.0 * np.sin(2 * np.pi * (day - 100.0) / 365.0)
              - 0.2 * np.abs(lat)[None, :, None] + 0.01 * lon[None, None, :])
    ds = xr.Dataset({variable: (("time", "lat", "lon"), values)},
                    coords={"time": time, "lat": lat, "lon": lon})
    ds.to_netcdf(data["path"], engine="h5netcdf")
    return data


def load_dataset(data: dict[str, Any], *, variable: str, chunk_size: int) -> dict[str, Any]:
    """Open ``data["path"]`` lazily (dask chunks along time), keep ``data["season"]``'s days."""
    import xarray as xr

    ds = xr.open_dataset(data["path"], engine="h5netcdf", chunks={"time": chunk_size})
    array = ds[variable]
    return {**data, "dataset": array.where(array["time.season"] == data["season"], drop=True)}
