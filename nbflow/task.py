"""Task: a function plus its options.

The function's parameter names are its inputs. Which of them are upstream
tasks and which are flow parameters is decided by the :class:`~nbflow.Flow`
when it validates, because tasks may be declared in any order.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import keyword
import math
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .errors import InvalidOptionError, suggest

RunOn = Literal["success", "failure", "always"]
RUN_ON_VALUES: tuple[str, ...] = ("success", "failure", "always")

_NO_DEFAULT = inspect.Parameter.empty


@dataclass(frozen=True)
class TaskOptions:
    """Everything about a task except its function. See ``Flow.task`` for each option."""

    after: tuple[str, ...] = ()
    map: str | None = None
    run_on: RunOn = "success"
    run_if: Callable[..., bool] | None = None
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    max_parallel: int | None = None
    priority: int = 0
    resources: Mapping[str, float] | None = None
    cache: bool = True
    executor: Any = None
    export: bool = False
    #: a label shared by related tasks; the widget draws a group as a box it can
    #: collapse into one node (no effect on running)
    group: str | None = None
    #: a container image: the task runs in it (a command with its engine, a Python
    #: function with the image's own Python; see ``containers.py``)
    image: str | None = None
    #: a streaming task: how many items it may run ahead of its slowest consumer (None:
    #: the ``stream_buffer`` setting)
    buffer: int | None = None
    #: a task that maps a stream: take its items N at a time, joined into one batch
    #: (see ``batching.py``)
    batch_size: int | None = None
    #: a streaming task that never ends (a feed): no task may wait for its end
    unbounded: bool = False


OPTION_NAMES: tuple[str, ...] = tuple(TaskOptions.__dataclass_fields__)


def _is_number(value: object) -> bool:
    """A finite int or float (not a bool): ``nan`` and ``inf`` are no amount of anything."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_executor(value: object) -> bool:
    """True for what ``executor=`` takes: None, an executor's name, an Executor object."""
    if value is None:
        return True
    from .executors import EXECUTORS, Executor  # local: executors/ sits above this module

    return isinstance(value, Executor) or (isinstance(value, str) and value in EXECUTORS)


