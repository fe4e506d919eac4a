"""The threads that run streaming tasks' generators, and their backpressure.

A :class:`Pump` runs one streaming task's generator in a thread of its own (the
scheduler's thread never runs user code) and posts its items to the scheduler's
loop in batches, as :class:`~nbflow.messages.Yielded` stimuli; when the generator
returns or raises it posts :class:`~nbflow.messages.StreamEnded`. Before it asks
the generator for its next item it waits until the tasks that map the stream are
fewer than ``buffer`` items behind (:meth:`Pump.consumed` says how far they got),
so a fast source cannot fill the memory ahead of a slow consumer.

:meth:`Pump.stop` (a cancel, or a consumer leaving ``flow.stream``) makes the
thread close the generator, which runs its ``finally`` blocks, and end. A body
that blocks inside the generator finishes its current item first; it can look
at :func:`nbflow.cancelled`, which is True from the stop on.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from . import cancellation
from .capture import Capture
from .capture import _target as _capture_target
from .messages import StreamEnded, Yielded
from .values import Failed

__all__ = ["AsyncPump", "Pump", "Pumps"]


class _Pump:
    """What both kinds of pump hold: the task, its generator function and arguments, the
    buffer, where items go, and the attempt's place on the cancel board."""

    def __init__(self, task: int, name: str, fn: Callable[..., Any], kwargs: dict[str, Any],
                 buffer: int, loop: asyncio.AbstractEventLoop,
                 deliver: Callable[[Yielded | StreamEnded], None],
                 board: cancellation.CancelBoard, item_id: Hashable) -> None:
        self.task, self.name = task, name
        self._fn, self._kwargs = fn, kwargs
        self._buffer = max(1, buffer)
        self._loop, self._deliver = loop, deliver
        self._board, self._id = board, item_id
        self._produced = 0
        self._consumed = 0
        self._stopped = False
        self._prepare()

    def _prepare(self) -> None:
        """What a kind of pump adds (its lock, thread or asyncio task)."""

    def _ended(self, exc: BaseException, made: int) -> Failed:
        """The task's failure: ``exc``, noting the item being made."""
        if hasattr(exc, "add_note"):
            exc.add_note(f"(raised by streaming task {self.name!r} while making item {made}; "
                         f"the {made} items before it were delivered)")
        return Failed.from_exception(self.name, exc)


