"""CryoCloud's ``runIf`` expressions, read with :mod:`ast` and evaluated by a walker, never ``eval``'d.

A ``runIf`` names values by ``source:name`` and compares them as strings, as
CryoCloud does (it substitutes each reference by its value quoted as a
string)::

    output:Check.status != 'skip'
    output:Input.mode == 'fast' and not option:dryrun == 'True'
    output:Classify.kind in ('ice', 'water')

Sources are ``output`` (``Node.key`` or ``parent.key``) and ``option``
(also ``options``), a workflow option. The grammar is a Python expression made
of comparisons (``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``,
``not in``), ``and``, ``or``, ``not``, parentheses, string literals and
tuples or lists of strings. Anything else (calls, attributes, arithmetic,
numbers) is refused when the workflow is read, with its column.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Ref", "RunIf", "RunIfError", "parse_runif"]

#: ``source:name``, the name running to the next blank, operator or parenthesis
_REF = re.compile(r"\b(output|options?)\s*:\s*([^\s!<>=(),]+)")
_COMPARE: dict[type[ast.cmpop], Callable[[object, object], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,  # type: ignore[operator]
    ast.LtE: lambda a, b: a <= b,  # type: ignore[operator]
    ast.Gt: lambda a, b: a > b,  # type: ignore[operator]
    ast.GtE: lambda a, b: a >= b,  # type: ignore[operator]
    ast.In: lambda a, b: a in b,  # type: ignore[operator]
    ast.NotIn: lambda a, b: a not in b,  # type: ignore[operator]
}


class RunIfError(ValueError):
    """A ``runIf`` expression that cannot be read; ``column`` is 1-based (0 when unknown)."""

    def __init__(self, problem: str, column: int = 0) -> None:
        super().__init__(problem)
        self.problem = problem
        self.column = column


@dataclass(frozen=True)
class Ref:
    """A value a ``runIf`` reads: ``source`` is ``output`` or ``option``; ``name`` as written."""

    source: str
    name: str

    @property
    def node(self) -> str:
        """The node of an ``output`` reference (``parent`` for the calling parent)."""
        return self.name.partition(".")[0]

    @property
    def key(self) -> str:
        """The key of an ``output`` reference."""
        return self.name.partition(".")[2]

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


@dataclass(frozen=True)
class RunIf:
    """A parsed ``runIf``: the references it reads, and a tree to evaluate."""

    text: str
    refs: tuple[Ref, ...]
    _tree: ast.expr

    def evaluate(self, lookup: Callable[[Ref], object]) -> bool:
        """True when the node should run; ``lookup`` gives each reference's value."""
        values = [str(lookup(ref)) for ref in self.refs]  # strings, as CryoCloud compares
        return bool(_eval(self._tree, values))


def parse_runif(text: str) -> RunIf:
    """Read a ``runIf`` expression; :class:`RunIfError` says what is wrong and where."""
    if not isinstance(text, str) or not text.strip():
        raise RunIfError("a runIf must be a non-empty string such as \"output:Node.key != 'x'\"")
    refs: list[Ref] = []

    def placeholder(match: re.Match[str]) -> str:
        source = "option" if match.group(1).startswith("option") else "output"
        ref = Ref(source, match.group(2))
        if source == "output" and (not ref.node or not ref.key or "." in ref.key):
            msg = f"{match.group(0)!r}: an output reference is 'output:Node.key'"
            raise RunIfError(msg, match.start() + 1)
        refs.append(ref)
        # same width, so that columns in syntax errors still point into the original text
        return f"_{len(refs) - 1}".ljust(len(match.group(0)), "_")

    source = _REF.sub(placeholder, text.strip())
    if not refs:
        raise RunIfError("a runIf reads at least one value: 'output:Node.key' or 'option:NAME'")
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError as exc:
        raise RunIfError(f"not a valid expression: {exc.msg}", exc.offset or 0) from None
    _check(tree, len(refs))
    return RunIf(text, tuple(refs), tree)


def _check(node: ast.AST, n_refs: int) -> None:
    """Refuse every construct outside the small grammar, naming it and its column."""
    col = getattr(node, "col_offset", -1) + 1
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, n_refs)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        _check(node.operand, n_refs)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise RunIfError(f"the operator {type(op).__name__} is not allowed in a runIf", col)
        for operand in (node.left, *node.comparators):
            _check(operand, n_refs)
    elif isinstance(node, ast.Name) and node.id.startswith("_") and node.id.strip("_").isdigit():
        if int(node.id.strip("_")) >= n_refs:  # pragma: no cover - placeholders are ours
            raise RunIfError(f"unknown reference {node.id!r}", col)
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, str):
            raise RunIfError(f"{node.value!r}: values are compared as strings (as CryoCloud "
                             f"does), so write it as a string: {str(node.value)!r}", col)
    elif isinstance(node, (ast.Tuple, ast.List)):
        for item in node.elts:
            _check(item, n_refs)
    elif isinstance(node, ast.Name):
        raise RunIfError(f"{node.id!r} is not a value: name one as 'output:Node.key' or "
                         "'option:NAME', or quote a literal", col)
    else:
        raise RunIfError(f"{type(node).__name__} is not allowed in a runIf (only comparisons, "
                         "and/or/not, and string literals)", col)


def _eval(node: ast.expr, values: list[str]) -> object:
    if isinstance(node, ast.BoolOp):
        results = (_eval(v, values) for v in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.UnaryOp):
        return not _eval(node.operand, values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, values)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, values)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Name):
        return values[int(node.id.strip("_"))]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_eval(item, values) for item in node.elts)
    raise RunIfError(f"cannot evaluate {type(node).__name__}")  # pragma: no cover - checked
