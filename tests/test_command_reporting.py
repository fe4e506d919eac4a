"""Where command tasks show up: ``run.summary()`` and the event log name the command line,
the host it ran on and its image, and say where the run's job directory is."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

import nbflow as nf
from nbflow import config
from nbflow.eventlog import read_events
from nbflow.run import COMMAND_CHARS, Summary, SummaryRow, commands_text, short_command

HOST = socket.gethostname()
#: the image scripts/containers.sh builds (tests/containers/ has the full container tests)
BUSYBOX = "localhost/nbflow-busybox:latest"


def has_busybox() -> bool:
    podman = shutil.which("podman")
    return podman is not None and subprocess.run(
        [podman, "image", "exists", BUSYBOX], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(autouse=True)
def _job_base(tmp_path: Path):
    with config.set(job_dir_base=str(tmp_path / "jobs")):
        yield


def words_flow() -> nf.Flow:
    flow = nf.Flow("words")
    flow.command("count", "printf 'a\\nb\\n' | wc -l")
    flow.command("greet", "echo {who}")

    @flow.task
    def total(count: nf.CommandResult) -> int:
        return int(count.stdout)

    return flow


def row(summary: Summary, task: str) -> SummaryRow:
    (found,) = [r for r in summary.rows if r.task == task]
    return found


def test_the_summary_shows_the_command_line_that_ran_and_the_host():
    run = words_flow().run(params={"who": "a b"})
    summary = run.summary()
    greet = row(summary, "greet")
    assert greet.command == "echo 'a b'"  # rendered: the placeholder filled in, quoted
    assert greet.host == HOST and greet.image is None
    assert row(summary, "count").command == "printf 'a\\nb\\n' | wc -l"
    total = row(summary, "total")
    assert (total.command, total.host, total.image) == (None, None, None)
    text = str(summary)
    assert "commands:" in text
    assert f"  greet  $ echo 'a b'  [on {HOST}]" in text
    assert "total  $" not in text
    dicts = {d["task"]: d for d in summary.to_dicts()}
    assert dicts["greet"]["command"] == "echo 'a b'" and dicts["greet"]["host"] == HOST


def test_the_summary_says_where_the_job_directory_is_and_that_it_is_kept():
    run = words_flow().run(params={"who": "x"})
    made = run.job.made
    assert made is not None
    summary = run.summary()
    assert summary.job_dir == str(made) and summary.keep_job_dir == "always"
    assert f"job directory: {made} (kept: keep_job_dir='always')" in str(summary)


def test_a_removed_job_directory_is_still_named_in_the_summary():
    with config.set(keep_job_dir="never"):
        run = words_flow().run(params={"who": "x"})
    assert not Path(run.summary().job_dir or "").exists()
    assert "(removed: keep_job_dir='never')" in str(run.summary())


def test_a_run_without_a_job_directory_does_not_mention_one():
    flow = nf.Flow("plain")

    @flow.task
    def one() -> int:
        return 1

    summary = flow.run().summary()
    assert summary.job_dir is None
    text = str(summary)
    assert "job directory" not in text and "commands" not in text


def test_a_failed_command_shows_the_line_that_ran_and_a_skipped_one_as_declared():
    flow = nf.Flow("broken")
    flow.command("bad", "echo {word} >&2; exit 3")
    flow.command("after", "echo {bad}")
    with config.set(keep_job_dir="failure"):
        run = flow.run(params={"word": "no way"}, raise_on_failure=False)
    summary = run.summary()
    assert row(summary, "bad").command == "echo 'no way' >&2; exit 3"
    after = row(summary, "after")
    assert after.state == "skipped" and after.command == "echo {bad}" and after.host is None
    text = str(summary)
    assert "$ echo 'no way' >&2; exit 3" in text
    assert "(kept: keep_job_dir='failure')" in text


def test_a_mapped_command_shows_its_declared_command_and_host():
    flow = nf.Flow("mapped")

    @flow.task
    def names() -> list[str]:
        return ["a", "b"]

    flow.command("each", "echo {names}", map="names")
    summary = flow.run().summary()
    each = row(summary, "each")
    assert each.command == "echo {names}" and each.host == HOST


def test_long_and_multi_line_commands_are_cut_in_the_text_only():
    long = "echo " + "x" * 200
    assert short_command(long) == long[:COMMAND_CHARS - 1] + "…"
    assert len(short_command(long)) == COMMAND_CHARS
    assert short_command("set -e\nmake all\n") == "set -e …"
    flow = nf.Flow("long")
    flow.command("script", "true\n" + long)
    summary = flow.run().summary()
    assert row(summary, "script").command == "true\n" + long  # whole in the rows
    assert "  script  $ true …  [on " in str(summary)
    assert "x" * 100 not in str(summary)


def test_tasks_with_an_image_show_it():
    rows = [SummaryRow("warp", "succeeded", None, 1, 1.0, "gdalwarp a b", "node-1", "osgeo/gdal"),
            SummaryRow("fit", "succeeded", None, 1, 1.0, image="python:3.12"),
            SummaryRow("plain", "succeeded", None, 1, 1.0)]
    assert commands_text(rows) == [
        "commands and images:",
        "  warp  $ gdalwarp a b  [on node-1, image osgeo/gdal]",
        "  fit   (python)  [image python:3.12]",
    ]


def test_the_event_log_records_command_host_and_job_directory(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    run = words_flow().run(params={"who": "a b"}, observers=[nf.EventLog(path)])
    events = read_events(path)
    greet = [e for e in events if e.get("task") == "greet"]
    running = [e for e in greet if e["state"] == "running"]
    assert running and running[0]["command"] == "echo {who}" and "host" not in running[0]
    (done,) = [e for e in greet if e["state"] == "succeeded"]
    assert done["command"] == "echo 'a b'" and done["host"] == HOST and "image" not in done
    assert done["where"]  # the executor's own word is still there
    assert all("command" not in e for e in events if e.get("task") == "total")
    assert all("command" not in e for e in greet if e["state"] in ("pending", "ready"))
    runs = [e for e in events if e["event"] == "run"]
    assert "job_dir" not in runs[0]  # (running: not made yet)
    assert runs[-1]["status"] == "succeeded"
    assert runs[-1]["job_dir"] == str(run.job.made) and runs[-1]["job_dir_kept"] is True


def test_the_event_log_records_a_failed_command_and_a_removed_job_directory(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    flow = nf.Flow("broken")
    flow.command("bad", "exit {code}")
    with config.set(keep_job_dir="never"):
        flow.run(params={"code": 4}, observers=[nf.EventLog(path)], raise_on_failure=False)
    events = read_events(path)
    (failed,) = [e for e in events if e.get("task") == "bad" and e["state"] == "failed"]
    assert failed["command"] == "exit 4" and failed["error"]["type"] == "CommandFailed"
    final = [e for e in events if e["event"] == "run"][-1]
    assert final["status"] == "failed" and final["job_dir_kept"] is False


def test_no_job_directory_no_job_dir_in_the_log(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    flow = nf.Flow("plain")

    @flow.task
    def one() -> int:
        return 1

    flow.run(observers=[nf.EventLog(path)])
    assert all("job_dir" not in e for e in read_events(path))


@pytest.mark.skipif(not has_busybox(), reason=f"no podman with {BUSYBOX} (scripts/containers.sh)")
def test_a_command_in_a_container_shows_its_image(tmp_path: Path):
    path = tmp_path / "events.jsonl"
    flow = nf.Flow("boxed")
    flow.command("inbox", "echo hi {x}", image=BUSYBOX)
    flow.command("fails", "exit 5", image=BUSYBOX)
    run = flow.run(params={"x": 1}, observers=[nf.EventLog(path)], raise_on_failure=False)
    summary = run.summary()
    assert (row(summary, "inbox").command, row(summary, "inbox").image) == ("echo hi 1", BUSYBOX)
    assert row(summary, "fails").image == BUSYBOX
    assert f"  inbox  $ echo hi 1  [on {HOST}, image {BUSYBOX}]" in str(summary)
    final = {e["task"]: e for e in read_events(path)
             if e["event"] == "task" and e["state"] in ("succeeded", "failed")}
    assert final["inbox"]["image"] == BUSYBOX and final["inbox"]["host"] == HOST
    assert final["fails"]["image"] == BUSYBOX and final["fails"]["command"] == "exit 5"
