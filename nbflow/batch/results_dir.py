"""Exported results as files, written as they finish: ``nbflow run SPEC.yaml --output DIR``.

A :class:`ResultsDir` is an observer of a run (it only listens). For every task
declared with ``export: true`` it writes, under ``DIR/<task>/``:

- each branch of a task with branches as it finishes: ``<branch:06d>.<ext>``
  (``000000.parquet``, ``000001.parquet``, ...), so a long map leaves its results
  one by one, and an interrupted run keeps those that finished. A mapped task has a
  branch per item it maps, a streaming task (a generator) one per item it yields,
  and a task that maps a stream with ``batch_size`` one per batch;
- the result of any other task when it finishes: ``result.<ext>``.

The format follows the value: a ``pandas.DataFrame`` is written as Parquet
(pyarrow), a value made only of dicts with string keys, lists, strings, finite
numbers, booleans and None as JSON, and anything else as a pickle. A DataFrame
that Parquet cannot hold (or every DataFrame when pyarrow is not installed) is
pickled instead, with a warning saying why. A value that cannot be pickled is an
error: it is reported, listed in the manifest, and the run goes on.

Every file is written to a temporary name in its directory and renamed into
place, so a Ctrl-C (or a kill) never leaves a half-written file under a result's
name. ``DIR/manifest.json`` (written the same way, after the files it lists)
names every file written so far, with its task, branch, format and type; see
:meth:`ResultsDir.manifest`.

Observers must not hold up the run: values are read on the event dispatcher
thread (as :class:`~nbflow.EventLog` reads exported values) and written by a
writer thread of their own, through a bounded queue; :meth:`ResultsDir.close`
flushes it.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import queue
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..events import Event, RunEvent
from ..states import OK
from ..values import Failed, Skipped

if TYPE_CHECKING:
    from ..run import Run

MANIFEST = "manifest.json"
#: values read and not written yet, at most (the observer waits when the writer is behind)
QUEUE_SIZE = 64
#: seconds :meth:`ResultsDir.close` waits for the writer to write what it was given
CLOSE_TIMEOUT = 120.0
#: seconds between two rewrites of the manifest while results come, at least
MANIFEST_PAUSE = 0.05
#: nesting depth past which a value is not written as JSON
JSON_DEPTH = 100
_TEMP = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
_STOP = object()


class ResultsDir:
    """Observer that writes the results of a run's exported tasks into ``path``.

    Parameters
    ----------
    path
        The directory; made when missing. The files an earlier run listed in its
        ``manifest.json`` there are removed when this run starts (so the directory
        holds one run's results); other files are left alone.
    spec
        What ran (the spec's path), for the manifest.
    report
        Called with each warning and error message (default: print to stderr).
    """

    def __init__(self, path: str | os.PathLike[str], *, spec: str | None = None,
                 report: Callable[[str], None] | None = None,
                 queue_size: int = QUEUE_SIZE) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"{str(self.path)!r} is a file, not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self.spec = spec
        self._report = report or _to_stderr
        self.run: Run | None = None
        self._exports: dict[str, bool] = {}  # exported task -> it has branches
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        #: held while events are handled (the dispatcher thread, bind, close)
        self._lock = threading.Lock()
        self._early: list[Event] = []  # events delivered before bind
        self._seen: set[tuple[str, int | None]] = set()
        self._branches_seen: dict[str, int] = {}
        self._closed = False
        #: held while the manifest's contents change
        self._state = threading.Lock()
        #: held while the manifest is written (by the writer thread, or by close)
        self._manifest_lock = threading.Lock()
        self._files: list[dict[str, Any]] = []
        self._errors: list[dict[str, Any]] = []
        self._warnings: list[str] = []
        self._warned: set[str] = set()
        self._status = "pending"
        self._interrupted = False
        self._finished = False
        self._pyarrow: bool | None = None

    # -- the observer ---------------------------------------------------------------------

    def bind(self, run: Run) -> None:
        """The run to read results from (after it started: earlier events wait until now)."""
        with self._lock:
            if self.run is not None or self._closed:
                return
            self.run = run
            # a task with branches: mapped, or streaming (a file per item)
            self._exports = {pt.name: pt.branches for pt in run.plan.tasks
                             if pt.task.options.export}
            try:
                self._prepare()
            except OSError as exc:  # the earlier results stay; the new ones are written
                self._report(f"nbflow run: --output: cannot tidy {str(self.path)!r}: {exc}")
            self._thread = threading.Thread(target=self._work, name="nbflow-results",
                                            daemon=True)
            self._thread.start()
            early, self._early = self._early, []
            self._handle(early)

    def __call__(self, events: Sequence[Event]) -> None:
        with self._lock:
            if self._closed:
                return
            if self.run is None:
                self._early.extend(events)
                return
            self._handle(events)

    def _handle(self, events: Sequence[Event]) -> None:
        run = self.run
        assert run is not None
        for event in events:
            if event.run_id != run.id:
                continue
            if isinstance(event, RunEvent):
                with self._state:
                    self._status = event.status
                continue
            if event.task not in self._exports or event.state not in OK:
                continue
            if event.branch is not None:
                self._submit(event.task, event.branch)
            elif not self._exports[event.task]:
                self._submit(event.task, None)
            elif self._branches_seen.get(event.task, 0) < (event.branches or 0):
                self._catch_up(event.task)  # branches whose events went missing

    def _submit(self, task: str, branch: int | None) -> None:
        """Read the value of ``task`` (or of its ``branch``) and queue it for writing."""
        key = (task, branch)
        if key in self._seen or self.run is None:
            return
        self._seen.add(key)
        if branch is not None:
            self._branches_seen[task] = self._branches_seen.get(task, 0) + 1
        try:
            value = (self.run.results[task] if branch is None
                     else branch_value(self.run, task, branch))
        except Exception as exc:
            self._error(task, branch, f"cannot read the result: {type(exc).__name__}: {exc}")
            return
        self._queue.put((task, branch, value))

    def _catch_up(self, task: str) -> None:
        """Queue every branch of mapped ``task`` (which ended with a result) not queued yet."""
        assert self.run is not None
        try:
            values = self.run.results[task]
        except Exception as exc:
            self._error(task, None, f"cannot read the result: {type(exc).__name__}: {exc}")
            return
        for branch, value in enumerate(values):
            key = (task, branch)
            if key not in self._seen and not isinstance(value, (Failed, Skipped)):
                self._seen.add(key)
                self._branches_seen[task] = self._branches_seen.get(task, 0) + 1
                self._queue.put((task, branch, value))

    def close(self, *, interrupted: bool = False, timeout: float = CLOSE_TIMEOUT) -> bool:
        """Write what finished and is not written yet, wait for the writer, and write the
        final manifest. Returns True when everything was written in time."""
        with self._lock:
            if self._closed:
                return self._finished
            self._closed = True
            run = self.run
            if run is not None:
                self._interrupted = interrupted
                for name, mapped in self._exports.items():
                    view = run.task(name)
                    if not view.ok:
                        continue
                    if not mapped:
                        self._submit(name, None)
                    elif self._branches_seen.get(name, 0) < (view.branches or 0):
                        self._catch_up(name)
        thread = self._thread
        if thread is None:
            return True
        self._queue.put(_STOP)
        thread.join(timeout)
        with self._state:
            self._finished = not thread.is_alive()
            if run is not None and run.done:
                self._status = run.status
        self._write_manifest()
        return self._finished

    # -- what was written -----------------------------------------------------------------

    @property
    def files(self) -> list[dict[str, Any]]:
        """The files written so far, as the manifest lists them."""
        with self._state:
            return list(self._files)

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Results that could not be read or written: task, branch, error."""
        with self._state:
            return list(self._errors)

    def manifest(self) -> dict[str, Any]:
        """What ``manifest.json`` holds: ``status`` (the run's, as last seen),
        ``interrupted``, ``finished`` (the writer wrote everything it was given and
        stopped), ``tasks`` (each exported task: whether it has branches, as a mapped or
        streaming task has, and its directory), ``files`` (task, branch, file relative
        to DIR, format, type, bytes; rows for Parquet), ``errors`` and ``warnings``."""
        run = self.run
        with self._state:
            return {
                "nbflow": 1, "spec": self.spec,
                "flow": None if run is None else run.flow,
                "run_id": None if run is None else run.id,
                "status": self._status, "interrupted": self._interrupted,
                "finished": self._finished,
                "tasks": {name: {"branches": mapped, "dir": name}
                          for name, mapped in self._exports.items()},
                "files": list(self._files), "errors": list(self._errors),
                "warnings": list(self._warnings),
            }

    # -- the writer thread ----------------------------------------------------------------

    def _prepare(self) -> None:
        """Remove the files an earlier run listed, and stale temporary files; write an
        empty manifest."""
        try:
            old = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
            listed = [f["file"] for f in old.get("files", []) if isinstance(f, dict)]
        except (OSError, ValueError, AttributeError, TypeError, KeyError):
            listed = []
        root = self.path.resolve()
        for rel in listed:
            target = (self.path / str(rel)).resolve()
            if target.parent != root and root in target.parents:  # inside a task directory
                target.unlink(missing_ok=True)
        for folder in [self.path, *(self.path / name for name in self._exports)]:
            if folder.is_dir():
                for stale in folder.iterdir():
                    if _TEMP.match(stale.name):
                        stale.unlink(missing_ok=True)
        self._status = "running"
        self._write_manifest()

    def _work(self) -> None:
        """Write the queued values; rewrite the manifest once something new is written,
        at most every :data:`MANIFEST_PAUSE` seconds (or ten times as long as the last
        rewrite took, so that a map of 100,000 branches does not spend its time there)."""
        dirty, due = False, 0.0
        while True:
            try:
                job = self._queue.get(timeout=max(0.0, due - time.monotonic()) if dirty
                                      else None)
            except queue.Empty:
                job = None
            if job is _STOP:
                return  # close() writes the last manifest
            if job is not None:
                task, branch, value = job
                try:
                    self._write(task, branch, value)
                except Exception as exc:  # a full disk, say: report it and go on
                    self._error(task, branch, f"{type(exc).__name__}: {exc}")
                dirty = True
            if dirty and time.monotonic() >= due:
                start = time.monotonic()
                self._write_manifest()
                spent = time.monotonic() - start
                dirty, due = False, time.monotonic() + max(MANIFEST_PAUSE, 10 * spent)

    def _write(self, task: str, branch: int | None, value: Any) -> None:
        stem = "result" if branch is None else f"{branch:06d}"
        folder = self.path / task
        folder.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {"task": task, "branch": branch, "type": _type_name(value)}
        if _is_dataframe(value):
            why = self._no_parquet()
            if why is None:
                try:
                    target = folder / f"{stem}.parquet"
                    _atomic(target, lambda tmp: value.to_parquet(tmp, engine="pyarrow"))
                    entry.update(format="parquet", rows=len(value))
                    self._done(entry, target)
                    return
                except Exception as exc:  # object columns of mixed types, say
                    why = f"Parquet cannot hold it ({type(exc).__name__}: {exc})"
            self._warn(task, f"a DataFrame result of {task!r} is written as pickle (.pkl): "
                       f"{why}")
        elif _is_json(value):
            target = folder / f"{stem}.json"
            data = (json.dumps(value, allow_nan=False) + "\n").encode()
            _atomic(target, lambda tmp: Path(tmp).write_bytes(data))
            entry["format"] = "json"
            self._done(entry, target)
            return
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            self._error(task, branch, f"cannot be pickled: {type(exc).__name__}: {exc}")
            return
        target = folder / f"{stem}.pkl"
        _atomic(target, lambda tmp: Path(tmp).write_bytes(data))
        entry["format"] = "pickle"
        self._done(entry, target)

    def _no_parquet(self) -> str | None:
        """None when DataFrames can be written as Parquet, else why not."""
        if self._pyarrow is None:
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                self._pyarrow = False
            else:
                self._pyarrow = True
        if self._pyarrow:
            return None
        return "pyarrow is not installed (pip install 'nbflow[output]' to write Parquet)"

    def _done(self, entry: dict[str, Any], target: Path) -> None:
        entry["file"] = target.relative_to(self.path).as_posix()
        entry["bytes"] = target.stat().st_size
        entry["time"] = time.time()
        with self._state:
            self._files.append(entry)

    def _error(self, task: str, branch: int | None, message: str) -> None:
        label = task if branch is None else f"{task}[{branch}]"
        with self._state:
            self._errors.append({"task": task, "branch": branch, "error": message})
        self._report(f"nbflow run: --output: the result of {label} was not written: {message}")

    def _warn(self, task: str, message: str) -> None:
        with self._state:
            if task in self._warned:
                return
            self._warned.add(task)
            self._warnings.append(message)
        self._report(f"nbflow run: --output: {message}")

    def _write_manifest(self) -> None:
        with self._manifest_lock:  # one at a time (the writer thread, close), newest last
            text = _manifest_text(self.manifest())
            try:
                _atomic(self.path / MANIFEST, lambda tmp: Path(tmp).write_text(text, "utf-8"))
            except OSError as exc:
                self._report(f"nbflow run: --output: cannot write {MANIFEST}: {exc}")

    def __repr__(self) -> str:
        return f"ResultsDir({str(self.path)!r})"


def branch_value(run: Run, task: str, branch: int) -> Any:
    """The value of ``branch`` of ``task`` (mapped or streaming), once it ended with one.

    ``run.results[task]`` gives a task's branches only once all of them ended, and
    ``run.stream()`` is for a consumer that drives the run (leaving it cancels the
    run); this reads one branch as ``run.stream()`` does: from the run's record, read
    from the cache when it was cached, fetched from the cluster when it lives there.
    """
    index = run.plan.by_name[task].index
    found = run._final_branch(index, branch)
    if found is None or found[0] not in OK:
        raise LookupError(f"branch {branch} of {task!r} has no result")
    return run._readable(index, found[1])


def _atomic(target: Path, write: Callable[[str], Any]) -> None:
    """``write(temporary path)``, then rename it to ``target`` (never half a file there)."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _manifest_text(data: dict[str, Any]) -> str:
    """The manifest as JSON: a key per line, and a line per file, error or warning."""
    lines = []
    for key, value in data.items():
        if isinstance(value, list) and value:
            items = ",\n  ".join(json.dumps(v, default=repr) for v in value)
            lines.append(f"{json.dumps(key)}: [\n  {items}\n ]")
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value, default=repr)}")
    return "{\n " + ",\n ".join(lines) + "\n}\n"


def _is_dataframe(value: Any) -> bool:
    pandas = sys.modules.get("pandas")  # a DataFrame exists only once pandas is imported
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _is_json(value: Any, depth: int = 0) -> bool:
    """True when JSON gives ``value`` back as it is (no tuples, NaN or non-string keys)."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth >= JSON_DEPTH:
        return False
    if isinstance(value, list):
        return all(_is_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items())
    return False


def _type_name(value: Any) -> str:
    cls = type(value)
    if _is_dataframe(value):
        return "pandas.DataFrame"
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


__all__ = ["MANIFEST", "ResultsDir", "branch_value"]
