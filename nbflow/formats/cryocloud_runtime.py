"""Running CryoCloud nodes as nbflow tasks: the gate, the arguments, and the module call.

The tasks that :func:`nbflow.formats.cryocloud.cryocloud_spec` builds call
these functions with ``cc`` (the node as written: module, args, runOn,
runIf, parents...) and their inputs: ``node:NAME`` (another node's return
value, an :class:`nbflow.Failed` or :class:`nbflow.Skipped`, or a list of them
for a merged split) and ``option:NAME`` (a workflow option).

- :func:`should_run` is every task's ``run_if``: a node whose parent did not
  run does not run (CryoCloud never resolves it); otherwise ``runOn`` is
  compared with the parents' outcome (``success``, ``error`` or ``timeout``),
  then ``runIf`` is evaluated;
- :func:`process` resolves the args and calls the module's
  ``process_task(worker, task, cancel_event=None)``; it returns the module's
  return value (``retval`` of a ``(progress, retval)`` pair);
- :func:`split_items` resolves a ``splitOn`` node's args into one set per item.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from pathlib import Path
from typing import Any

from ..cancellation import cancel_event
from ..errors import TaskTimeoutError
from ..spec_calls import import_module
from ..values import Failed, Skipped
from .runif import Ref, parse_runif

__all__ = ["Worker", "process", "resolve_args", "should_run", "split_items"]

_MISSING: Any = object()


class Worker:
    """What a module's ``process_task`` gets as ``worker``: a logger and a status dict."""

    def __init__(self, node: str) -> None:
        self.name = node
        #: the module's own logger (not under ``nbflow``: what it logs is the module's)
        self.log = logging.getLogger(f"cryocloud.{node}")
        #: status values a module reports (``worker.status["progress"] = 50``)
        self.status: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Worker({self.name!r})"


def outcome(value: Any) -> str | None:
    """``success``, ``error`` or ``timeout`` for a finished node; None for one that did not run."""
    if isinstance(value, Failed):
        return "timeout" if isinstance(value.error, TaskTimeoutError) else "error"
    if isinstance(value, Skipped):
        return None
    return "success"


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _parent_outcome(cc: dict[str, Any], parent: str, inputs: dict[str, Any]) -> str | None:
    value = inputs[f"node:{parent}"]
    merged = cc["merged"].get(parent)
    if merged is None:
        return outcome(value)
    # a merged split is complete when every item reached the merge; then any failed
    # item of the split makes it an error, as CryoCloud's merge result does
    if any(isinstance(v, Skipped) for v in _items(value)):
        return None
    kinds = {outcome(v) for n in merged for v in _items(inputs[f"node:{n}"])}
    return "error" if "error" in kinds else "timeout" if "timeout" in kinds else "success"


