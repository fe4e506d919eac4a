"""Tasks with ``image=``: commands and Python functions in real Podman containers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import nbflow as nf
from nbflow import config, containers
from tests.containers.conftest import leftover_processes, wait_until


@pytest.fixture(autouse=True)
def _settings(tmp_path: Path, container_engine: str):
    containers.forget_checks()
    with config.set(job_dir_base=str(tmp_path / "jobs"), container_engine=container_engine):
        yield
    containers.forget_checks()


def failure(run: nf.Run, task: str) -> BaseException:
    (failed,) = [f for f in run.failures if f.task == task]
    return failed.error


def test_a_command_in_a_container_counts_words_from_mounted_files(tmp_path: Path,
                                                                  busybox_image: str):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("b\na\nb\n")
    (data / "b.txt").write_text("a\nc\n")
    flow = nf.Flow("box")
    flow.command("count", "cat {files} | sort | uniq -c > counts.txt; id -u; pwd",
                 outputs={"counts": "counts.txt"}, image=busybox_image)

    @flow.task
    def table(count: nf.CommandResult) -> dict[str, int]:
        lines = count.path("counts").read_text().splitlines()
        return {w: int(n) for n, w in (line.split() for line in lines)}

    run = flow.run(params={"files": [str(data / "a.txt"), str(data / "b.txt")]})
    assert run.results["table"] == {"a": 2, "b": 2, "c": 1}
    result = run.results["count"]
    uid, cwd = result.stdout.split()
    assert int(uid) == os.getuid() and cwd == str(run.job.made)
    assert result.path("counts").stat().st_uid == os.getuid()
    assert result.image == busybox_image and result.host
    assert f"cat {data / 'a.txt'} {data / 'b.txt'}" in result.command


def test_env_stdin_and_the_job_directory_reach_the_container(busybox_image: str):
    flow = nf.Flow("box")

    @flow.task
    def words() -> str:
        return "x y\nz\n"

    flow.command("wc", "wc -l; echo $GREETING $NBFLOW_JOB_DIR", stdin="words",
                 env={"GREETING": "hi {who}"}, image=busybox_image)
    run = flow.run(params={"who": "ann"})
    lines = run.results["wc"].stdout.split("\n")
    assert lines[0].strip() == "2"
    assert lines[1] == f"hi ann {run.job.made}"


def test_inputs_are_mounted_read_only(tmp_path: Path, busybox_image: str):
    source = tmp_path / "in.txt"
    source.write_text("keep me")
    flow = nf.Flow("box")
    flow.command("clobber", "echo gone > {path}", image=busybox_image)
    run = flow.run(params={"path": str(source)}, raise_on_failure=False)
    assert isinstance(failure(run, "clobber"), nf.CommandFailed)
    assert source.read_text() == "keep me"


def test_mapping_runs_one_container_per_file(tmp_path: Path, busybox_image: str):
    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}.txt")
        files[-1].write_text("line\n" * (i + 1))
    flow = nf.Flow("box")

    @flow.task
    def path() -> list[Path]:
        return files

    flow.command("lines", "wc -l < {path}", map="path", image=busybox_image)
    run = flow.run()
    assert [int(r.stdout) for r in run.results["lines"]] == [1, 2, 3]


def test_a_missing_command_in_the_image_says_so(busybox_image: str):
    flow = nf.Flow("box")
    flow.command("warp", "gdalwarp in.tif out.tif", image=busybox_image)
    run = flow.run(raise_on_failure=False)
    error = failure(run, "warp")
    assert isinstance(error, nf.CommandFailed) and error.returncode == 127
    assert "not found in image" in str(error) and busybox_image in str(error)


def test_an_unknown_image_fails_before_anything_runs(tmp_path: Path, busybox_image: str):
    marker = tmp_path / "ran"
    flow = nf.Flow("box")

    @flow.task
    def first() -> str:
        marker.write_text("yes")
        return "x"

    flow.command("later", "echo {first}", image="localhost/nbflow-no-such-image:1")
    with pytest.raises(nf.ContainerError, match=r"'later'.*no-such-image.*could not be pulled"):
        flow.run()
    assert not marker.exists()


def test_no_working_engine_is_a_clear_error(tmp_path: Path):
    broken = tmp_path / "fake-docker"
    broken.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IEXEC)
    flow = nf.Flow("box")
    flow.command("c", "true", image="localhost/x:1")
    with config.set(container_engine=str(broken)):
        with pytest.raises(nf.ContainerError, match=r"no container engine works.*Cannot connect"):
            flow.run()
    with config.set(container_engine="nbflow-no-such-engine"):
        with pytest.raises(nf.ContainerError, match=r"not found on PATH.*apt-get install podman"):
            flow.run()


def test_a_timeout_kills_and_removes_the_container(busybox_image: str):
    flow = nf.Flow("box")
    flow.command("slow", "echo started; sleep 600 # nbflow-timeout-marker", image=busybox_image,
                 timeout=1)
    run = flow.run(raise_on_failure=False)
    assert isinstance(failure(run, "slow"), nf.TaskTimeoutError)
    wait_until(lambda: not leftover_processes("nbflow-timeout-marker"))
    # no_leftover_containers (autouse) checks that the container is gone


def test_a_cancel_stops_the_container(busybox_image: str):
    flow = nf.Flow("box")
    flow.command("slow", "touch started; sleep 600 # nbflow-cancel-marker", image=busybox_image)
    run = flow.run(background=True, raise_on_failure=False)
    wait_until(lambda: run.job.made is not None and (run.job.made / "started").exists())
    run.cancel()
    run.wait(60)
    assert run.status == "cancelled"
    wait_until(lambda: not leftover_processes("nbflow-cancel-marker"))


def test_a_python_task_runs_in_its_image(python_image: str):
    flow = nf.Flow("py")

    @flow.task(image=python_image)
    def square(x: int) -> tuple[int, str]:
        import sys

        print("inside", sys.prefix)
        (nf.job_dir() / "square.txt").write_text(str(x * x))
        return x * x, sys.executable

    @flow.task
    def check(square: tuple[int, str]) -> str:
        return (nf.job_dir() / "square.txt").read_text()

    run = flow.run(params={"x": 7})
    value, executable = run.results["square"]
    assert value == 49 and executable == "/usr/bin/python3"
    assert run.results["check"] == "49"
    assert run.task("square").output[None].text("stdout") == "inside /usr\n"


def test_an_error_in_the_image_names_the_users_file_and_line(python_image: str):
    flow = nf.Flow("py")

    @flow.task(image=python_image)
    def boom(x: int) -> int:
        raise ValueError(f"bad value {x}")  # this line is shown

    run = flow.run(params={"x": 3}, raise_on_failure=False)
    (failed,) = run.failures
    assert isinstance(failed.error, ValueError) and str(failed.error) == "bad value 3"
    assert f'File "{__file__}"' in failed.traceback
    assert "# this line is shown" in failed.traceback
    assert python_image in failed.traceback


def test_a_python_task_on_processes_runs_in_its_image(python_image: str):
    flow = nf.Flow("py")

    @flow.task(image=python_image)
    def where() -> str:
        return str(nf.job_dir())

    run = flow.run(executor="processes")
    assert run.results["where"] == str(run.job.made)


def test_an_image_without_python_is_a_clear_error(busybox_image: str):
    flow = nf.Flow("py")

    @flow.task(image=busybox_image)
    def f() -> int:
        return 1

    run = flow.run(raise_on_failure=False)
    error = failure(run, "f")
    assert isinstance(error, nf.ContainerError)
    assert "has no python3" in str(error) and "nbflow installed" in str(error)


def test_an_async_task_cannot_have_an_image():
    flow = nf.Flow("py")
    with pytest.raises(nf.InvalidOptionError, match="async def"):
        @flow.task(image="localhost/x:1")
        async def f() -> int:
            return 1
