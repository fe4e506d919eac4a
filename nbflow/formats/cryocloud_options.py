"""A CryoCloud workflow's ``options``: nbflow parameters, command-line options and triggers.

CryoCloud makes each workflow option a command-line option of ``ccworkflow``::

    "options": {"items": {"help": "what to process", "default": "a,b", "type": "list"},
                "verbose": {"help": "say more", "type": "bool"}}

- a ``bool`` option is a flag (``--verbose``), a boolean parameter;
- a ``list`` option is comma-separated (``--items a,b,c``), a list parameter
  (a string default is split the same way);
- a ``json`` option is JSON text or the path of a JSON file, a parameter of any type;
- any other option is a string (``--name value``), kept as written.

:func:`option_parser` builds the :mod:`argparse` parser for ``nbflow run
wf.json``; :func:`parse_options` turns its command line into parameter values.
:func:`triggers` says what ``nbflow serve`` should watch for a workflow whose
input node is a ``dirwatcher`` or a ``netwatcher``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import suggest
from ..spec import Spec

__all__ = ["option_parameters", "option_parser", "parse_options", "triggers", "used_options"]

OPTION_KEYS = ("help", "default", "type")
_RUNIF_OPTION = re.compile(r"\b(options?)\s*:\s*([^\s!<>=(),]+)")
OPTION_TYPES = ("bool", "list", "json", "string")


def _options(spec: Spec) -> dict[str, Any]:
    options = spec.data["workflow"].get("options") or {}
    if not isinstance(options, dict):
        raise spec.error("options must be a mapping of option names", ("workflow", "options"))
    return options


def used_options(spec: Spec) -> set[str]:
    """The options some node reads (in its args or its runIf); the others have no use here."""
    used: set[str] = set()

    def visit(raw: Any) -> None:
        if not isinstance(raw, dict):
            return
        for value in (raw.get("args") or {}).values():
            option = value.get("option", value.get("options")) if isinstance(value, dict) else None
            if isinstance(option, str):
                used.add(option.strip())
        if isinstance(raw.get("runIf"), str):
            used.update(m.group(2) for m in _RUNIF_OPTION.finditer(raw["runIf"]))
        for child in raw.get("children") or []:
            visit(child)

    for raw in spec.data["workflow"].get("nodes") or []:
        visit(raw)
    return used


def option_parameters(spec: Spec, *, unused: bool = True) -> dict[str, dict[str, Any]]:
    """The workflow's options as nbflow spec parameters (checked, with their help).

    ``unused=False`` leaves out the options no node reads (nbflow refuses a
    parameter that no task takes).
    """
    params: dict[str, dict[str, Any]] = {}
    used = None if unused else used_options(spec)
    for name, info in _options(spec).items():
        where = ("workflow", "options", name)
        if not isinstance(info, dict):
            raise spec.error("an option is a mapping with 'help', 'default' and 'type'", where)
        for key in info:
            if key not in OPTION_KEYS:
                raise spec.error(f"{key!r} is not an option key." + suggest(key, OPTION_KEYS),
                                 (*where, key))
        kind = info.get("type", "string")
        if kind not in OPTION_TYPES:
            raise spec.error(f"option type {kind!r} is not one of bool, list, json (or none, a "
                             "string)." + suggest(str(kind), OPTION_TYPES), (*where, "type"))
        default = info.get("default")
        param: dict[str, Any]
        if kind == "bool":
            if not isinstance(default, (bool, type(None))):
                raise spec.error("the default of a bool option is true or false",
                                 (*where, "default"))
            param = {"type": "boolean", "default": bool(default)}
        elif kind == "list":
            if isinstance(default, str):
                default = default.split(",")
            if not isinstance(default, (list, type(None))):
                raise spec.error("the default of a list option is a list or comma-separated "
                                 "text", (*where, "default"))
            param = {"type": "list", "default": default or []}
        elif isinstance(default, str):
            param = {"type": "string" if kind == "string" else "any", "default": default}
        else:  # no default: None, as CryoCloud gives an option nobody set
            param = {"type": "any", "default": default}
        if info.get("help"):
            param["description"] = str(info["help"])
        if used is None or name in used:
            params[str(name)] = param
    return params


def option_parser(spec: Spec, *, add_help: bool = False,
                  prog: str | None = None) -> argparse.ArgumentParser:
    """An :mod:`argparse` parser of the workflow's options (``add_help=False``: usable as a parent).

    Every option is ``--NAME``, with its help and default in ``--help``; values
    default to :data:`argparse.SUPPRESS`, so only the options given appear.
    """
    parser = argparse.ArgumentParser(prog=prog, add_help=add_help, description=str(
        spec.data["workflow"].get("description") or ""))
    group = parser.add_argument_group("workflow options")
    for name, param in option_parameters(spec, unused=False).items():
        info = _options(spec)[name]
        shown = f"{param.get('description', '')} (default: {param['default']!r})".strip()
        shown = shown.replace("%", "%%")  # argparse formats help with %
        kind = info.get("type", "string")
        if kind == "bool":
            group.add_argument(f"--{name}", dest=name, action="store_true",
                               default=argparse.SUPPRESS, help=shown)
        else:
            metavar = {"list": "A,B,...", "json": "JSON|FILE"}.get(kind, "VALUE")
            convert = {"list": _split, "json": _json_value}.get(kind, str)
            group.add_argument(f"--{name}", dest=name, type=convert, metavar=metavar,
                               default=argparse.SUPPRESS, help=shown)
    return parser


def parse_options(spec: Spec, argv: Sequence[str]) -> dict[str, Any]:
    """Parameter values from ``--NAME VALUE`` options (only those given); argparse exits on bad ones."""
    return dict(vars(option_parser(spec, add_help=True).parse_args(list(argv))))


def _split(text: str) -> list[str]:
    return text.split(",")


def _json_value(text: str) -> Any:
    """JSON text, or the path of a JSON file (as ccworkflow reads a json option)."""
    path = Path(text)
    try:
        if path.is_file():
            return json.loads(path.read_text())
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"not JSON, nor a JSON file: {exc}") from exc


def triggers(spec: Spec, values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """What ``nbflow serve`` should watch for this workflow's input nodes, each job's parameter.

    A ``dirwatcher`` node gives ``{"node", "kind": "folder", "path", "recursive",
    "parameter": "fullpath"}``: each new, stable file under ``path`` is a job
    with ``fullpath`` set. A ``netwatcher`` gives ``{"node", "kind": "http",
    "port", "schema", "parameter": "request"}``: each request body is a job with
    ``request`` set. Option references in their args are resolved with
    ``values`` (else the options' defaults).
    """
    given = {p: i.get("default") for p, i in option_parameters(spec).items()}
    given.update(values or {})
    found: list[dict[str, Any]] = []

    def visit(raw: Any) -> None:
        if not isinstance(raw, dict):
            return
        args = {k: _plain(v, given) for k, v in (raw.get("args") or {}).items()}
        name = raw.get("name", raw.get("module"))
        if raw.get("module") == "dirwatcher":
            found.append({"node": name, "kind": "folder", "path": args.get("src"),
                          "recursive": bool(args.get("recursive", False)),
                          "parameter": "fullpath"})
        elif raw.get("module") == "netwatcher":
            found.append({"node": name, "kind": "http", "port": args.get("port"),
                          "schema": args.get("schema"), "parameter": "request"})
        for child in raw.get("children") or []:
            visit(child)

    for raw in spec.data["workflow"].get("nodes") or []:
        visit(raw)
    return found


def _plain(value: Any, given: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        option = value.get("option", value.get("options"))
        if isinstance(option, str) and given.get(option.strip()) is not None:
            return given[option.strip()]
        return value.get("default")
    return value
