"""The code a converted script carries with it: trigger rules, mapping, retries, its CLI.

``nbflow convert --to script`` copies this module (its imports, minus those the script
does not use, at the top) into the script it writes, so the script needs nothing but
the standard library and the tasks' own imports. It is a module of its own so that ruff and
mypy check the code users get, and tests can import it. It reproduces nbflow's rules
(``docs/concepts.md``) for one process running one task at a time:

- ``run_on="success"`` skips a task unless every upstream succeeded; ``"failure"`` runs it
  only if an upstream failed; ``"always"`` runs it with :class:`Failed` / :class:`Skipped`
  (both falsy) in place of missing upstream results.
- ``map`` runs the task once per item; over a mapped task it goes element-wise, and a
  mapped task is failed if a branch failed, else skipped if one was skipped.
- ``retries`` / ``retry_delay`` retry a failed attempt; ``timeout`` runs a plain function
  in a thread and abandons it when it runs too long, and cancels an ``async def`` one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections.abc
import inspect
import io
import json
import math
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

@dataclass(frozen=True)
class Failed:
    """A failed task or branch, in place of its result; falsy."""

    task: str
    error: BaseException
    traceback: str
    branch: int | None = None

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Failed({_label(self.task, self.branch)}: {type(self.error).__name__}: {self.error})"


@dataclass(frozen=True)
class Skipped:
    """A task or branch that did not run, and why, in place of its result; falsy."""

    task: str
    reason: str
    branch: int | None = None

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Skipped({_label(self.task, self.branch)}: {self.reason})"


@dataclass(frozen=True)
class Up:
    """An argument that is the result of the task ``task``."""

    task: str


class TaskTimeoutError(TimeoutError):
    """An attempt ran longer than its task's ``timeout``."""


def _ended(state: str) -> str:
    return "was skipped" if state == "skipped" else state


def _label(task: str, branch: int | None) -> str:
    return task if branch is None else f"{task}[{branch}]"


