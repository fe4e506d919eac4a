"""Runs recorded in a real SQLite database: records, failures, hashes, a broken database."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from nbflow.history.store import writer

import nbflow as nf
from nbflow.history import RunStore, UnknownRunError, database_path, located
from nbflow.history.recorder import PREVIEW_CHARS, Recorder, result_digest

from .conftest import sales_flow


def test_a_run_is_recorded_with_its_tasks(home: Path) -> None:
    run = sales_flow().run(params={"days": 3})
    store = RunStore()
    assert store.path == home / "runs.db" == database_path()
    (record,) = store.runs()
    assert record["run_id"] == run.id
    assert record["flow"] == "sales"
    assert record["status"] == "succeeded"
    assert record["params"] == {"days": 3}
    assert record["started"] <= record["ended"]
    tasks = {t["task"]: t for t in store.tasks([run.id])}
    assert list(tasks) == list(run.tasks)
    load = tasks["load"]
    assert load["state"] == "succeeded"
    assert load["key"] == run.task("load").key
    assert load["key_parts"]["code"]
    assert load["params"] == {"days": 3}
    assert load["where_"] == run.task("load").where
    assert load["result_hash"] == result_digest([0, 1, 2])[0]
    assert load["preview"] == "[0, 1, 2]"
    assert tasks["report"]["upstreams"] == ["load", "prices"]
    assert tasks["report"]["key_parts"]["upstreams"] == {
        "load": run.task("load").key, "prices": run.task("prices").key}


def test_a_cached_task_keeps_the_hash_of_its_result() -> None:
    flow = sales_flow()
    first = flow.run()
    second = flow.run()
    assert set(second.states.values()) == {"cached"}
    store = RunStore()
    hashes = [{t["task"]: t["result_hash"] for t in store.tasks([r.id])} for r in (first, second)]
    assert hashes[0] == hashes[1]
    assert None not in hashes[1].values()


def test_a_failing_run_is_recorded_as_failed() -> None:
    flow = nf.Flow("breaks")

    @flow.task
    def bad() -> int:
        raise ValueError("no data for 2026")

    @flow.task
    def after(bad: int) -> int:
        return bad

    run = flow.run(raise_on_failure=False)
    store = RunStore()
    assert store.run(run.id)["status"] == "failed"
    tasks = {t["task"]: t for t in store.tasks([run.id])}
    assert tasks["bad"]["state"] == "failed"
    assert tasks["bad"]["error"] == "ValueError: no data for 2026"
    assert tasks["bad"]["result_hash"] is None
    assert tasks["after"]["state"] == "skipped"


def test_an_unwritable_database_is_a_warning_and_the_run_succeeds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NBFLOW_HOME", str(blocker / "home"))
    with caplog.at_level(logging.WARNING, logger="nbflow.history"):
        run = sales_flow().run()
        writer.flush()  # runs are recorded in the background, after they end
    assert run.status == "succeeded"
    assert run.results["report"] == "30 days at 1.5"
    (warning,) = [r for r in caplog.records if r.name == "nbflow.history.recorder"]
    assert warning.levelno == logging.WARNING
    assert f"run {run.id} of flow 'sales' was not recorded" in warning.getMessage()


def test_a_damaged_database_is_a_warning(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    home.mkdir()
    (home / "runs.db").write_bytes(b"this is not SQLite" * 100)
    with caplog.at_level(logging.WARNING, logger="nbflow.history"):
        run = sales_flow().run()
        writer.flush()  # runs are recorded in the background, after they end
    assert run.status == "succeeded"
    assert any("was not recorded" in r.getMessage() for r in caplog.records)


def test_history_off(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_HISTORY", "0")
    assert Recorder.from_config() is None
    sales_flow().run()
    assert not home.exists()


def test_located_puts_the_database_in_a_folder_unless_nbflow_home_is_set(
        tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with located(tmp_path / "spec-dir" / ".nbflow"):
        assert database_path() == home / "runs.db"
        monkeypatch.delenv("NBFLOW_HOME")
        run = sales_flow().run()
    assert RunStore(tmp_path / "spec-dir" / ".nbflow" / "runs.db").run(run.id)["flow"] == "sales"


def test_without_nbflow_home_the_database_is_in_the_working_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBFLOW_HOME")
    monkeypatch.chdir(tmp_path)
    assert database_path() == tmp_path / ".nbflow" / "runs.db"


def test_runs_are_named_by_id_prefix_or_position() -> None:
    flow = sales_flow()
    first = flow.run(params={"days": 1})
    second = flow.run(params={"days": 2})
    store = RunStore()
    assert store.run("-1")["run_id"] == second.id
    assert store.run("-2")["run_id"] == first.id
    assert store.run(first.id[:8])["run_id"] == first.id
    with pytest.raises(UnknownRunError, match="is not recorded"):
        store.run("zzz")
    with pytest.raises(UnknownRunError, match="does not exist"):
        store.run("-3")


def test_a_result_that_does_not_pickle_is_hashed_by_its_repr() -> None:
    lock = threading.Lock()
    digest, preview = result_digest(lock)
    assert digest == result_digest(lock)[0]
    assert preview.startswith("<unlocked _thread.lock")


def test_a_long_result_has_a_short_preview() -> None:
    _, preview = result_digest("x" * 10_000)
    assert len(preview) <= PREVIEW_CHARS
    _, preview = result_digest(list(range(10_000)))
    assert len(preview) <= PREVIEW_CHARS


def test_a_mapped_task_is_one_record_with_its_branches() -> None:
    flow = nf.Flow("fan")

    @flow.task
    def items() -> list[int]:
        return [1, 2, 3]

    @flow.task(map="items")
    def double(items: int) -> int:
        return 2 * items

    run = flow.run()
    tasks = {t["task"]: t for t in RunStore().tasks([run.id])}
    assert tasks["double"]["branches"] == 3
    assert tasks["double"]["preview"] == "[2, 4, 6]"


def test_a_cancelled_run_is_recorded_as_cancelled() -> None:
    flow = nf.Flow("stops")
    started = threading.Event()

    @flow.task
    def slow() -> int:
        started.set()
        nf.cancel_event().wait(30)
        return 1

    run = flow.run(background=True)
    assert started.wait(30)
    run.cancel()
    run.wait(30)
    record = RunStore().run(run.id)
    assert record["status"] == "cancelled"
    assert RunStore().tasks([run.id])[0]["state"] == "cancelled"


def test_runs_at_the_same_time_are_all_recorded() -> None:
    flow = sales_flow()
    started = [flow.run(params={"days": d}, background=True) for d in range(1, 7)]
    for run in started:
        run.wait(60)
    recorded = {r["run_id"]: r["params"]["days"] for r in RunStore().runs()}
    assert recorded == {run.id: d for run, d in zip(started, range(1, 7), strict=True)}


def test_a_run_on_processes_hashes_its_results_in_the_parent() -> None:
    run = sales_flow().run(params={"days": 2}, executor="processes")
    tasks = {t["task"]: t for t in RunStore().tasks([run.id])}
    assert tasks["load"]["where_"].startswith("pid ")
    assert tasks["report"]["result_hash"] == result_digest("2 days at 1.5")[0]


def test_config_settings_are_used_once_they_exist(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbflow import config

    monkeypatch.setitem(config.DEFAULTS, "history", (True, lambda text: text != "0"))
    monkeypatch.setitem(config.DEFAULTS, "home", ("", str))
    with config.set(history=False):
        assert Recorder.from_config() is None
    assert Recorder.from_config() is not None
    with config.set(home=str(tmp_path / "elsewhere")):
        assert database_path() == tmp_path / "elsewhere" / "runs.db"


def test_results_on_dask_are_not_fetched_to_be_hashed() -> None:
    from types import SimpleNamespace

    from nbflow.executors import InlineExecutor
    from nbflow.history.recorder import _remote

    flow = nf.Flow("placed")

    @flow.task(executor="dask")
    def far() -> int:
        return 1

    @flow.task
    def near(far: int) -> int:
        return far

    plan = flow.plan()
    local = SimpleNamespace(executor=InlineExecutor())
    assert _remote(local, plan.by_name["far"])  # type: ignore[arg-type]
    assert not _remote(local, plan.by_name["near"])  # type: ignore[arg-type]
    everywhere = SimpleNamespace(executor=SimpleNamespace(remote=True))
    assert _remote(everywhere, plan.by_name["near"])  # type: ignore[arg-type]
