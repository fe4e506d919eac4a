"""Cell body -> task function.

A ``%%nbflow task NAME`` cell body is parsed with :mod:`ast` (never run) to
find the names it reads before assigning them. At plan time each such name is
one of:

- an *upstream*: a task of the flow; it becomes a parameter of the function;
- a *notebook variable* (data: numbers, strings, frames, ...): also a parameter,
  so the flow resolves it from the notebook namespace (or ``-p name=value``)
  and its value is part of the cache key;
- a *notebook global* (modules, functions, classes, other callables, builtins):
  read from the notebook namespace when the task runs; the cache key covers the
  source of notebook functions and classes (transitively) and the values of the
  notebook variables those read, through :class:`CellKey`.

The function is compiled from the cell's own AST under a filename registered in
:mod:`linecache` with the whole cell text, so tracebacks point at the cell's
lines.
"""

from __future__ import annotations

import ast
import builtins
import copy
import dataclasses
import hashlib
import linecache
import symtable
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..key_parts import IGNORED, Parts, join_parts
from ..task import Task

if TYPE_CHECKING:
    from ..flow import Flow

#: IPython's own history/helper names: never dependencies
_IGNORED = IGNORED
_CELL_FN = "__nbflow_cell__"


@dataclass(frozen=True, eq=False)
class CellBody:
    """The analysis of one task cell's body."""

    #: the task name
    name: str
    #: the cell body (without the ``%%nbflow`` line)
    source: str
    #: the filename the code is compiled under (registered in linecache)
    filename: str
    #: "cell In[3]" or similar, for messages
    label: str
    #: the body's statements, line numbers as in the cell
    tree: ast.Module
    #: names read before being assigned (in the top scope or nested scopes) -> first cell line
    reads: dict[str, int]
    #: of ``reads``, those the body also assigns: they must be parameters of the function
    rebound: frozenset[str]
    #: names declared ``global`` in the body
    declared_global: frozenset[str]
    #: "name" (the body assigns NAME), "expr" (last expression), or "none"
    result: str
    is_async: bool
    #: hash of the code (AST, so comments and blank lines do not count)
    code_key: str


def parse_cell(name: str, source: str, *, label: str, filename: str | None = None,
               header: str | None = None) -> CellBody:
    """Analyse a task cell body.

    ``header`` is the cell's first line (the ``%%nbflow`` line); the body's line
    1 is the cell's line 2, and the whole cell is registered in :mod:`linecache`
    under ``filename`` so tracebacks show the cell's lines. Raises
    :class:`SyntaxError` with the cell's filename and line numbers.
    """
    filename = filename or f"<nbflow-cell {name}>"
    offset = 0 if header is None else header.count("\n") + 1
    cell_text = source if header is None else header.rstrip("\n") + "\n" + source
    _register_source(filename, cell_text)
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise _shift_syntax_error(exc, filename, offset) from None
    if offset:
        ast.increment_lineno(tree, offset)

    reads, rebound, declared_global = _free_names(tree, filename)
    reads.pop(name, None)  # the task's own name is its result, never an input
    rebound_inputs = frozenset(rebound - {name})

    assigned = _top_level_assigned(tree)
    if name in assigned:
        result = "name"
    elif tree.body and isinstance(tree.body[-1], ast.Expr):
        result = "expr"
    else:
        result = "none"
    is_async = _has_top_level_await(tree)
    h = hashlib.blake2b(digest_size=16)
    h.update(ast.dump(tree, include_attributes=False).encode())
    h.update(f"\0{result}\0{is_async}".encode())
    return CellBody(name, source, filename, label, tree, reads, rebound_inputs,
                    frozenset(declared_global), result, is_async, h.hexdigest())


def _register_source(filename: str, text: str) -> None:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    # mtime None: linecache.checkcache keeps the entry (as IPython does for cells)
    linecache.cache[filename] = (len(text), None, lines, filename)


def _shift_syntax_error(exc: SyntaxError, filename: str, offset: int) -> SyntaxError:
    lineno = (exc.lineno or 1) + offset
    end = None if exc.end_lineno is None else exc.end_lineno + offset
    args = (filename, lineno, exc.offset, exc.text, end, exc.end_offset)
    return SyntaxError(exc.msg, args)


# -- name analysis -----------------------------------------------------------------------


