"""The watched-folder trigger on a real temp folder and the real watcher (inotify).

Each test runs :meth:`FolderWatch.run` on its own ``asyncio.run`` loop with a ``submit``
that records calls. Nothing waits for a fixed time: a test waits for the calls it
expects, for the watcher's ``pending`` view, or for a *sentinel* file's job. The
sentinel is written last, so by the time its job arrives every file the watcher saw
before it has had its stability time: a file that should have made no job has not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from functools import partial
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from nbflow.errors import ServiceError
from nbflow.service.watch import FolderWatch

STABLE = 0.2  # seconds: small, so the tests are fast
TIMEOUT = 10.0


class Calls:
    """A ``submit`` that records ``(path, dedup_key)`` and wakes whoever waits for calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Path, str]] = []
        self._more = asyncio.Event()

    def __call__(self, path: Path, key: str) -> None:
        self.calls.append((path, key))
        self._more.set()

    @property
    def names(self) -> list[str]:
        return [p.name for p, _ in self.calls]

    async def wait(self, n: int) -> list[tuple[Path, str]]:
        """Wait until there are at least ``n`` calls (fail after TIMEOUT)."""
        await self._until(lambda: len(self.calls) >= n)
        return self.calls

    async def sentinel(self, folder: Path, name: str = "zz-sentinel.csv") -> None:
        """Drop a file, wait for its job and forget it: what was seen before is settled."""
        (folder / name).write_text("sentinel")
        await self._until(lambda: name in self.names)
        self.calls = [c for c in self.calls if c[0].name != name]

    async def _until(self, done: Callable[[], bool]) -> None:
        async def more() -> None:
            while not done():
                self._more.clear()
                await self._more.wait()
        await asyncio.wait_for(more(), TIMEOUT)


