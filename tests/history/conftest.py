"""Every history test records in a database of its own."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``NBFLOW_HOME`` for the test: its run database is ``home / "runs.db"``."""
    monkeypatch.setenv("NBFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NBFLOW_HISTORY", raising=False)
    return tmp_path / "home"
