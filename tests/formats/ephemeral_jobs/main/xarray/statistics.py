"""Namespace ``main.xarray.statistics``: a statistic of a dask-backed array, computed."""

from __future__ import annotations

from typing import Any

STATISTICS = ("mean", "max", "min")


def get_statistic(data: dict[str, Any], *, statistic: str) -> dict[str, Any]:
    """``statistic`` of ``data["dataset"]`` over every dimension, as a float."""
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}: one of {', '.join(STATISTICS)}")
    value = getattr(data["dataset"], statistic)().compute()
    return {"season": data["season"], "statistic": statistic, "value": float(value)}


get_statistic.consumes = "map"  # type: ignore[attr-defined]
get_statistic.produces = ("future", "float")  # type: ignore[attr-defined]
