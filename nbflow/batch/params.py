"""A notebook's parameters: read from its ``parameters`` cell with ``ast`` (never executed).

Each top-level assignment of the cell (``name = value`` or ``name: type = value``)
is a parameter. A literal value is its default and gives its type; an
annotation (``int``, ``float``, ``str``, ``bool``, ``list``, ``dict``) wins over
the literal. A comment on the same line, or the comment lines just above,
is its description. Anything else (imports, expressions) is left alone.

From these come a JSON Schema (:func:`to_schema`), a fillable YAML form
(:func:`to_yaml_form`) that ``nbflow run -f`` reads back, and the checks of
``-p NAME VALUE`` and ``-f FILE`` values (:func:`resolve`), all before any
kernel starts.
"""

from __future__ import annotations

import ast
import io
import math
import tokenize
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .. import yaml_safe
from ..errors import BatchInputError, suggest
from ..jsonvalues import dumps
from ..yaml_safe import short

if TYPE_CHECKING:
    from ..typed_params import TypedParam

#: Python type -> JSON Schema type
_TYPES: dict[type, str] = {
    bool: "boolean", int: "integer", float: "number", str: "string",
    list: "array", tuple: "array", dict: "object", type(None): "null",
}
#: annotation text -> JSON Schema type
_ANNOTATIONS = {"int": "integer", "float": "number", "str": "string", "bool": "boolean",
                "list": "array", "tuple": "array", "dict": "object"}
_BOOL_TEXT = {"true": True, "yes": True, "on": True, "1": True,
              "false": False, "no": False, "off": False, "0": False}


@dataclass(frozen=True)
class Parameter:
    """One assignment of the ``parameters`` cell."""

    name: str
    #: JSON Schema type ("integer", "number", ...), None when it cannot be told
    type: str | None
    #: the default value, when the right-hand side is a literal
    default: Any
    has_default: bool
    #: the right-hand side as written
    source: str
    #: the comment on its line (or just above), without the ``#``
    help: str
    #: line in the cell (1-based)
    line: int
    #: its type and constraints for pydantic (an annotation, a spec's keywords), if any
    typed: TypedParam | None = None
    #: where the default comes from, for messages
    declared: str = "in the parameters cell"


@dataclass(frozen=True)
class ParametersCell:
    """The parameters of one notebook, and where they come from."""

    notebook: str
    #: index of the cell tagged ``parameters`` (0-based, as papermill counts)
    index: int
    parameters: dict[str, Parameter]
    #: "notebook" (a parameter without a literal default is computed by the notebook),
    #: "spec" or "flow" (one without a default is required)
    kind: str = "notebook"


def read_notebook(path: str | Path) -> Any:
    """The notebook at ``path`` (an ``nbformat`` node); BatchInputError if it cannot be read."""
    import nbformat

    p = Path(path)
    if not p.exists():
        msg = f"notebook {str(path)!r} does not exist"
        raise BatchInputError(msg)
    if p.is_dir():
        msg = f"{str(path)!r} is a directory, not a notebook"
        raise BatchInputError(msg)
    try:
        return nbformat.read(p, as_version=4)  # type: ignore[no-untyped-call]
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"{str(path)!r} is not a readable notebook (.ipynb JSON): {first}"
        raise BatchInputError(msg) from exc


def parameters_cell(nb: Any, notebook: str) -> ParametersCell | None:
    """The parameters of ``nb`` (from its cell tagged ``parameters``), or None without one."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return ParametersCell(notebook, index, parse_parameters(cell.source, notebook, index))
    return None


def parse_parameters(source: str, notebook: str = "<notebook>", index: int = 0) -> dict[str, Parameter]:
    """The parameters assigned by the source of a ``parameters`` cell (not executed)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        msg = (f"{notebook}: the parameters cell (cell {index}) is not valid Python "
               f"(line {exc.lineno}: {exc.msg}); fix it so its values can be read")
        raise BatchInputError(msg) from None
    comments = _comments(source)
    out: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, annotation = node.targets[0], None
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, annotation = node.target, node.annotation
        else:
            continue
        if not isinstance(target, ast.Name):
            continue
        value = node.value
        assert value is not None
        try:
            default, has_default = ast.literal_eval(value), True
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            default, has_default = None, False
        kind, typed = None, None
        if annotation is not None:
            typed = _typed(target.id, ast.unparse(annotation), default, has_default,
                           _help(comments, node), f"{notebook} cell {index}, line {node.lineno}")
            kind = _ANNOTATIONS.get(ast.unparse(annotation).split("[")[0].strip())
            if typed is not None:
                found = typed.schema().get("type")
                kind = found if isinstance(found, str) and found != "null" else kind
        if kind is None and has_default:
            kind = _TYPES.get(type(default))
            if kind == "null":
                kind = None  # None says nothing about the type a value should have
        if isinstance(default, tuple):
            default = list(default)
        out[target.id] = Parameter(
            name=target.id, type=kind, default=default, has_default=has_default,
            source=ast.unparse(value), help=(typed.description if typed else "")
            or _help(comments, node), line=node.lineno, typed=typed,
        )
    return out