def decide(cc: dict[str, Any], inputs: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether the node runs, and its calling parent (whose values ``parent.key`` reads)."""
    if cc["kind"] == "global":
        failed = [key[5:] for key, value in inputs.items() if key.startswith("node:")
                  and any(outcome(v) in ("error", "timeout") for v in _items(value))]
        if not failed:
            return False, None
        caller: str | None = failed[0]
        result = "timeout" if all(
            outcome(v) != "error" for v in _items(inputs[f"node:{caller}"])) else "error"
    else:
        parents: list[str] = cc["parents"]
        outs = {p: _parent_outcome(cc, p, inputs) for p in parents}
        done = [p for p in parents if outs[p] is not None]
        if not parents:
            caller, result = None, "success"
        elif cc["resolve_on_any"]:
            if not done:
                return False, None
            caller = done[0]
            result = outs[caller] or "success"
        else:
            if len(done) < len(parents):
                return False, None
            caller = next((p for p in parents if outs[p] != "success"), parents[0])
            result = outs[caller] or "success"
    run_on = cc["run_on"]
    if run_on == "never" or run_on not in ("always", result):
        return False, caller
    if cc["run_if"]:
        expr = parse_runif(cc["run_if"])
        return expr.evaluate(lambda ref: _lookup(ref, cc, inputs, caller)), caller
    return True, caller


def should_run(**kwargs: Any) -> bool:
    """The ``run_if`` of every CryoCloud task: ``runOn``, ``resolveOnAny`` and ``runIf``."""
    cc = kwargs.pop("cc")
    if cc["kind"] == "item":
        return True
    return decide(cc, kwargs)[0]


def _lookup(ref: Ref, cc: dict[str, Any], inputs: dict[str, Any], caller: str | None) -> Any:
    if ref.source == "option":
        return inputs.get(f"option:{ref.name}")
    value, _ = _output(ref.node, ref.key, cc, inputs, caller)
    return value


def _as_retval(value: Any) -> Any:
    """What CryoCloud keeps of a node: its return value, or ``{"error": ...}`` when it failed."""
    if isinstance(value, Failed):
        return {"error": f"{type(value.error).__name__}: {value.error}"}
    return None if isinstance(value, Skipped) else value


def _key(value: Any, key: str) -> tuple[Any, bool]:
    retval = _as_retval(value)
    if isinstance(retval, dict) and key in retval:
        return retval[key], True
    return None, False


def _output(node: str, key: str, cc: dict[str, Any], inputs: dict[str, Any],
            caller: str | None) -> tuple[Any, bool]:
    """The value of ``output: node.key`` and whether it resolved (``parent``: the caller first)."""
    if node == "parent" and cc["kind"] == "global" and caller is not None:
        # a global handler's parent is the node that failed; in a split, its failed item
        value = next(v for v in _items(inputs[f"node:{caller}"])
                     if outcome(v) in ("error", "timeout"))
        return _key(value, key)
    if node == "parent":
        order = [p for p in [caller, *cc["parents"]] if p is not None]
        for parent in dict.fromkeys(order):
            value, found = _output(parent, key, cc, inputs, None)
            if found:
                return value, True
        return None, False
    value = inputs.get(f"node:{node}")
    if node in cc["merged"] and isinstance(value, list):  # a merged split: one value per item
        pairs = [_key(v, key) for v in value]
        return [v for v, _ in pairs], any(found for _, found in pairs)
    return _key(value, key)


def resolve_args(cc: dict[str, Any], inputs: dict[str, Any], caller: str | None) -> dict[str, Any]:
    """The node's args as its module gets them (an unresolvable one takes its ``default``, or is left out)."""
    args: dict[str, Any] = {}
    for arg, spec in cc["args"].items():
        if not isinstance(spec, dict):
            args[arg] = spec
            continue
        value = spec.get("default", _MISSING)
        option = spec.get("option", spec.get("options"))
        if option is not None:
            given = inputs.get(f"option:{str(option).strip()}")
            if given is not None or value is _MISSING:
                value = given
        elif "output" in spec:
            node, _, key = str(spec["output"]).partition(".")
            found_value, found = _output(node, key, cc, inputs, caller)
            if found:
                value = found_value
        if value is not _MISSING:
            args[arg] = value
    return args


def process(**kwargs: Any) -> Any:
    """Run one CryoCloud node (or one item of a split): resolve its args, call its module."""
    cc: dict[str, Any] = kwargs.pop("cc")
    kind = cc["kind"]
    if kind == "item":
        args = dict(kwargs["items"])
    else:
        args = resolve_args(cc, kwargs, decide(cc, kwargs)[1])
    if kind == "cmdline":
        return args
    if kind == "dirwatcher":
        path = Path(str(kwargs["value"]))
        src = Path(str(args.get("src") or path.parent))
        rel = path.relative_to(src) if path.is_relative_to(src) else Path(path.name)
        return {"fullpath": str(path), "relpath": str(rel), "datasize": path.stat().st_size}
    if kind == "netwatcher":
        return dict(kwargs["value"] or {})
    loop = cc.get("loop")
    if not loop or kind == "items":
        return call_module(cc, args)
    items = args.get(loop)
    if not isinstance(items, list):
        msg = f"node {cc['node']!r}: loop {loop!r} must be a list, got {type(items).__name__}"
        raise TypeError(msg)
    results = [call_module(cc, {**args, loop: item}) for item in items]
    if results and all(isinstance(r, dict) for r in results):  # as CryoCloud merges: lists by key
        keys = dict.fromkeys(k for r in results for k in r)
        return {k: [r.get(k) for r in results] for k in keys}
    return results


def split_items(**kwargs: Any) -> list[dict[str, Any]]:
    """The args of each item of a ``splitOn`` node, in the order of its list."""
    cc: dict[str, Any] = kwargs.pop("cc")
    args = resolve_args(cc, kwargs, decide(cc, kwargs)[1])
    split_on = cc["split_on"]
    values = args.get(split_on)
    if not isinstance(values, list):
        msg = (f"node {cc['node']!r}: splitOn {split_on!r} must be a list, got "
               f"{type(values).__name__} {values!r:.80}")
        raise TypeError(msg)
    return [{**args, split_on: value} for value in values]


def call_module(cc: dict[str, Any], args: dict[str, Any]) -> Any:
    """Call ``process_task`` of the node's module; its ``retval`` (a ``(progress, retval)`` unpacked)."""
    module = import_module(cc["module"], Path(cc["dir"]) if cc.get("dir") else None)
    fn = module.process_task
    task = {"args": args, "module": cc["module"], "name": cc["node"], "priority": cc["priority"],
            "taskid": uuid.uuid4().hex}
    try:
        takes_cancel = "cancel_event" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_cancel = False
    kwargs = {"cancel_event": cancel_event()} if takes_cancel else {}
    result = fn(Worker(cc["node"]), task, **kwargs)
    if isinstance(result, tuple) and len(result) == 2 and (
            result[0] is None or isinstance(result[0], (int, float))):
        return result[1]
    return result