async def until(predicate: Callable[[], Any], what: str) -> None:
    """The async twin of ``conftest.wait_until``, for state of the watcher nothing signals."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, f"still not true after {TIMEOUT}s: {what}"
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def watching(watch: FolderWatch, submit: Any = None) -> AsyncIterator[Calls]:
    """Run the watch until the block ends, then stop it and check that it stopped."""
    calls = Calls()
    stop = asyncio.Event()
    task = asyncio.ensure_future(watch.run(submit or calls, stop))
    await asyncio.wait_for(watch.ready.wait(), TIMEOUT)
    try:
        yield calls
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


def run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(main)


def key_of(path: Path) -> str:
    st = path.stat()
    return f"watch:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = (tmp_path / "in").resolve()
    path.mkdir()
    return path


# -- one file, one job -------------------------------------------------------------------------


def test_a_new_file_makes_one_job_with_its_path_and_version(folder: Path) -> None:
    watch = FolderWatch(folder, stable=STABLE, param="source")

    async def main() -> None:
        async with watching(watch) as calls:
            (folder / "a.csv").write_text("1,2\n")
            [(path, key)] = await calls.wait(1)
            assert path == folder / "a.csv"
            assert key == key_of(path)
            assert not watch.pending
            await calls.sentinel(folder)
            assert calls.names == ["a.csv"]  # once only

    run(main())
    assert watch.param == "source"


def test_pattern_hidden_and_temporary_names(folder: Path) -> None:
    watch = FolderWatch(folder, pattern="*.csv", stable=STABLE)

    async def main() -> None:
        async with watching(watch) as calls:
            for name in ["notes.txt", ".hidden.csv", "b.csv.part", "c.csv.tmp", "d.csv~"]:
                (folder / name).write_text("x")
            (folder / ".hidden-dir").mkdir()
            (folder / "wanted.csv").write_text("x")
            await calls.wait(1)
            await calls.sentinel(folder)
            assert calls.names == ["wanted.csv"]

    run(main())


def test_a_file_renamed_from_a_temporary_name_makes_one_job(folder: Path) -> None:
    watch = FolderWatch(folder, pattern="*.csv", stable=STABLE)

    async def main() -> None:
        async with watching(watch) as calls:
            (folder / "r.csv.part").write_text("complete")
            (folder / "r.csv.part").rename(folder / "r.csv")
            await calls.wait(1)
            await calls.sentinel(folder)
            assert calls.names == ["r.csv"]

    run(main())


@pytest.mark.parametrize("recursive", [False, True])
def test_recursive_or_only_the_top_folder(folder: Path, tmp_path: Path, recursive: bool) -> None:
    (folder / "sub").mkdir()
    moved = tmp_path / "moved"
    (moved / "deeper").mkdir(parents=True)
    (moved / "deeper" / "m.csv").write_text("x")
    watch = FolderWatch(folder, recursive=recursive, stable=STABLE)

    async def main() -> None:
        async with watching(watch) as calls:
            (folder / "top.csv").write_text("x")
            (folder / "sub" / "deep.csv").write_text("x")
            (folder / "new").mkdir()  # its file may come before its watch does
            (folder / "new" / "n.csv").write_text("x")
            moved.rename(folder / "moved")  # a folder moved in whole: its files make no event
            await calls.wait(1)
            await calls.sentinel(folder)
            if recursive:
                assert sorted(calls.names) == ["deep.csv", "m.csv", "n.csv", "top.csv"]
                assert (folder / "moved" / "deeper" / "m.csv", key_of(
                    folder / "moved" / "deeper" / "m.csv")) in calls.calls
            else:
                assert calls.names == ["top.csv"]

    run(main())


# -- stability ---------------------------------------------------------------------------------


def test_a_file_written_slowly_makes_one_job_once_complete(folder: Path) -> None:
    # The writer pauses after each piece for less than the stability time, but writes
    # for longer than it in all: only a clock restarted by each piece waits for the end.
    stable, pause = 0.8, 0.3
    watch = FolderWatch(folder, stable=stable)
    path = folder / "slow.csv"
    pieces = [b"a" * 1000, b"b" * 10, b"c" * 5000, b"d"]

    def seen(size: int) -> bool:
        return watch.pending.get(path, (0, 0))[0] == size

    async def main() -> None:
        async with watching(watch) as calls:
            with open(path, "wb") as f:
                written = 0
                for piece in pieces:
                    f.write(piece)
                    f.flush()
                    written += len(piece)
                    # the watcher has seen this piece: its clock started again, no job yet
                    await until(partial(seen, written), f"the watcher sees {written} bytes")
                    assert calls.calls == []
                    await asyncio.sleep(pause)  # the slow writer's pause (the scenario)
                    assert calls.calls == []
            [(got, key)] = await calls.wait(1)
            assert got == path
            assert path.stat().st_size == sum(map(len, pieces))
            assert key == key_of(path)
            assert not watch.pending
            await calls.sentinel(folder)
            assert calls.names == ["slow.csv"]

    run(main())


def test_a_file_deleted_before_it_is_stable_makes_no_job(folder: Path) -> None:
    watch = FolderWatch(folder, stable=0.5)
    path = folder / "doomed.csv"

    async def main() -> None:
        async with watching(watch) as calls:
            path.write_text("x")
            await until(lambda: path in watch.pending, "the watcher sees the file")
            path.unlink()
            await until(lambda: path not in watch.pending, "the watcher forgets the file")
            await calls.sentinel(folder)
            assert calls.calls == []

    run(main())


def test_existing_files_and_a_restart_give_the_same_keys(folder: Path) -> None:
    old = folder / "old.csv"
    old.write_text("there before")

    async def first() -> None:
        async with watching(FolderWatch(folder, stable=STABLE)) as calls:
            await calls.sentinel(folder, "first.csv")
            assert calls.calls == []  # without existing=True, old files make no job

    async def restart(expected: list[tuple[Path, str]]) -> None:
        async with watching(FolderWatch(folder, stable=STABLE, existing=True)) as calls:
            await calls.wait(2)
            assert sorted(calls.calls) == expected
            old.write_text("rewritten, longer than before")  # a new version: a new job
            [*_, (path, key)] = await calls.wait(3)
            assert path == old
            assert key == key_of(old)
            assert key not in dict(expected).values()

    run(first())
    expected = sorted([(old, key_of(old)), (folder / "first.csv", key_of(folder / "first.csv"))])
    run(restart(expected))


# -- security and bad input --------------------------------------------------------------------


@pytest.mark.parametrize("existing", [False, True])
def test_symlinks_out_of_the_folder_are_refused(folder: Path, tmp_path: Path, existing: bool,
                                                caplog: pytest.LogCaptureFixture) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("secret")
    (folder / "real.csv").write_text("inside")
    watch = FolderWatch(folder, recursive=True, existing=True, stable=STABLE)

    def links() -> None:
        (folder / "link.csv").symlink_to(outside / "secret.csv")
        (folder / "linkdir").symlink_to(outside, target_is_directory=True)
        (folder / "alias.csv").symlink_to(folder / "real.csv")

    if existing:
        links()

    async def main() -> None:
        async with watching(watch) as calls:
            if not existing:
                links()
            (outside / "more.csv").write_text("also outside")
            await calls.sentinel(folder)
            # the alias counts as the file it resolves to (the store dedups the second key)
            assert set(calls.calls) == {(folder / "real.csv", key_of(folder / "real.csv"))}
            assert all(p.is_relative_to(folder) for p, _ in calls.calls)

    with caplog.at_level(logging.WARNING, logger="nbflow.service.watch"):
        run(main())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(folder / "link.csv") in w and "out of the watched folder" in w
               for w in warnings), warnings


def test_a_missing_folder_or_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ServiceError, match=re.escape(repr(str(missing)))) as info:
        FolderWatch(missing)
    assert "\n" not in str(info.value)
    a_file = tmp_path / "file.csv"
    a_file.write_text("x")
    with pytest.raises(ServiceError, match="is not a folder"):
        FolderWatch(a_file)
    with pytest.raises(ServiceError, match="--stable"):
        FolderWatch(tmp_path, stable=-1)


@pytest.mark.logs_nbflow_errors
def test_a_removed_folder_is_logged(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    watch = FolderWatch(folder, stable=STABLE)

    def removed() -> bool:
        return any("was removed" in r.getMessage() and str(folder) in r.getMessage()
                   for r in caplog.records)

    async def main() -> None:
        async with watching(watch):
            folder.rmdir()
            await until(removed, "the watcher reports the removed folder")

    run(main())


# -- the service's side ------------------------------------------------------------------------


def test_stop_ends_run_promptly_and_leaves_no_thread(folder: Path) -> None:
    before = set(threading.enumerate())
    watch = FolderWatch(folder, stable=60)  # a pending file does not hold the stop up

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(watch.run(Calls(), stop))
        await asyncio.wait_for(watch.ready.wait(), TIMEOUT)
        (folder / "pending.csv").write_text("x")
        await until(lambda: watch.pending, "the watcher sees the file")
        stop.set()
        await asyncio.wait_for(task, 2.0)  # the watcher looks at the stop event every 50 ms
        assert not watch.pending

    run(main())
    left = [t for t in threading.enumerate() if t not in before]
    for t in left:
        t.join(TIMEOUT)
    assert [t for t in left if t.is_alive()] == []


def test_an_async_submit_is_awaited(folder: Path) -> None:
    watch = FolderWatch(folder, stable=STABLE)
    stored: list[str] = []

    async def submit(path: Path, key: str) -> None:
        await asyncio.sleep(0)
        stored.append(path.name)

    async def main() -> None:
        async with watching(watch, submit):
            (folder / "a.csv").write_text("x")
            await until(lambda: stored, "the async submit ran")

    run(main())
    assert stored == ["a.csv"]


@pytest.mark.logs_nbflow_errors
def test_a_failing_submit_is_logged_and_the_watch_goes_on(
        folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    watch = FolderWatch(folder, stable=STABLE)
    calls = Calls()

    def submit(path: Path, key: str) -> None:
        if path.name == "bad.csv" and os.path.getsize(path) == 1:
            msg = "the store is locked"
            raise RuntimeError(msg)
        calls(path, key)

    async def main() -> None:
        async with watching(watch, submit):
            (folder / "bad.csv").write_text("x")
            await until(lambda: any("bad.csv" in r.getMessage() for r in caplog.records),
                        "the failure is logged")
            (folder / "good.csv").write_text("x")
            (folder / "bad.csv").write_text("xy")  # changed again: tried again
            await calls.wait(2)
            assert sorted(calls.names) == ["bad.csv", "good.csv"]

    run(main())