class Run:
    """The status table: every task's state (succeeded, failed, skipped) and result."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.results: dict[str, Any] = {}
        #: a mapped task's branch values, so that a map over it goes element-wise
        self.branches: dict[str, list[Any]] = {}

    def task(self, name: str, fn: Callable[..., Any], args: dict[str, Any], *,
             map: str | None = None, after: tuple[str, ...] = (), run_on: str = "success",
             run_if: Callable[..., Any] | None = None, retries: int = 0,
             retry_delay: float = 0.0, timeout: float | None = None) -> None:
        """Run task ``name`` as ``fn(**args)`` (once per item of ``args[map]`` when mapped)."""
        ups = list(dict.fromkeys([a.task for a in args.values() if isinstance(a, Up)] + [*after]))
        source = args[map].task if map is not None else None
        elementwise = source in self.branches
        others = [u for u in ups if not (elementwise and u == source)]
        if run_on == "success":
            bad = next((u for u in others if self.states[u] != "succeeded"), None)
            if bad is not None:
                return self._skip(name, f"upstream {bad!r} {_ended(self.states[bad])}")
        elif run_on == "failure" and not elementwise \
                and not any(self.states[u] == "failed" for u in ups):
            return self._skip(name, "no upstream failed (run_on='failure')")
        values = {arg: self.value(a.task) if isinstance(a, Up) else a for arg, a in args.items()}

        def call(kwargs: dict[str, Any], branch: int | None) -> Any:
            return _attempts(name, branch, fn, kwargs, run_if, retries, retry_delay, timeout)

        if map is None or source is None:
            return self._end(name, call(values, None))
        if elementwise:
            failed_up = any(self.states[u] == "failed" for u in others)
            out = []
            for i, item in enumerate(self.branches[source]):
                ok = not isinstance(item, (Failed, Skipped))
                if run_on == "success" and not ok:
                    state = "failed" if isinstance(item, Failed) else "skipped"
                    out.append(Skipped(name, f"upstream {_label(source, i)} {_ended(state)}", i))
                elif run_on == "failure" and not isinstance(item, Failed) and not failed_up:
                    out.append(Skipped(name, "no upstream failed (run_on='failure')", i))
                else:
                    out.append(call({**values, map: item}, i))
            return self._end_mapped(name, out)
        if self.states[source] != "succeeded":
            return self._skip(name, f"cannot map over {source!r}: it {_ended(self.states[source])}")
        items = values[map]
        if isinstance(items, (str, bytes)) or not isinstance(items, collections.abc.Iterable):
            error = TypeError(f"cannot map over {source!r}: a {type(items).__name__} "
                              "is not a collection of items")
            return self._end(name, Failed(name, error, f"TypeError: {error}\n"))
        return self._end_mapped(name, [call({**values, map: item}, i)
                                       for i, item in enumerate(items)])

    def value(self, task: str) -> Any:
        """What a consumer of ``task`` gets: its result, or a Failed/Skipped in its place."""
        return self.results[task]

    def _skip(self, name: str, reason: str) -> None:
        self._end(name, Skipped(name, reason))

    def _end(self, name: str, value: Any) -> None:
        self.results[name] = value
        self.states[name] = ("failed" if isinstance(value, Failed) else
                             "skipped" if isinstance(value, Skipped) else "succeeded")

    def _end_mapped(self, name: str, values: list[Any]) -> None:
        self.branches[name] = values
        self.results[name] = values
        self.states[name] = ("failed" if any(isinstance(v, Failed) for v in values) else
                             "skipped" if any(isinstance(v, Skipped) for v in values) else
                             "succeeded")

    @property
    def failures(self) -> list[Failed]:
        """Every failed task or branch, in run order."""
        out: list[Failed] = []
        for value in self.results.values():
            out += [v for v in (value if isinstance(value, list) else [value])
                    if isinstance(v, Failed)]
        return out


def _attempts(name: str, branch: int | None, fn: Callable[..., Any], kwargs: dict[str, Any],
              run_if: Callable[..., Any] | None, retries: int, retry_delay: float,
              timeout: float | None) -> Any:
    """One task call with its condition and retries: the value, a Failed or a Skipped."""
    failure: Failed | None = None
    for attempt in range(1, retries + 2):
        try:
            if attempt == 1 and run_if is not None and not run_if(**_accepted(run_if, kwargs)):
                return Skipped(name, "run_if returned False", branch)
            return _call(fn, kwargs, timeout)
        except (Exception, SystemExit) as exc:  # a task's sys.exit() fails the task only
            failure = Failed(name, exc, _traceback(exc), branch)
            if attempt <= retries:
                print(f"{_label(name, branch)}: attempt {attempt} failed "
                      f"({type(exc).__name__}: {exc}); retrying", file=sys.stderr)
                time.sleep(retry_delay)
    return failure


def _traceback(exc: BaseException) -> str:
    """The traceback from the task's own code on (without this runtime's frames)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None \
            and tb.tb_frame.f_code.co_name in ("_attempts", "_call", "target"):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _accepted(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments ``fn`` declares (all of them if it takes ``**kwargs``)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _call(fn: Callable[..., Any], kwargs: dict[str, Any], timeout: float | None) -> Any:
    """``fn(**kwargs)``, within ``timeout`` seconds; a one-shot iterator is read into a list."""
    if inspect.iscoroutinefunction(fn):
        try:
            value = asyncio.run(asyncio.wait_for(fn(**kwargs), timeout))
        except asyncio.TimeoutError:
            raise TaskTimeoutError(f"cancelled after its timeout of {timeout} s") from None
    elif timeout is None:
        value = fn(**kwargs)
    else:
        # a thread cannot be stopped: one that runs too long is abandoned, as nbflow does
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn(**kwargs)
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise TaskTimeoutError(f"still running after its timeout of {timeout} s "
                                   "(its thread is abandoned)")
        if "error" in box:
            raise box["error"]
        value = box["value"]
    if isinstance(value, collections.abc.Iterator) and not isinstance(value, io.IOBase):
        value = list(value)  # read once here, so that every consumer sees the items
    return value


#: every parameter's JSON Schema (its ``default`` when it has one), filled in by the converter
PARAMETERS: dict[str, dict[str, Any]] = {}

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list, tuple), "object": (dict,), "null": (type(None),),
}