def _typed(name: str, text: str, default: Any, has_default: bool, comment: str,
           where: str) -> TypedParam | None:
    """A parameter's annotation in the cell, for pydantic; its default must fit it."""
    from ..errors import InvalidParameterError
    from ..typed_params import TypedParam, eval_annotation

    annotation = eval_annotation(text, where)
    if annotation is None:
        return None
    typed = TypedParam(name, annotation, default, has_default,
                       _field_description(annotation) or comment, where)
    try:
        typed.check_default()
    except InvalidParameterError as exc:
        raise BatchInputError(f"{where}: {exc}") from None
    return typed


def _field_description(annotation: Any) -> str:
    for meta in getattr(annotation, "__metadata__", ()):
        if getattr(meta, "description", None):
            return str(meta.description)
    return ""


def _comments(source: str) -> dict[int, str]:
    """Comment text by line number."""
    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


def _help(comments: dict[int, str], node: ast.stmt) -> str:
    end = node.end_lineno or node.lineno
    if end in comments:
        return comments[end]
    above = []
    line = node.lineno - 1
    while line in comments:
        above.append(comments[line])
        line -= 1
    return " ".join(reversed(above))


# -- output formats --------------------------------------------------------------------------


def to_schema(cell: ParametersCell) -> dict[str, Any]:
    """The parameters as a JSON Schema (draft 2020-12) of the mapping ``-f`` accepts."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for p in cell.parameters.values():
        if not p.has_default and cell.kind != "notebook":
            required.append(p.name)
        if p.typed is not None:
            prop = p.typed.schema()
            if p.help and "description" not in prop:
                prop["description"] = p.help
            properties[p.name] = prop
            continue
        prop = {}
        if p.type is not None:
            prop["type"] = p.type
            if p.type == "array" and p.has_default:
                item_types = {_TYPES.get(type(v)) for v in p.default}
                if len(item_types) == 1 and None not in item_types:
                    prop["items"] = {"type": item_types.pop()}
        if p.has_default:
            prop["default"] = p.default
        elif cell.kind == "notebook":  # the notebook computes it: not required of a job
            prop["x-nbflow-expression"] = p.source
        if p.help:
            prop["description"] = p.help
        properties[p.name] = prop
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"Parameters of {Path(cell.notebook).name}",
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def to_yaml_form(cell: ParametersCell, kind: str = "notebook") -> str:
    """A YAML file with every parameter and its default, to edit and pass to ``-f``.

    ``kind`` is "notebook" (parameters from its ``parameters`` cell) or "spec".
    """
    name = Path(cell.notebook).name
    source = "its `parameters` cell" if kind == "notebook" else "its `parameters` section"
    lines = [
        f"# Parameters of {name} (from {source}).",
        f"# Edit the values, then: nbflow run {cell.notebook} -f THIS_FILE",
        f"# A parameter left out keeps the default of the {kind}.",
    ]
    for p in cell.parameters.values():
        about = p.type or "any type"
        lines.append(f"# {p.name}: {about}" + (f". {p.help}" if p.help else ""))
        if p.has_default:
            text = yaml.safe_dump({p.name: p.default}, default_flow_style=False,
                                  sort_keys=False, allow_unicode=True, width=10**6)
            lines.append(text.rstrip("\n"))
        elif cell.kind == "notebook":
            lines.append(f"# {p.name}: ...   (the notebook computes it: {p.source})")
        else:
            lines.append(f"{p.name}:   # required: it has no default")
    return "\n".join(lines) + "\n"


# -- checking values ---------------------------------------------------------------------


def _describe(p: Parameter) -> str:
    default = f"default {p.source} {p.declared}" if p.source else "no default"
    return f"parameter {p.name!r} is {_article(p.type)} ({default})"


def _fits(p: Parameter, value: Any, where: str) -> Any:
    """``value`` checked and coerced by the parameter's declared type, if it has one."""
    if p.typed is None:
        return value
    from ..errors import InvalidParameterError

    try:
        return p.typed.check(value)
    except InvalidParameterError as exc:
        raise BatchInputError(f"{where}: {exc}") from None


