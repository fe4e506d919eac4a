"""A workflow file's own command-line options: ``nbflow run wf.json --items a,b --loud``.

A CryoCloud workflow declares ``options`` (``help``, ``default``, a ``type`` of bool,
list or json); under nbflow they are the spec's parameters, and ``nbflow run`` takes
them as CryoCloud's runner did: ``--NAME VALUE``, a bool a flag, a list comma-separated.
``nbflow run wf.json --help`` lists them. Other formats have no options of their own:
an unknown ``--flag`` stays an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import BatchInputError, NbflowError

__all__ = ["has_options", "input_triggers", "options_help", "workflow_options"]


def _cryocloud(path: str | Path) -> Any:
    """The parsed file when ``path`` is a CryoCloud workflow, else None."""
    from ..formats import detect
    from ..spec import parse_spec

    try:
        spec = parse_spec(Path(path).read_text(), str(path))
    except (OSError, NbflowError):
        return None  # the run itself reports an unreadable file
    return spec if detect(spec.data) == "cryocloud" else None


def has_options(path: str | Path) -> bool:
    """True for a workflow file with command-line options of its own (CryoCloud's)."""
    return Path(path).suffix.lower() in (".json", ".yaml", ".yml") and \
        _cryocloud(path) is not None


def workflow_options(path: str | Path, argv: Sequence[str]) -> dict[str, Any]:
    """The parameter values ``argv`` (the arguments ``nbflow run`` did not know) gives
    the workflow at ``path``; :class:`BatchInputError` for arguments it does not take."""
    if not argv:
        return {}
    spec = _cryocloud(path)
    if spec is None:
        raise BatchInputError(f"unrecognized arguments: {' '.join(argv)} (see nbflow run "
                              "--help)")
    from ..formats.cryocloud_options import option_parser

    parser = option_parser(spec, prog=f"nbflow run {path}")
    values, unknown = parser.parse_known_args(list(argv))
    if unknown:
        raise BatchInputError(f"{path}: unrecognized arguments: {' '.join(unknown)}; the "
                              f"workflow's options: nbflow run {path} --help")
    return dict(vars(values))


def options_help(argv: Sequence[str]) -> str | None:
    """``nbflow run WF --help`` for a workflow with options: nbflow's flags, then its own."""
    paths = [a for a in argv[1:] if not a.startswith("-") and Path(a).suffix == ".json"]
    spec = _cryocloud(paths[0]) if paths else None
    if spec is None:
        return None
    from ..formats.cryocloud_options import option_parser

    own = option_parser(spec, add_help=False, prog=f"nbflow run {paths[0]}")
    return own.format_help() + "\nnbflow run's own flags (-p, -c, -f, -o, --cluster, ...): " \
        "nbflow run --help\n"


def input_triggers(path: str | Path) -> list[dict[str, Any]]:
    """The triggers a workflow's own input nodes ask ``nbflow serve`` for (CryoCloud's
    ``dirwatcher`` and ``netwatcher``): ``{"kind": "folder"|"http", ...}``, else none."""
    spec = _cryocloud(path) if Path(path).suffix.lower() in (".json", ".yaml", ".yml") \
        else None
    if spec is None:
        return []
    from ..formats.cryocloud_options import triggers

    return triggers(spec)