def read_parameters(argv: list[str] | None = None) -> tuple[dict[str, Any], str | None]:
    """The parameters (defaults, then ``--config``, then ``-p``), checked; and ``--json``."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").strip().splitlines()[0] if __doc__ else None,
        epilog="parameters:\n" + "\n".join(f"  {n}: {_describe(s)}" for n, s in PARAMETERS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE",
                        help="a YAML or JSON file of parameter values (NAME: VALUE)")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="set a parameter (repeatable); VALUE is "
                        "read as YAML (JSON) unless the parameter is a string")
    parser.add_argument("--json", metavar="OUT",
                        help="write the tasks' states and the exported results to OUT")
    args = parser.parse_args(argv)
    defaults = {n: s["default"] for n, s in PARAMETERS.items() if "default" in s}
    values: dict[str, Any] = {}
    try:
        if args.config:
            values.update(_read_config(args.config))
        for name, text in args.param:
            schema = PARAMETERS.get(name, {})
            values[name] = text if schema.get("type") == "string" else _parse(name, text)
        unknown = sorted(set(values) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; the parameters "
                             f"are: {', '.join(PARAMETERS) or 'none'}")
        missing = [n for n in PARAMETERS if n not in values and n not in defaults]
        if missing:
            raise ValueError(f"missing required parameter(s) {', '.join(missing)}: "
                             "give them with -p NAME VALUE or --config")
        # the values given are checked (an int becomes a float for a number); defaults as is
        checked = {**defaults, **{n: _check(n, v, PARAMETERS[n]) for n, v in values.items()}}
    except ValueError as exc:
        parser.error(str(exc))
    return checked, args.json


def _describe(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "any")
    text = "/".join(kind) if isinstance(kind, list) else str(kind)
    text += f", default {schema['default']!r}" if "default" in schema else ", required"
    return text + (f": {schema['description']}" if schema.get("description") else "")


def _parse(name: str, text: str) -> Any:
    try:
        import yaml
    except ImportError:  # JSON is YAML's subset that needs no package
        try:
            return json.loads(text)
        except ValueError:
            return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"-p {name} {text!r}: not a YAML value ({exc})") from None


def _read_config(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    if path.endswith(".json"):
        data = json.loads(text)
    else:
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml); "
                             "or give a .json file") from None
        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    return data


_LIMITS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
           "maxLength", "pattern", "enum")


def _fits(key: str, value: Any, limit: Any) -> bool:
    """Whether ``value`` keeps the JSON Schema constraint ``key: limit``."""
    if key == "enum":
        return value in limit
    if key == "pattern":
        return isinstance(value, str) and re.search(limit, value) is not None
    if key in ("minLength", "maxLength"):
        n = len(value)
        return bool(n >= limit if key == "minLength" else n <= limit)
    tests = {"minimum": value >= limit, "maximum": value <= limit,
             "exclusiveMinimum": value > limit, "exclusiveMaximum": value < limit}
    return bool(tests[key])


def _check(name: str, value: Any, schema: dict[str, Any]) -> Any:
    """``value`` if it fits ``schema`` (an int becomes a float for a number), else ValueError."""
    if "anyOf" in schema:
        for option in schema["anyOf"]:
            try:
                return _check(name, value, option)
            except ValueError:
                continue
        raise ValueError(f"parameter {name}: {value!r} fits none of {schema['anyOf']}")
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if kinds:
        if isinstance(value, bool) and "boolean" not in kinds:
            raise ValueError(f"parameter {name}: {value!r} is not {' or '.join(kinds)}")
        if not any(isinstance(value, _TYPES.get(k, object)) for k in kinds):
            raise ValueError(f"parameter {name}: {value!r} is not {' or '.join(kinds)}")
        if "number" in kinds and "integer" not in kinds and type(value) is int:
            value = float(value)
    for key in _LIMITS:
        if key in schema and not _fits(key, value, schema[key]):
            raise ValueError(f"parameter {name}: {value!r} breaks {key}={schema[key]!r}")
    return value


#: the tasks whose results the script reports, filled in by the converter
EXPORTS: tuple[str, ...] = ()


def run_flow(params: dict[str, Any]) -> Run:
    """The converter writes this function: one ``run.task(...)`` line per task."""
    raise NotImplementedError


def main(argv: list[str] | None = None) -> int:
    """Run with the command line's parameters, print each task's state; 1 if one failed."""
    params, out = read_parameters(argv)
    run = run_flow(params)
    width = max(map(len, run.states), default=0)
    for name, state in run.states.items():
        value = run.results[name]
        why = f" ({value.reason})" if isinstance(value, Skipped) else ""
        print(f"{name:<{width}}  {state}{why}")
    for failure in run.failures:
        print(f"\n{_label(failure.task, failure.branch)} failed:\n{failure.traceback}",
              file=sys.stderr)
    exports = {n: run.results[n] for n in EXPORTS if run.states.get(n) == "succeeded"}
    for name, value in exports.items():
        print(f"export {name} = {value!r}")
    if out:
        data = {"states": run.states, "exports": _jsonable(exports)}
        Path(out).write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return 1 if "failed" in run.states.values() else 0


def _jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: numpy/pandas via tolist/to_dict, the rest as repr."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    for attr in ("tolist", "item", "to_dict"):
        method = getattr(value, attr, None)
        if callable(method):
            try:
                return _jsonable(method())
            except (TypeError, ValueError):
                continue
    return repr(value)