def _free_names(tree: ast.Module, filename: str) -> tuple[dict[str, int], set[str], set[str]]:
    """Names read before assignment: ``(name -> first line, rebound names, global names)``."""
    first_line: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and \
                node.lineno < first_line.get(node.id, node.lineno + 1):
            first_line[node.id] = node.lineno

    wrapper = ast.parse(f"def {_CELL_FN}():\n    pass\n")
    fn = wrapper.body[0]
    assert isinstance(fn, ast.FunctionDef)
    fn.body = list(tree.body) or [ast.Pass()]
    try:
        table = symtable.symtable(ast.unparse(wrapper), filename, "exec")
    except SyntaxError as exc:  # e.g. `nonlocal` at the top of the body
        raise SyntaxError(exc.msg, (filename, _find_line(tree, exc), None, None)) from None
    top = next(t for t in table.get_children() if t.get_name() == _CELL_FN)

    names: set[str] = set()
    declared: set[str] = set()

    def walk(t: symtable.SymbolTable) -> None:
        for sym in t.get_symbols():
            if sym.is_declared_global():
                declared.add(sym.get_name())
                if sym.is_referenced():
                    names.add(sym.get_name())
            elif sym.is_global() and sym.is_referenced():
                names.add(sym.get_name())
        for child in t.get_children():
            walk(child)

    walk(top)
    order = _Order()
    for stmt in tree.body:
        order.visit(stmt)
    local = {s.get_name() for s in top.get_symbols() if s.is_local()} - declared
    rebound = order.early & local
    names |= rebound
    names -= _IGNORED
    reads = {n: first_line.get(n, 0) for n in sorted(names, key=lambda n: (first_line.get(n, 0), n))}
    return reads, rebound, declared


def _find_line(tree: ast.Module, exc: SyntaxError) -> int:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Nonlocal, ast.Global)):
            return node.lineno
    return 1


class _Order(ast.NodeVisitor):
    """Walks the top scope in evaluation order; ``early`` gets names read before bound."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.early: set[str] = set()

    def _load(self, name: str) -> None:
        if name not in self.bound:
            self.early.add(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self._load(node.id)
        elif isinstance(node.ctx, ast.Store):
            self.bound.add(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self._load(node.target.id)
        self.visit(node.value)
        self.visit(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in [*node.body, *node.orelse]:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        for dec in node.decorator_list:
            self.visit(dec)
        if isinstance(node, ast.ClassDef):
            for base in [*node.bases, *(k.value for k in node.keywords)]:
                self.visit(base)
        else:
            for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]:
                self.visit(default)
        self.bound.add(node.name)  # the body is a nested scope: symtable covers it

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _function

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]:
            self.visit(default)

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp) -> None:
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            self.bound.add(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.bound.add(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self.bound.add(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.bound.add(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self.bound.add(node.rest)


def _top_level_assigned(tree: ast.Module) -> set[str]:
    order = _Order()
    for stmt in tree.body:
        order.visit(stmt)
    return order.bound


def _has_top_level_await(tree: ast.Module) -> bool:
    nested = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
            return True
        if isinstance(node, nested):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return False


# -- the function ------------------------------------------------------------------------


def build_function(cell: CellBody, inputs: Iterable[str],
                   namespace: dict[str, Any]) -> Callable[..., Any]:
    """Compile the body into ``def NAME(*inputs)`` whose globals are ``namespace``."""
    args = ", ".join(inputs)
    kind = "async def" if cell.is_async else "def"
    wrapper = ast.parse(f"{kind} {cell.name}({args}):\n    pass\n")
    fn = wrapper.body[0]
    assert isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
    body = [copy.deepcopy(stmt) for stmt in cell.tree.body]
    last_line = body[-1].end_lineno if body else 1
    if cell.result == "name":
        ret = ast.Return(value=ast.Name(id=cell.name, ctx=ast.Load()))
        body.append(_located(ret, last_line))
    elif cell.result == "expr":
        last = body[-1]
        assert isinstance(last, ast.Expr)
        body[-1] = ast.copy_location(ast.Return(value=last.value), last)
    elif not body:
        body = [_located(ast.Pass(), 1)]
    fn.body = body
    for node in ast.walk(wrapper):  # the def line is the cell's first line
        if node is fn or isinstance(node, ast.arguments | ast.arg):
            for attr in ("lineno", "end_lineno"):
                if hasattr(node, attr):
                    setattr(node, attr, 1)
    ast.fix_missing_locations(wrapper)
    code = compile(wrapper, cell.filename, "exec", dont_inherit=True)
    fcode = next(c for c in code.co_consts if isinstance(c, types.CodeType))
    function = types.FunctionType(fcode, namespace, cell.name)
    function.__qualname__ = cell.name
    function.__doc__ = f"nbflow task cell {cell.name!r} ({cell.label})"
    return function


def _located(node: ast.stmt, line: int | None) -> ast.stmt:
    node.lineno = node.end_lineno = line or 1
    node.col_offset = node.end_col_offset = 0
    return node


# -- classification and the cache key ---------------------------------------------------------


def is_global_value(value: Any) -> bool:
    """True for what a cell reads at call time (modules, functions, classes, callables)."""
    return isinstance(value, types.ModuleType) or callable(value)


def classify(cell: CellBody, tasks: Iterable[str],
             namespace: Mapping[str, Any] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split the names a cell reads into ``(inputs, call-time globals)``.

    Inputs are tasks, notebook variables holding data, names the body reassigns,
    and names defined nowhere (the flow reports those before running).
    """
    task_names = set(tasks)
    ns = namespace or {}
    inputs: list[str] = []
    globals_: list[str] = []
    for name in cell.reads:
        if name in cell.declared_global:
            globals_.append(name)
        elif name in task_names or name in cell.rebound:
            inputs.append(name)
        elif name in ns:
            (globals_ if is_global_value(ns[name]) else inputs).append(name)
        elif hasattr(builtins, name):
            globals_.append(name)
        else:
            inputs.append(name)
    return tuple(inputs), tuple(globals_)


