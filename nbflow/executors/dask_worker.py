"""What runs on a dask worker for the dask executor: a task call, a split, a ``run_if``.

Kept apart from ``dask.py`` so a worker unpickles these functions by reference
(``nbflow`` must be installed on the workers) without the client-side code.
Each call reports how it went (worker address, timings, captured output,
traceback, the result's size) as an event on a topic the client subscribed
to; the client takes a task's report as its outcome. Reports are sent in
batches, at most one event per topic every :data:`REPORT_INTERVAL` seconds
(:class:`_Reporter`). The value itself stays on the worker.
"""

from __future__ import annotations

import pickle
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle

from .. import cancellation, jobdir
from ..capture import Capture, install
from ..capture import _target as _capture_target
from . import pickling
from .base import split_value


class _PickMarker:
    """Marks ``[_PICK, source, i]``: item ``i`` of ``source`` (a mapped branch's input).

    The list form lets dask replace ``source`` (a future) by its value on the worker,
    so the branch input is cut out there and the source never travels to the kernel.
    """

    def __reduce__(self) -> str:
        return "_PICK"  # pickled by reference: the same object in every process

    def __repr__(self) -> str:
        return "_PICK"


_PICK = _PickMarker()


class Packed:
    """A function pickled once by the client; unpickles as the function itself.

    Dask pickles a graph with ``pickle`` first and ``cloudpickle`` second; for a
    function whose module cannot be imported (a notebook's, a generated one) each
    attempt searches ``sys.modules``. Handing over the bytes skips both.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        return cloudpickle.loads, (self.data,)


def is_pick(value: Any) -> bool:
    """True for ``[_PICK, source, i]``."""
    return type(value) is list and len(value) == 3 and value[0] is _PICK


def pick(value: Any) -> Any:
    """Item ``i`` of ``source`` for ``[_PICK, source, i]`` (anything else: unchanged)."""
    if not is_pick(value):
        return value
    source, i = value[1], value[2]
    if is_pick(source):  # item i of a fused chain's result (see dask_fused)
        source = pick(source)
    if isinstance(source, (list, tuple)):
        return source[i]
    return split_value(source)[i]


def picked(value: Any) -> Any:
    """``value`` with its picks (alone or in a list) replaced by their items: what the
    client reads of a fused chain's inner result or a branch input (see ``dask.py``)."""
    if is_pick(value):
        return pick(value)
    if type(value) is list:
        return [pick(v) for v in value]
    return value


