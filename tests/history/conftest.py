"""Every history test records in a database of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

import nbflow as nf


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``NBFLOW_HOME`` for the test: its run database is ``home / "runs.db"``."""
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NBFLOW_HISTORY", raising=False)
    return tmp_path / "home"


def sales_flow(name: str = "sales") -> nf.Flow:
    """Three tasks: load (a parameter days), prices, and a report of both."""
    flow = nf.Flow(name)

    @flow.task
    def load(days: int = 30) -> list[int]:
        return list(range(days))

    @flow.task
    def prices() -> dict[str, float]:
        return {"a": 1.5}

    @flow.task
    def report(load: list[int], prices: dict[str, float]) -> str:
        return f"{len(load)} days at {prices['a']}"

    return flow