def _article(kind: str | None) -> str:
    if kind is None:
        return "untyped"
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def parse_text(p: Parameter, text: str) -> Any:
    """The value of ``-p NAME TEXT`` for parameter ``p``; BatchInputError if it does not parse."""
    kind = p.type
    shown = repr(short(text))
    problem = f"-p {p.name} {shown}: {_describe(p)}, and {shown} is not {_article(kind)}"
    value: Any
    try:
        if kind == "string":
            value = text
        elif kind == "integer":
            value = int(text.replace("_", ""))
        elif kind == "number":
            value = float(text)
        elif kind == "boolean":
            value = _BOOL_TEXT[text.strip().lower()]
        else:
            value = yaml_safe.load(text) if text.strip() else ""
    except (ValueError, KeyError, yaml.YAMLError):
        raise BatchInputError(problem) from None
    if kind is not None and not (kind == "number" and isinstance(value, float)) \
            and _TYPES.get(type(value)) != kind:
        raise BatchInputError(problem)
    check_finite(value, f"-p {p.name} {shown}")
    return _fits(p, value, f"-p {p.name} {shown}")


def check_value(p: Parameter, value: Any, where: str) -> Any:
    """A value read from YAML/JSON for parameter ``p``, converted (int -> float for numbers)
    and checked against its declared constraints."""
    check_finite(value, where)
    kind = p.type
    got = _TYPES.get(type(value))
    if kind is None or got == kind:
        return _fits(p, list(value) if isinstance(value, tuple) else value, where)
    if kind == "number" and got == "integer":
        return _fits(p, float(value), where)
    shown = short(dumps(value))
    msg = f"{where}: {_describe(p)}, and {shown} is {_article(got)}"
    raise BatchInputError(msg)


def check_finite(value: Any, where: str) -> None:
    """Refuse NaN and infinities anywhere in a parameter value: JSON cannot hold them."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            msg = (f"{where}: {item} is not a finite number; parameters are written as JSON "
                   "(in the output notebook and the sweep summaries), which has no NaN or "
                   "infinity, so they are refused")
            raise BatchInputError(msg)
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def check_name(cell: ParametersCell, name: str, where: str) -> Parameter:
    """The parameter called ``name``; BatchInputError suggesting close names otherwise."""
    p = cell.parameters.get(name)
    if p is None:
        known = ", ".join(cell.parameters) or "none"
        msg = (f"{where}: {cell.notebook} has no parameter {short(name)!r}."
               + suggest(name, cell.parameters) + f" Its parameters: {known}.")
        raise BatchInputError(msg)
    return p


def read_yaml_file(path: str | Path, what: str) -> Any:
    """A YAML/JSON file's data (safe loader); BatchInputError naming ``what`` if unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read {what} {str(path)!r}: {exc.strerror or exc}"
        raise BatchInputError(msg) from None
    try:
        return yaml_safe.load(text)
    except yaml.YAMLError as exc:
        problem, line = yaml_safe.describe(exc)
        at = f" (line {line})" if line is not None else ""
        msg = f"{what} {str(path)!r} is not valid YAML/JSON{at}: {problem}"
        raise BatchInputError(msg) from None


def load_params_file(path: str | Path) -> dict[str, Any]:
    """A YAML/JSON mapping of parameter values (``-f``); BatchInputError if unreadable."""
    data = read_yaml_file(path, "parameters file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        msg = (f"parameters file {str(path)!r} must hold a mapping of name: value, "
               f"not a {type(data).__name__}")
        raise BatchInputError(msg)
    return data


def resolve(
    cell: ParametersCell | None,
    notebook: str,
    pairs: Sequence[tuple[str, str]] = (),
    files: Iterable[str | Path] = (),
    values: Mapping[str, Any] | None = None,
    where: str = "",
) -> dict[str, Any]:
    """Check and convert parameter values: ``files`` (``-f``), then ``values``, then
    ``pairs`` (``-p NAME TEXT``), later ones winning. Raises BatchInputError."""
    file_list = list(files)
    if cell is None:
        if pairs or file_list or values:
            msg = (f"{notebook} has no cell tagged 'parameters', so -p/-f cannot set anything; "
                   "tag the cell that assigns the defaults with 'parameters' "
                   "(JupyterLab: the property inspector's cell tags)")
            raise BatchInputError(msg)
        return {}
    out: dict[str, Any] = {}
    for f in file_list:
        for name, value in load_params_file(f).items():
            p = check_name(cell, str(name), f"{f}")
            out[p.name] = check_value(p, value, f"{f}: {p.name}")
    for name, value in (values or {}).items():
        p = check_name(cell, str(name), where or "parameters")
        out[p.name] = check_value(p, value, f"{where or 'parameters'}: {p.name}")
    for name, text in pairs:
        p = check_name(cell, name, f"-p {short(name)}")
        out[p.name] = parse_text(p, text)
    return out