def check_name(name: object) -> str | None:
    """Why ``name`` cannot name a task, or None. Names are names, not identifiers (``in``,
    ``combined-output``): a spec refers to tasks by name. Dots are kept for
    ``TASK.OPTION`` overrides, and spaces and control characters for nothing."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > _NAME_MAX:
        return f"is longer than {_NAME_MAX} characters"
    if name.isidentifier() or (name.isprintable() and _DOT_OR_SPACE.search(name) is None):
        return None  # (the common case, in C: a task is declared in a few µs)
    bad = next((c for c in name if c == "." or c.isspace() or not c.isprintable()), None)
    if bad is not None:
        return (f"holds {bad!r}; a name may hold no dots (TASK.OPTION overrides use them), "
                "spaces or control characters")
    return None


_NAME_MAX = 200
_DOT_OR_SPACE = re.compile(r"[.\s]")


def check_variable_name(name: object) -> str | None:
    """Why ``name`` cannot name a notebook task, or None: a task cell assigns a variable of
    that name, and other cells read it, so it must be a usable variable name."""
    if not isinstance(name, str) or not name.isidentifier():
        return "must be a Python identifier (it is how others refer to it)"
    if keyword.iskeyword(name):
        return (f"is a Python keyword: no parameter or variable can be named {name!r}, so no "
                f"task could use its result; name it {name + '_'!r} or another word")
    return None


#: TaskOptions already built, by their options' (name, type, value): tasks often share
#: options, and a TaskOptions is immutable, so they can share the object and skip the
#: checks. Bounded: cleared when full.
_options_memo: dict[tuple[tuple[str, type, Any], ...], TaskOptions] = {}
_OPTIONS_MEMO_SIZE = 256


def make_options(task: str, options: Mapping[str, Any]) -> TaskOptions:
    """Check ``options`` (names and types) and build :class:`TaskOptions`.

    Raises :class:`~nbflow.errors.InvalidOptionError` naming the task and option.
    """
    # The type is part of the key because True == 1 and 1 == 1.0 hash alike, yet
    # retries=True must still be refused.
    memo_key: tuple[tuple[str, type, Any], ...] | None
    try:
        memo_key = tuple((k, type(v), v) for k, v in options.items())
        known = _options_memo.get(memo_key)
    except TypeError:  # an unhashable value (a list for after=, a dict for resources)
        memo_key, known = None, None
    if known is not None:
        return known
    opts = _check_options(task, options)
    if memo_key is not None:
        if len(_options_memo) >= _OPTIONS_MEMO_SIZE:
            _options_memo.clear()
        _options_memo[memo_key] = opts
    return opts


def _check_options(task: str, options: Mapping[str, Any]) -> TaskOptions:
    for name in options:
        if name not in OPTION_NAMES:
            problem = "is not a task option." + suggest(name, OPTION_NAMES)
            problem += f" Options: {', '.join(OPTION_NAMES)}."
            raise InvalidOptionError(task, name, problem)

    def bad(name: str, expected: str) -> InvalidOptionError:
        value = options[name]
        return InvalidOptionError(
            task, name, f"must be {expected}, got {value!r} ({type(value).__name__})"
        )

    values = dict(options)
    if "after" in values:
        after = values["after"]
        if isinstance(after, str):
            after = (after,)
        if not isinstance(after, Sequence) or not all(isinstance(a, str) for a in after):
            raise bad("after", "a list of task names")
        values["after"] = tuple(after)
    if values.get("map") is not None and not isinstance(values["map"], str):
        raise bad("map", "the name of an upstream task")
    if "run_on" in values and values["run_on"] not in RUN_ON_VALUES:
        raise bad("run_on", "one of 'success', 'failure', 'always'")
    if values.get("run_if") is not None and not callable(values["run_if"]):
        raise bad("run_if", "a callable returning a bool")
    for name in ("retries", "priority"):
        if name in values and (not isinstance(values[name], int) or isinstance(values[name], bool)):
            raise bad(name, "an int")
    if values.get("retries", 0) < 0:
        raise bad("retries", "0 or more")
    if "retry_delay" in values and (not _is_number(values["retry_delay"]) or values["retry_delay"] < 0):
        raise bad("retry_delay", "a finite number of seconds >= 0")
    if values.get("timeout") is not None and (not _is_number(values["timeout"]) or values["timeout"] <= 0):
        raise bad("timeout", "a finite number of seconds > 0, or None (no timeout)")
    mp = values.get("max_parallel")
    if mp is not None and (not isinstance(mp, int) or isinstance(mp, bool) or mp < 1):
        raise bad("max_parallel", "an int >= 1, or None")
    res = values.get("resources")
    if res is not None:
        if not isinstance(res, Mapping) or not all(
            isinstance(k, str) and k and _is_number(v) and v >= 0 for k, v in res.items()
        ):
            raise bad("resources", "a mapping of resource name to a finite amount >= 0, "
                      "like {'GPU': 1}")
        values["resources"] = dict(res)
    for name in ("cache", "export", "unbounded"):
        if name in values and not isinstance(values[name], bool):
            raise bad(name, "True or False")
    if not _check_executor(values.get("executor")):
        from .executors import EXECUTORS

        names = ", ".join(repr(n) for n in sorted(EXECUTORS))
        raise bad("executor", f"one of {names}, an Executor object (like nf.DaskExecutor(...)), "
                  "or None (the run's executor)")
    group = values.get("group")
    if group is not None and (not isinstance(group, str) or not group.strip()):
        raise bad("group", "a non-empty string naming the group, like 'cleaning' (or None)")
    for name, meaning in (("buffer", "(or None: the stream_buffer setting)"),
                          ("batch_size", "(or None: one item per branch)")):
        count = values.get(name)
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise bad(name, f"a whole number of items >= 1 {meaning}")
    image = values.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip() or image != image.strip()):
        raise bad("image", "a container image name, like 'localhost/tools:1.2' (or None)")
    return TaskOptions(**values)


def code_hash(fn: Callable[..., Any]) -> str:
    """A stable hash of a function's code: its normalised AST when the source is available
    (comments and formatting do not count), else its bytecode; closure values and default
    values are included (see :func:`nbflow.code_sources.function_hash`)."""
    from .code_sources import function_hash  # local: code_sources imports cache

    return function_hash(fn)


@dataclass(frozen=True, eq=False)
class Task:
    """A function and its options, declared into a :class:`~nbflow.Flow`.

    ``inputs`` are the function's parameter names in order; ``defaults`` those
    that have a default value. :attr:`code_key` identifies the code for caching
    (``given_code_key`` when the declarer hashed the code itself, as the notebook
    compiler does); ``key_extra`` (optional) returns more text to hash into the
    cache key at run time (the notebook compiler uses it for helper functions
    and globals).
    """

    name: str
    fn: Callable[..., Any]
    options: TaskOptions = field(default_factory=TaskOptions)
    inputs: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    is_async: bool = False
    #: a generator function that is not mapped: its items stream to the tasks that map it
    #: (see ``streams.py``)
    is_stream: bool = False
    #: the code's key when the declarer computed it; None: hashed from ``fn`` on first use
    given_code_key: str | None = None
    key_extra: Callable[[], str] | None = None
    source: str | None = None  # where it was declared, for messages ("cell 3", "file.py:12")
    #: a command task's command as declared (a string, or an argument list joined for
    #: display); None for a Python function
    command: str | None = None

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        name: str | None = None,
        options: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> Task:
        """Build a task from ``fn``; raises ``InvalidOptionError`` for bad options."""
        if not callable(fn):
            raise InvalidOptionError(str(name), "fn", f"must be callable, got {fn!r}")
        task_name = name if name is not None else getattr(fn, "__name__", None)
        if task_name == "<lambda>":
            raise InvalidOptionError("<lambda>", "name", "a lambda has no name: give it one "
                                     "with name= (an identifier, if other Python tasks take "
                                     "its result by parameter name)")
        problem = check_name(task_name)
        if problem is not None or not isinstance(task_name, str):
            raise InvalidOptionError(str(task_name), "name", problem or "must be a string")
        opts = make_options(task_name, options or {})
        inputs, defaults = _signature(task_name, fn)
        target = inspect.unwrap(fn) if hasattr(fn, "__wrapped__") else fn
        if extra.get("source") is None:
            extra["source"] = _where(target)
        if _constrained(target):  # a default must fit its own Annotated[..., Field(...)]
            from .typed_params import function_params

            for typed in function_params(target).values():
                if typed.constrained:
                    typed.check_default()
        is_async = _is_async(target)
        if is_async and opts.image is not None:
            raise InvalidOptionError(task_name, "image", "runs a function in a container, and an "
                                     "async def task cannot run there: declare it with def")
        is_stream = opts.map is None and _yields(target)
        _check_stream(task_name, opts, is_stream)
        if extra.get("code_key") is None and extra.get("key_extra") is None and \
                isinstance(target, types.FunctionType):
            from .key_parts import FunctionKey  # local: key_parts imports cache

            extra["key_extra"] = FunctionKey(target)  # helpers, local modules, packages
        return cls(
            name=task_name,
            fn=fn,
            options=opts,
            inputs=inputs,
            defaults=defaults,
            is_async=is_async,
            is_stream=is_stream,
            given_code_key=extra.pop("code_key", None) or None,
            **extra,
        )

    # Hashing the source (inspect.getsource tokenizes the file) costs ~50 µs, ten times
    # the rest of a declaration, and most declarations are never run with a cache (or are
    # redeclared before they run). So the key is computed when first asked for, from the
    # same function object: a function with changed code is a new function object, so a
    # new Task, and gets a new key. cached_property writes the instance __dict__
    # directly, which a frozen dataclass allows.
    @functools.cached_property
    def code_key(self) -> str:
        """A hash of the task's code (see :func:`code_hash`), computed on first use.

        A Python task's ``image=`` is part of it: the same code in another image is
        another computation (a command's key holds its image already).
        """
        key = self.given_code_key or code_hash(self.fn)
        if self.options.image is not None and self.command is None:
            key = hashlib.blake2b(f"{key}\0image={self.options.image}".encode(),
                                  digest_size=16).hexdigest()
        return key

    @property
    def key_parts(self) -> dict[str, str]:
        """The labelled parts of the last computed ``key_extra()``: helpers, local modules,
        package versions and globals (``{"package pandas": "2.2.3", ...}``), for run
        history and ``why``."""
        return dict(getattr(self.key_extra, "last", None) or {})

    def with_options(self, **options: Any) -> Task:
        """A copy of this task with some options changed (validated)."""
        merged = {
            k: getattr(self.options, k) for k in OPTION_NAMES
        }
        merged.update(options)
        opts = make_options(self.name, merged)
        _check_stream(self.name, opts, self.is_stream)  # as at declaration
        return replace(self, options=opts)

    def __repr__(self) -> str:
        return f"Task({self.name!r}, inputs={list(self.inputs)})"


def _check_stream(task: str, options: TaskOptions, is_stream: bool) -> None:
    """Refuse the options a streaming task cannot honour (yet), with what to do instead,
    and the stream options on a task that does not stream."""
    if not is_stream:
        for name in ("buffer", "unbounded"):
            if getattr(options, name) not in (None, False):
                raise InvalidOptionError(task, name, "is for streaming tasks (a generator "
                                         "function that is not mapped); this task does not stream")
        return
    why = {
        "retries": "items it yielded cannot be taken back; retry in the tasks that map it",
        "timeout": "a stream runs as long as it yields; stop it with run.cancel() or by "
                   "leaving flow.stream()",
        "run_if": "decide in the generator, or with run_if on the tasks that map it",
        "image": "a generator cannot run in a container",
    }
    for name, reason in why.items():
        if getattr(options, name) not in (None, 0):
            raise InvalidOptionError(task, name, f"is not available on a streaming task (a "
                                     f"generator function): {reason}")


def _signature(task: str, fn: Callable[..., Any]) -> tuple[tuple[str, ...], dict[str, Any]]:
    explicit = getattr(fn, "task_inputs", None)
    if isinstance(explicit, tuple):  # a spec's call: its inputs are names, not identifiers
        return explicit, dict(getattr(fn, "task_defaults", None) or {})
    fast = _plain_signature(fn)
    if fast is not None:
        return fast
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise InvalidOptionError(task, "fn", f"has no inspectable signature ({exc})") from exc
    inputs: list[str] = []
    defaults: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star = "*" if p.kind is p.VAR_POSITIONAL else "**"
            raise InvalidOptionError(
                task, "fn", f"takes {star}{p.name}; a task's inputs must be named parameters"
            )
        if p.kind is p.POSITIONAL_ONLY:
            raise InvalidOptionError(
                task, "fn", f"takes positional-only parameter {p.name!r}; use a named parameter"
            )
        inputs.append(p.name)
        if p.default is not _NO_DEFAULT:
            defaults[p.name] = p.default
    return tuple(inputs), defaults


_PLAIN_FLAGS = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS


def _constrained(target: Callable[..., Any]) -> bool:
    """True when an annotation of ``target`` may carry constraints (``Annotated``)."""
    annotations = getattr(target, "__annotations__", None)
    if not annotations or not isinstance(annotations, dict):
        return False
    # a string (``from __future__ import annotations``) may name an alias of one
    return any(isinstance(a, str) or hasattr(a, "__metadata__")
               for k, a in annotations.items() if k != "return")


def _is_async(target: Callable[..., Any]) -> bool:
    """``inspect.iscoroutinefunction``, with a cheap answer for a plain function."""
    if type(target) is types.FunctionType and not hasattr(target, "_is_coroutine_marker"):
        return bool(target.__code__.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(target)


def _yields(target: Callable[..., Any]) -> bool:
    """True for a generator function (``def`` or ``async def`` with ``yield``), or an object
    that says it streams (``is_stream``); a plain function's code flags say it at once."""
    if getattr(target, "is_stream", None) is True:
        return True
    if type(target) is types.FunctionType:
        return bool(target.__code__.co_flags & _GENERATOR_FLAGS)
    return inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target)


