"""Command tasks (``flow.command``) and the job directory, with real processes."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

import nbflow as nf
from nbflow import config


@pytest.fixture(autouse=True)
def _job_base(tmp_path: Path):
    with config.set(job_dir_base=str(tmp_path / "jobs")):
        yield


def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``condition()`` holds (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        event.wait(0.02)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def failure(run: nf.Run, task: str) -> BaseException:
    (failed,) = [f for f in run.failures if f.task == task]
    return failed.error


def test_a_command_succeeds_with_quoted_values_and_streamed_output():
    flow = nf.Flow("cmd")
    flow.command("hello", "printf '%s|' {who}; echo; echo oops >&2")
    run = flow.run(params={"who": "a b; rm -rf x"})
    result = run.results["hello"]
    assert isinstance(result, nf.CommandResult)
    assert result.returncode == 0
    assert result.stdout == "a b; rm -rf x|\n"
    assert result.stderr_tail == "oops"
    out = run.task("hello").output[None]
    assert out.text("stdout") == result.stdout and out.text("stderr") == "oops\n"


def test_a_list_command_runs_without_a_shell():
    flow = nf.Flow("cmd")
    flow.command("args", [sys.executable, "-c", "import sys; print(sys.argv[1:])", "{x}", "-{x}-"])
    run = flow.run(params={"x": "$HOME *"})
    assert run.results["args"].stdout.strip() == "['$HOME *', '-$HOME *-']"


def test_a_non_zero_exit_fails_with_the_command_code_and_stderr():
    flow = nf.Flow("cmd")
    flow.command("bad", "echo first >&2; echo last words >&2; exit 3")
    run = flow.run(raise_on_failure=False)
    error = failure(run, "bad")
    assert isinstance(error, nf.CommandFailed)
    assert error.returncode == 3 and error.host == socket.gethostname()
    assert run.task("bad").host == socket.gethostname()
    text = str(error)
    assert "exited with code 3" in text and "exit 3" in text and "last words" in text


def test_a_command_that_is_not_found_says_so():
    flow = nf.Flow("cmd")
    flow.command("missing", "no-such-command-nbflow-test")
    run = flow.run(raise_on_failure=False)
    error = failure(run, "missing")
    assert isinstance(error, nf.CommandFailed) and error.returncode == 127
    assert "not found" in str(error)


def test_output_files_are_paths_in_the_job_directory():
    flow = nf.Flow("cmd")
    flow.command("write", "echo data > out.txt && echo more > {job_dir}/b.txt",
                 outputs={"out": "out.txt", "b": "b.txt"})
    result = flow.run().results["write"]
    assert result.path("out").read_text() == "data\n"
    assert result.outputs["b"].parent == result.path("out").parent
    with pytest.raises(KeyError, match="no output named 'c'"):
        result.path("c")


def test_a_missing_output_fails_naming_the_file():
    flow = nf.Flow("cmd")
    flow.command("write", "true", outputs={"tif": "warped.tif"})
    run = flow.run(raise_on_failure=False)
    error = failure(run, "write")
    assert isinstance(error, nf.CommandOutputError)
    assert "warped.tif" in str(error) and "'tif'" in str(error)


def test_invalid_text_fails_unless_text_is_false():
    flow = nf.Flow("cmd")
    flow.command("binary", "printf '\\377\\376'")
    flow.command("raw", "printf '\\377\\376'", text=False)
    run = flow.run(raise_on_failure=False)
    assert "not valid UTF-8" in str(failure(run, "binary"))
    assert run.results["raw"].stdout == b"\xff\xfe"


def test_stdin_from_an_upstream_value_and_env():
    flow = nf.Flow("cmd")

    @flow.task
    def words() -> str:
        return "b\na\nb\n"

    flow.command("count", "sort | uniq -c | awk '{{print $2 $1}}'; echo \"$LABEL/$FIXED\"",
                 stdin="words", env={"LABEL": "{label}", "FIXED": "C"})
    result = flow.run(params={"label": "x y"}).results["count"]
    assert result.stdout.split() == ["a1", "b2", "x", "y/C"]


def test_mapping_runs_one_command_per_item():
    flow = nf.Flow("cmd")

    @flow.task
    def names() -> list[str]:
        return ["a", "b c", "d"]

    flow.command("touch", "printf %s {names} > \"$NBFLOW_JOB_DIR/f-$(printf %s {names} | tr ' ' _)\"",
                 map="names")
    run = flow.run()
    assert len(run.results["touch"]) == 3
    files = sorted(p.name for p in (Path(config.get("job_dir_base"))).glob("*/f-*"))
    assert files == ["f-a", "f-b_c", "f-d"]


def test_the_job_directory_is_shared_by_a_run_and_not_between_runs():
    flow = nf.Flow("cmd")
    flow.command("first", "echo $NBFLOW_JOB_DIR; echo 1 > one.txt")

    @flow.task
    def second(first: nf.CommandResult) -> tuple[str, str]:
        return str(nf.job_dir()), (nf.job_dir() / "one.txt").read_text()

    one = flow.run().results
    two = flow.run(force=["first", "second"]).results  # (else both come from the cache)
    assert one["first"].stdout.strip() == one["second"][0]
    assert one["second"][1] == "1\n"
    assert one["second"][0] != two["second"][0]


def test_job_dir_outside_a_task_is_a_clear_error():
    with pytest.raises(RuntimeError, match="only available inside a task"):
        nf.job_dir()


def test_a_command_and_a_python_task_hand_a_file_over():
    flow = nf.Flow("cmd")

    @flow.task
    def numbers() -> Path:
        path = nf.job_dir() / "numbers.txt"
        path.write_text("3\n1\n2\n")
        return path

    flow.command("sorted_", ["sort", "-n", "{numbers}", "-o", "{job_dir}/sorted.txt"],
                 outputs={"txt": "sorted.txt"})

    @flow.task
    def total(sorted_: nf.CommandResult) -> list[int]:
        return [int(line) for line in sorted_.path("txt").read_text().split()]

    assert flow.run(executor="inline").results["total"] == [1, 2, 3]


def test_an_output_of_an_upstream_command_by_name():
    flow = nf.Flow("cmd")
    flow.command("make", "echo hi > a.txt", outputs={"a": "a.txt"})
    flow.command("show", "cat {make.a}")
    assert flow.run().results["show"].stdout == "hi\n"


def _pids(base: Path) -> list[int]:
    return [int(p.read_text()) for p in base.glob("*/*.pid") if p.read_text().strip()]


def test_a_timeout_kills_the_process_group(tmp_path: Path):
    flow = nf.Flow("cmd")
    flow.command("slow", "sleep 60 & echo $! > child.pid; echo $$ > shell.pid; wait", timeout=1)
    run = flow.run(raise_on_failure=False)
    assert isinstance(failure(run, "slow"), nf.TaskTimeoutError)
    pids = _pids(tmp_path / "jobs")
    assert len(pids) == 2
    until(lambda: all(gone(p) for p in pids))


def test_a_cancel_kills_the_process_group(tmp_path: Path):
    flow = nf.Flow("cmd")
    flow.command("slow", "sleep 60 & echo $! > child.pid; echo $$ > shell.pid; wait")
    run = flow.run(background=True, raise_on_failure=False)
    until(lambda: len(_pids(tmp_path / "jobs")) == 2)
    run.cancel()
    run.wait(30)
    assert run.status == "cancelled"
    until(lambda: all(gone(p) for p in _pids(tmp_path / "jobs")))


def test_an_unknown_placeholder_is_an_error_with_suggestions():
    flow = nf.Flow("cmd")

    @flow.task
    def raster() -> str:
        return "r.tif"

    flow.command("warp", "gdalinfo {rastr}")
    with pytest.raises(nf.MissingParameterError, match="raster"):
        flow.plan()


def test_a_malformed_placeholder_is_refused_at_declaration():
    flow = nf.Flow("cmd")
    with pytest.raises(nf.InvalidOptionError, match="placeholder"):
        flow.command("bad", "echo {x!r}")
    with pytest.raises(nf.InvalidOptionError, match="placeholder"):
        flow.command("bad", "echo {0}")


def test_keep_job_dir_never_removes_it_after_the_run(tmp_path: Path):
    flow = nf.Flow("cmd")
    flow.command("touch", "touch x")
    with config.set(keep_job_dir="never"):
        run = flow.run()
    assert run.status == "succeeded"
    until(lambda: not any((tmp_path / "jobs").iterdir()))


def test_on_processes_commands_and_python_tasks_share_the_job_directory():
    flow = nf.Flow("cmd")
    flow.command("write", "echo from-command > note.txt", outputs={"note": "note.txt"})

    @flow.task
    def read(write):
        here = nf.job_dir()
        return here == write.path("note").parent, (here / "note.txt").read_text(), os.getpid()

    run = flow.run(executor="processes")
    same_dir, text, pid = run.results["read"]
    assert same_dir and text == "from-command\n" and pid != os.getpid()
    assert run.job.made == run.results["write"].path("note").parent


def test_terminating_a_process_worker_stops_its_command(tmp_path: Path):
    """A cancel on processes terminates the worker; the worker stops its command first."""
    flow = nf.Flow("cmd")
    flow.command("slow", "echo $$ > {marker}; exec sleep 600")
    run = flow.run(executor="processes", params={"marker": str(tmp_path / "pid")},
                   background=True, raise_on_failure=False)
    until(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text().strip() != "")
    pid = int((tmp_path / "pid").read_text())
    run.cancel()
    run.wait(30)
    until(lambda: gone(pid))


def test_retries_run_the_command_again():
    flow = nf.Flow("cmd")
    task = flow.command("flaky", "if [ -e tried ]; then echo ok; else touch tried; exit 1; fi",
                        retries=1)
    assert task.source is not None and task.source.startswith(f"{__file__}:")
    assert flow.run().results["flaky"].stdout == "ok\n"


def test_a_mapped_upstreams_results_fill_a_placeholder_with_their_stdout():
    flow = nf.Flow("cmd")

    @flow.task
    def items() -> list[str]:
        return ["a", "b"]

    flow.command("each", "echo {items}", map="items")
    flow.command("joined", "echo {each}")
    assert flow.run().results["joined"].stdout == "a b\n"


def test_branches_of_a_mapped_command_keep_their_own_output_files():
    flow = nf.Flow("cmd")

    @flow.task
    def items() -> list[str]:
        return ["a", "b", "c"]

    flow.command("each", "echo {items} > out.txt", outputs={"out": "out.txt"}, map="items")
    flow.command("all", "cat {each.out}")
    run = flow.run()
    assert [r.path("out").read_text() for r in run.results["each"]] == ["a\n", "b\n", "c\n"]
    assert run.results["all"].stdout == "a\nb\nc\n"
    job = run.job.made
    assert job is not None and all(job / "each" in r.path("out").parents
                                   for r in run.results["each"])


def test_a_cancel_stops_a_command_on_the_inline_executor(tmp_path: Path):
    """inline runs the body on the scheduler's thread: the cancel must reach it directly."""
    flow = nf.Flow("cmd")
    flow.command("slow", "echo $$ > shell.pid; exec sleep 600")
    run = flow.run(executor="inline", background=True, raise_on_failure=False)
    until(lambda: len(_pids(tmp_path / "jobs")) == 1)
    (pid,) = _pids(tmp_path / "jobs")
    run.cancel()
    run.wait(30)
    assert run.status == "cancelled"
    until(lambda: gone(pid))