class Pump(_Pump):
    """One streaming task's generator, run in a thread (see the module docstring)."""

    def _prepare(self) -> None:
        self._cond = threading.Condition()
        self._batch: list[Any] = []
        self._flush_due = False
        self.thread = threading.Thread(target=self._run, name=f"nbflow-stream-{self.name}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def consumed(self, n: int) -> None:
        """The consumers finished with ``n`` items: the generator may go on."""
        with self._cond:
            if n > self._consumed:
                self._consumed = n
                self._cond.notify()

    def stop(self) -> None:
        """Close the generator and end the thread (after the current item, if it is busy)."""
        self._board.cancel([self._id])  # nf.cancelled() is True in the generator from now
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        started = time.time()
        output = Capture()
        token = _capture_target.set(output)
        asked = cancellation.current.set((self._board, self._id))
        failure: Failed | None = None
        made = 0
        try:
            generator = self._fn(**self._kwargs)
            try:
                while self._wait_for_room():
                    try:
                        value = next(generator)
                    except StopIteration:
                        break
                    made += 1
                    self._post(value)
            finally:
                generator.close()  # a stop: the generator's finally blocks run here
        except BaseException as exc:  # the task's own error: it fails the task, not this thread
            failure = self._ended(exc, made)
        finally:
            _capture_target.reset(token)
            cancellation.current.reset(asked)
        where = f"thread {threading.current_thread().name} on {socket.gethostname()}"
        ended = StreamEnded(self.task, failure, started, time.time(), where, output or None)
        self._loop.call_soon_threadsafe(self._end, ended)

    def _wait_for_room(self) -> bool:
        """Wait until the consumers are less than the buffer behind; False once stopped."""
        with self._cond:
            while not self._stopped and self._produced - self._consumed >= self._buffer:
                self._cond.wait()
            if self._stopped:
                return False
            self._produced += 1
            return True

    def _post(self, value: Any) -> None:
        with self._cond:
            self._batch.append(value)
            if self._flush_due:
                return
            self._flush_due = True
        self._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._cond:
            batch, self._batch = self._batch, []
            self._flush_due = False
        if batch:
            self._deliver(Yielded(self.task, batch, time.time()))

    def _end(self, ended: StreamEnded) -> None:
        self._flush()
        self._deliver(ended)


class AsyncPump(_Pump):
    """An ``async def`` generator's pump: an asyncio task on the scheduler's loop (where
    ``async def`` task bodies run), with the same backpressure and stop as :class:`Pump`."""

    def _prepare(self) -> None:
        self._room = asyncio.Event()
        self.future: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.future = self._loop.create_task(self._run())

    def alive(self) -> bool:
        return self.future is not None and not self.future.done()

    def consumed(self, n: int) -> None:
        if n > self._consumed:
            self._consumed = n
            self._room.set()

    def stop(self) -> None:
        self._board.cancel([self._id])
        self._stopped = True
        self._room.set()

    async def _run(self) -> None:
        started = time.time()
        output = Capture()
        _capture_target.set(output)  # this asyncio task runs in a context of its own
        cancellation.current.set((self._board, self._id))
        failure: Failed | None = None
        made = 0
        try:
            generator = self._fn(**self._kwargs)
            try:
                while True:
                    while not self._stopped and self._produced - self._consumed >= self._buffer:
                        self._room.clear()
                        await self._room.wait()
                    if self._stopped:
                        break
                    try:
                        value = await generator.__anext__()
                    except StopAsyncIteration:
                        break
                    made += 1
                    self._produced += 1
                    self._deliver(Yielded(self.task, [value], time.time()))
            finally:
                await generator.aclose()
        except asyncio.CancelledError:
            pass  # the run is over: the generator was closed above
        except BaseException as exc:  # the task's own error
            failure = self._ended(exc, made)
        where = f"the scheduler's loop on {socket.gethostname()}"
        self._deliver(StreamEnded(self.task, failure, started, time.time(), where, output or None))


def pump_kind(fn: Callable[..., Any]) -> type[Pump] | type[AsyncPump]:
    """The pump for a streaming task's function: an async generator (a function, or an
    object whose ``__call__`` is one, like a spec's call) streams on the loop."""
    if inspect.isasyncgenfunction(fn) or inspect.isasyncgenfunction(type(fn).__call__):
        return AsyncPump
    return Pump


class Pumps:
    """The pumps of one run, by task index."""

    def __init__(self) -> None:
        self._pumps: dict[int, Pump | AsyncPump] = {}

    def __bool__(self) -> bool:
        return bool(self._pumps)

    def start(self, pump: Pump | AsyncPump) -> None:
        self._pumps[pump.task] = pump
        pump.start()

    def stop(self, task: int) -> None:
        pump = self._pumps.get(task)
        if pump is not None:
            pump.stop()

    def update(self, consumed: Callable[[int], int]) -> None:
        """Tell each pump how many of its items its consumers finished with."""
        for task, pump in list(self._pumps.items()):
            if not pump.alive():
                del self._pumps[task]
            else:
                pump.consumed(consumed(task))

    def stop_all(self) -> tuple[list[threading.Thread], list[asyncio.Task[None]]]:
        """Stop every pump; returns their threads (to join) and asyncio tasks (to await)."""
        threads, tasks = [], []
        for pump in self._pumps.values():
            pump.stop()
            if isinstance(pump, Pump):
                threads.append(pump.thread)
            elif pump.future is not None:
                tasks.append(pump.future)
        self._pumps.clear()
        return threads, tasks