@dataclass(eq=False)
class CellKey:
    """``Task.key_extra`` of a task cell; also carries the cell's analysis.

    Called when the task's cache key is computed: the parts the body reaches
    (:class:`nbflow.key_parts.Parts`): notebook functions and classes it calls
    (their code, closures and defaults, transitively), the notebook variables
    those read, local modules (their files) and package versions.
    ``components()`` gives the parts by label, for ``%nbflow why``.
    """

    cell: CellBody
    namespace: dict[str, Any]
    globals: tuple[str, ...]
    #: the components of the last computed key (label -> hash or version)
    last: dict[str, str] = field(default_factory=dict)

    def components(self) -> dict[str, str]:
        parts = Parts(self.namespace, notebook=True)
        for name in self.globals:
            parts.name(name)
        return parts.out

    def __call__(self) -> str:
        parts = self.components()
        self.last = parts
        return join_parts(parts)


# -- tasks --------------------------------------------------------------------------------------


def cell_task(cell: CellBody, flow: Flow, namespace: dict[str, Any],
              options: Mapping[str, Any]) -> Task:
    """The :class:`~nbflow.Task` of a task cell, for ``flow`` as it is now."""
    tasks = set(flow.tasks) | {cell.name}
    inputs, globals_ = classify(cell, tasks - {cell.name}, namespace)
    fn = build_function(cell, inputs, namespace)
    return Task.from_function(fn, name=cell.name, options=options, code_key=cell.code_key,
                              key_extra=CellKey(cell, namespace, globals_), source=cell.label)


def cell_of(task: Task) -> CellBody | None:
    """The cell analysis of a task declared by a ``%%nbflow task`` cell, else None."""
    key = task.key_extra
    return key.cell if isinstance(key, CellKey) else None


def resync(flow: Flow) -> list[str]:
    """Rebuild task cells whose split of names into inputs and globals changed."""
    changed = []
    tasks = flow.tasks
    for name, task in tasks.items():
        key = task.key_extra
        if not isinstance(key, CellKey):
            continue
        inputs, globals_ = classify(key.cell, set(tasks) - {name}, key.namespace)
        if inputs == task.inputs and globals_ == key.globals:
            continue
        fn = build_function(key.cell, inputs, key.namespace)
        new = dataclasses.replace(task, fn=fn, inputs=inputs,
                                  key_extra=CellKey(key.cell, key.namespace, globals_))
        flow.replace(new)
        changed.append(name)
    return changed
