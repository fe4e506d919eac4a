"""Typed tasks in the style of ecoscope-workflows, for the ecoscope spec tests."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field


def get_observations(
    region: Annotated[str, Field(description="the region to fetch", pattern="^[A-Z]")],
    days: Annotated[int, Field(ge=1, le=365, description="days of history")] = 30,
) -> list[dict[str, object]]:
    """A day's observation per day: its region, day and count."""
    return [{"region": region, "day": d, "count": (d * 7) % 11} for d in range(days)]


def filter_observations(
    observations: list[dict[str, object]],
    min_count: Annotated[int, Field(ge=0, description="the least count kept")] = 5,
) -> list[dict[str, object]]:
    """The observations whose count is at least ``min_count``."""
    return [o for o in observations if int(o["count"]) >= min_count]  # type: ignore[call-overload]


def summarize(
    observations: list[dict[str, object]],
    title: Annotated[str, Field(description="the summary's title")] = "summary",
) -> dict[str, object]:
    """How many observations, and their total count."""
    return {"title": title, "n": len(observations),
            "total": sum(int(o["count"]) for o in observations)}  # type: ignore[call-overload]


def numbers(n: int = 2) -> list[int]:
    """Same function name as ``testtasks.numbers``: a spec naming it is ambiguous."""
    return list(range(n))
