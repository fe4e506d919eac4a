"""Lineage written out: beside a disk cache, in ``nbflow run -o out.json``, and in a
notebook job's result (read from the history its kernel recorded)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import nbflow as nf
from nbflow.batch.execute import run_notebook
from nbflow.batch.spec_job import run_spec
from nbflow.cache import DiskStore, remove_entries
from nbflow.history.store import writer

from .conftest import sales_flow
from .test_why import UTIL, _spec, _write_notebook


def test_a_run_with_a_disk_cache_writes_its_lineage_beside_it(tmp_path: Path) -> None:
    flow = sales_flow()
    flow.cache = DiskStore(tmp_path / "cache")
    run = flow.run(params={"days": 3})
    writer.flush()  # the recorder writes it, off the run's end
    path = tmp_path / "cache" / "lineage" / f"{run.id}.json"
    document = json.loads(path.read_text())
    assert document["run_id"] == run.id and document["flow"] == "sales"
    assert list(document["lineage"]) == ["load", "prices", "report"]
    assert document["lineage"]["report"] == json.loads(json.dumps(run.lineage("report")))
    remove_entries(tmp_path / "cache")  # nbflow cache clear: results go, lineage stays
    assert path.exists()


def test_a_failed_task_has_no_lineage_file_entry(tmp_path: Path) -> None:
    flow = nf.Flow("broken", cache=DiskStore(tmp_path / "cache"))

    @flow.task
    def ok() -> int:
        return 1

    @flow.task
    def bad(ok: int) -> int:
        raise ValueError("no")

    run = flow.run(raise_on_failure=False)
    writer.flush()
    document = json.loads((tmp_path / "cache" / "lineage" / f"{run.id}.json").read_text())
    assert list(document["lineage"]) == ["ok"]


def test_a_memory_cache_writes_no_lineage_file(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sales_flow().run()
    writer.flush()
    assert not list(tmp_path.rglob("lineage"))


def test_the_json_summary_of_a_spec_run_has_the_lineage_of_each_export(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        summary = run_spec(_spec(tmp_path), [("days", "4")]).to_dict()
    finally:  # the spec imported them from tmp_path
        for name in ("why_tasks", "why_util"):
            sys.modules.pop(name, None)
    assert list(summary["lineage"]) == ["report"]
    report = summary["lineage"]["report"]
    assert [t["task"] for t in report["tasks"]] == ["load", "clean", "report"]
    assert report["parameters"] == {"days": 4}
    assert "module why_util" in report["tasks"][1]["key_parts"]


def test_a_notebook_job_reads_the_lineage_of_its_exports_from_the_history(tmp_path: Path) -> None:
    (tmp_path / "why_util.py").write_text(UTIL)
    _write_notebook(tmp_path / "wf.ipynb")
    result = run_notebook(tmp_path / "wf.ipynb", tmp_path / "out.ipynb", {"days": 4})
    assert result.ok, result.error
    report = result.lineage["report"]
    assert [t["task"] for t in report["tasks"]] == ["load", "clean", "report"]
    assert report["parameters"] == {"days": 4, "THRESHOLD": 2}  # notebook variables it read
    assert result.to_dict()["lineage"] == result.lineage