def _resolve(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in kwargs.items():
        if is_pick(value):
            value = pick(value)
        elif type(value) is list and value and any(is_pick(v) for v in value):
            value = [pick(v) for v in value]
        out[name] = value
    return out


def _picked(values: tuple[Any, ...], picks: tuple[tuple[int, int], ...]) -> list[Any]:
    out = list(values)
    for position, i in picks:
        out[position] = pick([_PICK, out[position], i])
    return out


def length(value: Any) -> int:
    """How many items a result maps into (the split itself happens per branch)."""
    value = pick(value)
    if isinstance(value, (list, tuple)):
        return len(value)
    return len(split_value(value))


def apply(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Call ``fn`` with resolved arguments (``run_if`` predicates)."""
    return fn(**_resolve(kwargs))


class UnserializableResult(TypeError):
    """A task returned a value that cannot be sent to another worker or the kernel."""


def _serialized_size(task: str, value: Any) -> int:
    """Bytes ``value`` takes serialized; raises :class:`UnserializableResult` naming the task.

    Protocol 5 with a buffer callback does not copy arrays' data, so this is cheap for
    numpy/pandas results; plain objects cost what sending them would. The size (unlike
    ``sizeof``, which guesses for custom objects) decides whether a result is cached.
    """
    buffers: list[pickle.PickleBuffer] = []
    try:
        data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    except Exception:
        buffers.clear()
        try:
            data = pickling.dumps(value, buffer_callback=buffers.append)
        except Exception as exc:
            msg = (f"task {task!r} returned a {type(value).__module__}.{type(value).__qualname__},"
                   f" which cannot be serialized to leave the dask worker ({exc}); return plain "
                   "data (numbers, arrays, frames) instead of open files, locks or connections")
            raise UnserializableResult(msg) from None
    return len(data) + sum(b.raw().nbytes for b in buffers)


#: a worker sends its reports at most this often (the first after a pause at once)
REPORT_INTERVAL = 0.02


class _Reporter:
    """Collects one worker's reports and sends them as one event per topic, at most every
    :data:`REPORT_INTERVAL` seconds.

    An event per task costs the worker's loop a wake-up, the scheduler a message and
    the client (in the kernel) a message to handle, each: a mapped task with thousands
    of small branches spent a third of its time on that. A report may now arrive after
    dask says its task finished; the client takes the report as the outcome, so it
    waits for it (see :mod:`.dask_outcomes`).
    """

    def __init__(self, worker: Any) -> None:
        self._worker = worker
        self._lock = threading.Lock()
        self._reports: dict[str, list[dict[str, Any]]] = {}
        self._scheduled = False
        self._last = 0.0

    def add(self, topic: str, report: dict[str, Any]) -> None:
        """Queue ``report`` (from any thread)."""
        with self._lock:
            self._reports.setdefault(topic, []).append(report)
            if self._scheduled:
                return
            self._scheduled = True
        worker = self._worker
        if worker.thread_id == threading.get_ident():
            self._schedule()
        else:
            worker.loop.add_callback(self._schedule)

    def _schedule(self) -> None:
        """On the worker's loop: send now, or when the interval since the last send is up."""
        wait = self._last + REPORT_INTERVAL - time.monotonic()
        if wait <= 0:
            self._flush()
        else:
            self._worker.loop.call_later(wait, self._flush)

    def _flush(self) -> None:
        with self._lock:
            reports, self._reports = self._reports, {}
            self._scheduled = False
        self._last = time.monotonic()
        for topic, batch in reports.items():
            self._worker.log_event(topic, batch)


_reporters: dict[int, _Reporter] = {}
_reporters_lock = threading.Lock()


def _reporter(worker: Any) -> _Reporter:
    with _reporters_lock:
        reporter = _reporters.get(id(worker))
        if reporter is None or reporter._worker is not worker:
            reporter = _reporters[id(worker)] = _Reporter(worker)
        return reporter


def _sendable_report(report: dict[str, Any]) -> dict[str, Any]:
    """``report``, without displays that msgpack cannot carry (their text stays)."""
    if report.get("displays"):
        from distributed.protocol.serialize import _is_dumpable  # what log_event checks

        if not _is_dumpable(report["displays"]):  # type: ignore[no-untyped-call]
            report.pop("displays")
    return report


class Call:
    """What :func:`run_item` needs besides the inputs: the task, its input names, picks.

    ``picks`` lists ``(position, i)`` for inputs that are item ``i`` of the value at
    that position (a mapped branch's input). An object, not a tuple: dask parses
    the containers in every task's arguments, and this has nothing to find.
    """

    __slots__ = ("task", "branch", "names", "picks", "job")

    def __init__(self, task: str, branch: int | None, names: tuple[str, ...],
                 picks: tuple[tuple[int, int], ...], job: jobdir.WorkerJob | None = None) -> None:
        self.task, self.branch, self.names, self.picks = task, branch, names, picks
        #: the run's job directory (on storage the workers share)
        self.job = job

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return Call, (self.task, self.branch, self.names, self.picks, self.job)


def _still_wanted(worker: Any, key: str) -> Callable[[], bool]:
    """Whether the client still wants ``key``: dask cannot stop a running task, but it
    marks one whose future was released as cancelled (``nf.cancelled()`` asks this)."""
    def ask() -> bool:
        state = worker.state.tasks.get(key)
        return state is not None and state.state not in ("cancelled", "released", "forgotten")

    return ask


def run_item(fn: Callable[..., Any], call: Call, topic: str, key: str, *values: Any) -> Any:
    """Run one work item on a worker; report on ``topic``; return the value or raise.

    ``values`` are the inputs named by ``call.names``, in order. They go as top-level
    arguments, not in a dict: dask parses nested containers of every task of a graph
    on the scheduler, which cost a mapped task's branches 0.1 ms each.
    """
    from distributed import get_worker

    names, picks = call.names, call.picks
    if picks:
        values = tuple(_picked(values, picks))
    worker = get_worker()
    report, value, error = run_one(fn, call.task, dict(zip(names, values)), call.job,
                                   _still_wanted(worker, key))
    report["key"] = key
    _reporter(worker).add(topic, _sendable_report(report))
    if error is not None:
        raise error
    return value


def run_one(fn: Callable[..., Any], task: str, kwargs: dict[str, Any],
            job: jobdir.WorkerJob | None, wanted: Callable[[], bool],
            ) -> tuple[dict[str, Any], Any, BaseException | None]:
    """Call ``fn`` here with captured output: its report (no key yet), value and error.

    Shared by :func:`run_item` and the fused chains of :mod:`.dask_fused`.
    """
    from distributed import get_worker

    install()
    started = time.time()
    output = Capture()
    token = _capture_target.set(output)
    job_token = jobdir.on_worker.set(job)
    asked = cancellation.still_wanted.set(wanted)
    error: BaseException | None = None
    value: Any = None
    nbytes = -1
    try:
        value = fn(**_resolve(kwargs))
        nbytes = _serialized_size(task, value)
    except Exception as exc:
        error = exc
    finally:
        _capture_target.reset(token)
        jobdir.on_worker.reset(job_token)
        cancellation.still_wanted.reset(asked)
    report: dict[str, Any] = {"started": started, "ended": time.time(), "ok": error is None}
    if output:
        report["stdout"] = output.stdout
        report["stderr"] = output.stderr
        report["displays"] = output.displays
    if error is not None:
        report["traceback"] = "".join(traceback.format_exception(type(error), error,
                                                                 error.__traceback__))
    else:
        report["nbytes"] = nbytes
    report["worker"] = get_worker().address  # the scheduler adds it only to single-dict events
    return report, value, error
