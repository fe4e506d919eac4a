"""``nbflow run SPEC.yaml -o DIR``: the exported tasks' results as files, as they finish.

The spec's functions sit in ``helpers.py`` beside it. ``frames`` maps over
``numbers`` and returns a DataFrame per branch (Parquet files); ``meta`` returns
a JSON value, ``blob`` a value JSON cannot hold (a pickle). With the ``hold``
parameter, branch 2 of ``frames`` waits until that file appears (or the run is
cancelled), so the run can be interrupted while it is the only thing running.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import wait_until

import nbflow as nf
from nbflow.batch.results_dir import MANIFEST, ResultsDir, _atomic, _is_json

from .conftest import env, nbflow

HELPERS = '''
import threading
from pathlib import Path

import pandas as pd

import nbflow as nf


def numbers(n: int = 4) -> list:
    return list(range(n))


def frame(i: int, hold: str = ""):
    if hold and i == 2:
        Path(hold + ".started").touch()
        pause = threading.Event()
        while not Path(hold).exists() and not nf.cancelled():
            pause.wait(0.02)
    return expected(i)


def expected(i: int):
    return pd.DataFrame({"i": [i] * 3, "x": [0.5 * i, 1.5, 2.5], "name": ["a", "b", f"c{i}"]})


def meta(numbers: list) -> dict:
    return {"n": len(numbers), "names": ["a", "b"], "ok": True, "none": None, "x": 0.25}


def blob() -> dict:
    return {"set": {1, 2}, "tuple": (1, 2)}


def total(frames: list) -> int:
    return sum(len(f) for f in frames)
'''

SPEC = '''
nbflow: 1
name: results
parameters:
  n: {type: integer, default: 4}
  hold: {type: string, default: ""}
tasks:
  numbers: {use: "helpers:numbers", args: {n: {$param: n}}}
  frames:
    use: helpers:frame
    map: numbers
    args: {i: {$task: numbers}, hold: {$param: hold}}
    export: true
  meta: {use: "helpers:meta", args: {numbers: {$task: numbers}}, export: true}
  blob: {use: "helpers:blob", export: true}
  total: {use: "helpers:total", args: {frames: {$task: frames}}}
'''


def _spec(tmp_path: Path) -> Path:
    (tmp_path / "helpers.py").write_text(HELPERS)
    spec = tmp_path / "flow.yaml"
    spec.write_text(textwrap.dedent(SPEC))
    return spec


def _expected(i: int) -> pd.DataFrame:
    return pd.DataFrame({"i": [i] * 3, "x": [0.5 * i, 1.5, 2.5], "name": ["a", "b", f"c{i}"]})


def _manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / MANIFEST).read_text())


def _files(manifest: dict[str, Any]) -> dict[tuple[str, int | None], dict[str, Any]]:
    return {(f["task"], f["branch"]): f for f in manifest["files"]}


def _no_temporary_files(out: Path) -> None:
    left = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert not left, left


def test_a_spec_run_writes_each_exported_result_as_a_file(tmp_path):
    spec, out = _spec(tmp_path), tmp_path / "out"
    done = nbflow("run", spec, "-o", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"results: 6 file(s) in {out}" in done.stdout

    manifest = _manifest(out)
    assert (manifest["status"], manifest["interrupted"], manifest["finished"]) == (
        "succeeded", False, True)
    assert manifest["tasks"] == {"frames": {"branches": True, "dir": "frames"},
                                 "meta": {"branches": False, "dir": "meta"},
                                 "blob": {"branches": False, "dir": "blob"}}
    files = _files(manifest)
    assert set(files) == {("frames", 0), ("frames", 1), ("frames", 2), ("frames", 3),
                          ("meta", None), ("blob", None)}
    for i in range(4):
        entry = files[("frames", i)]
        assert (entry["file"], entry["format"], entry["type"], entry["rows"]) == (
            f"frames/{i:06d}.parquet", "parquet", "pandas.DataFrame", 3)
        pd.testing.assert_frame_equal(pd.read_parquet(out / entry["file"]), _expected(i))
    assert (files[("meta", None)]["file"], files[("meta", None)]["format"]) == (
        "meta/result.json", "json")
    assert json.loads((out / "meta" / "result.json").read_text()) == {
        "n": 4, "names": ["a", "b"], "ok": True, "none": None, "x": 0.25}
    assert (files[("blob", None)]["file"], files[("blob", None)]["format"]) == (
        "blob/result.pkl", "pickle")
    with (out / "blob" / "result.pkl").open("rb") as f:
        assert pickle.load(f) == {"set": {1, 2}, "tuple": (1, 2)}
    assert not (out / "numbers").exists() and not (out / "total").exists()  # not exported
    _no_temporary_files(out)

    # the same command again: the directory holds this run's results only
    done = nbflow("run", spec, "-o", out, "-p", "n", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(_files(_manifest(out))) == {("frames", 0), ("frames", 1), ("meta", None),
                                           ("blob", None)}
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["000000.parquet",
                                                                 "000001.parquet"]


def test_o_with_a_json_path_still_writes_the_summary_and_a_file_is_refused(tmp_path):
    spec = _spec(tmp_path)
    done = nbflow("run", spec, "-o", "summary.json", "-p", "n", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["exports"]["meta"]["n"] == 1
    (tmp_path / "taken").write_text("a file")
    done = nbflow("run", spec, "-o", "taken", cwd=tmp_path)
    assert done.returncode == 2
    assert "nbflow run: -o 'taken': cannot make the results directory there" in done.stderr


def test_ctrl_c_keeps_the_results_written_so_far(tmp_path):
    spec, out = _spec(tmp_path), tmp_path / "out"
    hold = tmp_path / "release"  # never made: branch 2 of frames runs until cancelled
    started = tmp_path / "release.started"
    err = tmp_path / "cli.err"
    with err.open("w") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nbflow", "run", str(spec), "-o", str(out), "-p", "hold",
             str(hold)], cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=e,
            stdin=subprocess.DEVNULL, start_new_session=True)
    want = {("frames", 0), ("frames", 1), ("frames", 3), ("meta", None), ("blob", None)}
    try:
        def written() -> bool:
            assert proc.poll() is None, err.read_text()
            return started.exists() and set(_files(_manifest(out))) == want
        wait_until(written, 120, "every result but branch 2's written")
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert code == 130, err.read_text()
    assert "interrupted" in err.read_text()
    manifest = _manifest(out)
    assert (manifest["status"], manifest["interrupted"], manifest["finished"]) == (
        "cancelled", True, True)
    assert set(_files(manifest)) == want
    for i in (0, 1, 3):
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"frames/{i:06d}.parquet"),
                                      _expected(i))
    assert not (out / "frames" / "000002.parquet").exists()
    _no_temporary_files(out)


# -- in this process ------------------------------------------------------------------------


def _write(tmp_path: Path, flow: nf.Flow) -> tuple[ResultsDir, list[str]]:
    messages: list[str] = []
    writer = ResultsDir(tmp_path / "out", spec="test", report=messages.append)
    run = flow.run(observers=[writer], background=True, raise_on_failure=False)
    writer.bind(run)
    run.wait()
    assert writer.close()
    return writer, messages


def test_a_stream_and_its_batches_are_written_item_by_item(tmp_path):
    flow = nf.Flow("streamed")

    @flow.task(export=True)
    def rows(n: int = 5):
        for i in range(n):
            yield pd.DataFrame({"i": [i], "x": [i / 2]})

    @flow.task(map="rows", batch_size=2, export=True)
    def batches(rows):
        return rows.assign(y=rows["x"] * 2)

    writer, messages = _write(tmp_path, flow)
    assert not messages and not writer.errors
    out = tmp_path / "out"
    manifest = _manifest(out)
    assert manifest["tasks"] == {"rows": {"branches": True, "dir": "rows"},
                                 "batches": {"branches": True, "dir": "batches"}}
    assert sorted(f["file"] for f in manifest["files"]) == [
        *(f"batches/{i:06d}.parquet" for i in range(3)),
        *(f"rows/{i:06d}.parquet" for i in range(5))]
    for i in range(5):
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"rows/{i:06d}.parquet"),
                                      pd.DataFrame({"i": [i], "x": [i / 2]}))
    last = pd.read_parquet(out / "batches/000002.parquet")
    pd.testing.assert_frame_equal(last, pd.DataFrame({"i": [4], "x": [2.0], "y": [4.0]}))
    assert [len(pd.read_parquet(out / f"batches/{i:06d}.parquet")) for i in range(3)] == [2, 2, 1]


def test_without_pyarrow_a_dataframe_is_pickled_with_a_warning(tmp_path):
    """As if pyarrow were not installed: ``sys.modules["pyarrow"] = None`` before pandas
    or nbflow is imported, so ``import pyarrow`` raises ImportError everywhere."""
    spec, out = _spec(tmp_path), tmp_path / "out"
    code = ("import sys; sys.modules['pyarrow'] = None; from nbflow.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "run", str(spec), "-o", str(out),
                           "-p", "n", "2"], cwd=tmp_path, env=env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    warning = ("nbflow run: --output: a DataFrame result of 'frames' is written as pickle "
               "(.pkl): pyarrow is not installed (pip install 'nbflow[output]' to write "
               "Parquet)")
    assert done.stderr.count(warning) == 1, done.stderr  # once per task
    manifest = _manifest(out)
    files = _files(manifest)
    assert [(files[("frames", i)]["file"], files[("frames", i)]["format"]) for i in (0, 1)] == [
        ("frames/000000.pkl", "pickle"), ("frames/000001.pkl", "pickle")]
    assert manifest["warnings"] == [warning.removeprefix("nbflow run: --output: ")]
    for i in (0, 1):
        frame = pd.read_pickle(out / f"frames/{i:06d}.pkl")  # strings: python, not pyarrow
        assert frame.to_dict("list") == _expected(i).to_dict("list")


def test_a_frame_parquet_cannot_hold_is_pickled_and_an_unpicklable_value_is_an_error(tmp_path):
    flow = nf.Flow("awkward")

    @flow.task(export=True)
    def mixed():
        return pd.DataFrame({"a": [1, "two", 3.0]})  # an object column of mixed types

    @flow.task(export=True)
    def lock():
        return threading.Lock()

    @flow.task(export=True)
    def fine():
        return [1, 2]

    writer, messages = _write(tmp_path, flow)
    formats = {f["task"]: f["format"] for f in writer.files}
    assert formats == {"mixed": "pickle", "fine": "json"}
    assert [(e["task"], e["branch"]) for e in writer.errors] == [("lock", None)]
    assert "cannot be pickled" in writer.errors[0]["error"]
    assert any("Parquet cannot hold it" in m for m in messages)
    assert any("the result of lock was not written" in m for m in messages)
    assert _manifest(tmp_path / "out")["errors"] == writer.errors


def test_only_values_json_gives_back_unchanged_are_json():
    assert _is_json({"a": [1, 2.5, "x", None, True, {"b": []}]})
    for value in ((1, 2), float("nan"), {1: "a"}, {"a": {1, 2}}, b"x", [float("inf")]):
        assert not _is_json(value), value
    deep: list[Any] = []
    for _ in range(200):
        deep = [deep]
    assert not _is_json(deep)


def test_a_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "x.json"

    def half(tmp: str) -> None:
        Path(tmp).write_text("{")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _atomic(target, half)
    assert list(tmp_path.iterdir()) == []