_GENERATOR_FLAGS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR


def _plain_signature(fn: Callable[..., Any]) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """Inputs and defaults of a plain function read off its code object, else None.

    ``inspect.signature`` costs more than the rest of a declaration; for a plain
    ``def`` with only named parameters (nearly every task) the code object says
    the same thing directly. Anything else (``functools.wraps`` wrappers, an
    explicit ``__signature__``, partials, callable objects, ``*args``,
    positional-only parameters) returns None and takes the general path, which
    also words the errors.
    """
    if type(fn) is not types.FunctionType or hasattr(fn, "__wrapped__") or hasattr(
        fn, "__signature__"
    ):
        return None
    code = fn.__code__
    if code.co_flags & _PLAIN_FLAGS or code.co_posonlyargcount:
        return None
    n_pos = code.co_argcount
    names = code.co_varnames[: n_pos + code.co_kwonlyargcount]
    defaults: dict[str, Any] = {}
    if fn.__defaults__:  # they belong to the last positional parameters
        defaults.update(zip(names[n_pos - len(fn.__defaults__): n_pos], fn.__defaults__))
    if fn.__kwdefaults__:
        defaults.update((n, fn.__kwdefaults__[n]) for n in names[n_pos:] if n in fn.__kwdefaults__)
    return names, defaults


def _where(target: Callable[..., Any]) -> str | None:
    """``file:line`` of an (unwrapped) function."""
    code = getattr(target, "__code__", None)
    if code is None:
        return None
    return f"{code.co_filename}:{code.co_firstlineno}"
