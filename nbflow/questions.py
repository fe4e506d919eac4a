"""The questions the state machine asks about user values: ``run_if``, and map splitting.

:class:`~nbflow.messages.CheckCondition` asks whether an item may run (its task's
``run_if`` predicate on its inputs); :class:`~nbflow.messages.SplitResult` asks for
the items of a result that tasks map over. Both are user code or user values, so
neither is answered on the scheduler's thread, which never runs user code: a
predicate runs on a worker thread of the scheduler loop, or next to the data on a
remote executor (a dask worker); a result is split where it is. The answers come
back as :class:`~nbflow.messages.ConditionAnswer` and
:class:`~nbflow.messages.SplitAnswer` stimuli.

This is a mixin of :class:`~nbflow.scheduler.Scheduler`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from .errors import IterationError, ResultUnavailableError
from .executors.base import Executor, split_value
from .inputs import upstream_names
from .isolation import private_arguments
from .loading import Stored
from .messages import CheckCondition, ConditionAnswer, Instruction, Item, SplitAnswer, SplitResult
from .values import Failed

if TYPE_CHECKING:
    from collections import deque

    from .loading import CachedValues
    from .transitions import Transitions


class Questions:
    """Answers ``run_if`` and splitting off the scheduler thread (see the module docstring)."""

    if TYPE_CHECKING:  # what it uses of Scheduler
        sm: Transitions
        cached: CachedValues
        _loop: asyncio.AbstractEventLoop | None
        _pending: deque[Instruction]
        _run_if_params: dict[int, tuple[set[str], bool]]

        def executor_of(self, task: int) -> Executor: ...
        def _must_fetch(self, t: int, kwargs: dict[str, Any]) -> bool: ...
        def _background(self, coro: Coroutine[Any, Any, None]) -> None: ...
        def _process(self, instructions: Iterable[Instruction]) -> None: ...
        async def _fetch_crossing(self, calls: list[tuple[int, dict[str, Any]]]) -> None: ...

    def _check_condition(self, ins: CheckCondition) -> None:
        t, _ = ins.item
        predicate = self.sm.plan.tasks[t].task.options.run_if
        assert predicate is not None
        names, takes_all = self._predicate_params(t, predicate)
        kwargs = ins.kwargs if takes_all else {k: v for k, v in ins.kwargs.items() if k in names}
        self._background(self._check(ins.item, predicate, kwargs))

    async def _check(self, item: Item, predicate: Callable[..., Any],
                     kwargs: dict[str, Any]) -> None:
        """``run_if`` on a worker thread, or next to the data on a remote executor (a dask
        worker), after fetching only the inputs that cross from another executor."""
        t, b = item
        pt = self.sm.plan.tasks[t]
        executor = self.executor_of(t)
        answer: bool | Failed
        try:
            if self._must_fetch(t, kwargs):
                await self._fetch_crossing([(t, kwargs)])
            if executor.remote:
                answer = bool(await executor.apply(predicate, kwargs))
            else:
                assert self._loop is not None
                private = upstream_names(kwargs, pt.params)
                answer = await self._loop.run_in_executor(
                    None, _call_predicate, pt.name, b, predicate, kwargs, private)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            answer = _predicate_failure(pt.name, b, exc)
        self._process(self.sm.handle(ConditionAnswer(item, answer)))

    def _predicate_params(self, t: int, predicate: Callable[..., Any]) -> tuple[set[str], bool]:
        cached = self._run_if_params.get(t)
        if cached is None:
            params = inspect.signature(predicate).parameters.values()
            takes_all = any(p.kind is p.VAR_KEYWORD for p in params)
            cached = ({p.name for p in params}, takes_all)
            self._run_if_params[t] = cached
        return cached

    def _split(self, ins: SplitResult) -> None:
        value = ins.value
        if (type(value) is list or type(value) is tuple) and not self.executor_of(
                ins.source).remote:  # the common case: a local list, no user code to run
            self._pending.extend(self.sm.handle(SplitAnswer(ins.source, list(value))))
            return
        self._background(self._split_elsewhere(ins))

    async def _split_elsewhere(self, ins: SplitResult) -> None:
        """The items of a result that is not a list: iterated on a worker thread (its
        ``__iter__`` is user code), read from the cache first, or cut out where it is on a
        remote executor."""
        name = self.sm.plan.tasks[ins.source].name
        executor = self.executor_of(ins.source)
        assert self._loop is not None
        run = self._loop.run_in_executor
        # Branches on the same executor cut their items out where the result is; a
        # consumer elsewhere gets plain items (one fetch of the whole result).
        local = any(self.executor_of(c) is not executor for c in ins.consumers)
        try:
            items: list[Any] | Failed
            if type(ins.value) is Stored:  # a cached result, read only now
                value = await run(None, self.cached.load, ins.value)
                items = await run(None, split_value, value, name)
            elif not executor.remote:
                items = await run(None, split_value, ins.value, name)
            elif local:
                items = await run(None, split_value, await executor.fetch(ins.value), name)
            else:
                items = await executor.split(ins.value)
        except asyncio.CancelledError:
            raise
        except (IterationError, ResultUnavailableError) as exc:
            items = Failed.from_exception(name, exc)
        except BaseException as exc:
            items = Failed.from_exception(name, _map_error(name, exc))
        self._process(self.sm.handle(SplitAnswer(ins.source, items)))


def _call_predicate(task: str, branch: int | None, predicate: Callable[..., Any],
                    kwargs: dict[str, Any], private: tuple[str, ...]) -> bool | Failed:
    """The predicate's answer, on private copies of the upstream results it reads."""
    try:
        return bool(predicate(**private_arguments(kwargs, private)))
    except BaseException as exc:  # a worker thread of the scheduler loop: nothing escapes
        return _predicate_failure(task, branch, exc)


def _predicate_failure(task: str, branch: int | None, exc: BaseException) -> Failed:
    error = RuntimeError(f"run_if of task {task!r} raised {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return Failed.from_exception(task, error, branch)


def _map_error(task: str, exc: BaseException) -> Exception:
    error = IterationError(f"cannot map over the result of task {task!r}: {exc}")
    error.__cause__ = exc
    return error
