"""Settings, resolved when they are used, never at import.

Precedence, lowest first: the defaults below < ``NBFLOW_<NAME>`` environment
variables < ``with nbflow.config.set(name=value):`` < an explicit argument.

>>> from nbflow import config
>>> config.get("executor")
'threads'
>>> with config.set(executor="inline"):
...     config.get("executor")
'inline'
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator
from typing import Any

from .errors import InvalidOptionError, suggest

#: name -> (default, parser for the environment variable's text)
DEFAULTS: dict[str, tuple[Any, Callable[[str], Any]]] = {
    # executor used when run() is not given one
    "executor": ("threads", str),
    # worker threads / processes of the local executors (0 = number of CPUs)
    "max_workers": (0, int),
    # seconds between two deliveries of batched events to observers
    "event_interval": (0.05, float),
    # directory of the disk result store used by flows created without cache= ("" = memory)
    "cache_dir": ("", str),
    # file to which every run appends one JSON object per state change ("" = none)
    "events_log": ("", str),
    # dask scheduler address for executor="dask" ("" = a local cluster started on demand)
    "cluster": ("", str),
    # directory under which each run makes its job directory ("" = <temp dir>/nbflow-jobs)
    "job_dir_base": ("", str),
    # after a run, keep its job directory: "always", "failure" (only if it failed), "never"
    "keep_job_dir": ("always", str),
    # container engine for tasks with image=: "auto" (podman, else docker), or a name or path
    "container_engine": ("auto", str),
    # items a streaming task may run ahead of its slowest consumer (its buffer= option wins)
    "stream_buffer": (100, int),
    # the format of workflow files: "auto" (told from their keys), "nbflow", "ephemeral",
    # "cryocloud" or "ecoscope" (nbflow run --format)
    "spec_format": ("auto", str),
    # keys another system's workflow file has that nbflow cannot honour: a warning, not an
    # error (nbflow run --allow-unsupported)
    "allow_unsupported": (False, lambda text: text.strip().lower() in ("1", "true", "yes")),
    # on dask, run a chain of tasks (each the only downstream of the one before) as one dask
    # task, reported task by task (see nbflow/fusion.py)
    "fuse_chains": (True, lambda text: text.strip().lower() in ("1", "true", "yes")),
}

_overrides: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "nbflow_config", default=None
)


def _check(name: str) -> None:
    if name not in DEFAULTS:
        problem = "is not a setting." + suggest(name, DEFAULTS) + f" Settings: {sorted(DEFAULTS)}"
        raise InvalidOptionError("config", name, problem)


def get(name: str, value: Any = None) -> Any:
    """Return setting ``name``: ``value`` if given, else override, env, default."""
    _check(name)
    if value is not None:
        return value
    overrides = _overrides.get() or {}
    if name in overrides:
        return overrides[name]
    default, parse = DEFAULTS[name]
    env = os.environ.get("NBFLOW_" + name.upper())
    if env is not None and env != "":
        try:
            return parse(env)
        except ValueError as exc:
            msg = f"is set to {env!r} by NBFLOW_{name.upper()}, which is not a {parse.__name__}"
            raise InvalidOptionError("config", name, msg) from exc
    return default


@contextlib.contextmanager
def set(**values: Any) -> Iterator[None]:
    """Override settings inside a ``with`` block (this thread / async context only)."""
    for name in values:
        _check(name)
    token = _overrides.set({**(_overrides.get() or {}), **values})
    try:
        yield
    finally:
        _overrides.reset(token)


def max_workers(value: int | None = None) -> int:
    """The number of workers for local executors (``max_workers`` or the CPU count)."""
    n = int(get("max_workers", value))
    return n if n > 0 else (os.cpu_count() or 1)
