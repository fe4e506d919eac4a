"""``nbflow convert WORKFLOW --to TARGET -o OUT``: one function per target, one entry point.

Every target but ``spec`` reads the workflow through :func:`nbflow.convert.model.load`.
``spec`` from a notebook is ``nbflow export`` (a spec plus the module of its task
functions); from a spec it writes the spec again, normalised (every key checked,
comments gone), in YAML or JSON by the suffix of OUT.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import ExportError, NbflowError
from .model import ConvWorkflow, load

__all__ = ["TARGETS", "convert"]

#: target -> the suffix its output file should have
TARGETS = {"spec": (".yaml", ".yml", ".json"), "script": (".py",), "jupytext": (".py",),
           "airflow": (".py",)}


def _writer(target: str) -> Callable[[ConvWorkflow], str]:
    if target == "script":
        from .script import to_script

        return to_script
    if target == "jupytext":
        from .jupytext import to_jupytext

        return to_jupytext
    from .airflow import to_airflow

    return to_airflow


def convert(source: str | Path, target: str, out: str | Path) -> list[Path]:
    """Write ``source`` (a notebook or a spec) as ``target`` to ``out``; the files written.

    Raises :class:`ExportError` naming the file, the task and the feature that the
    target cannot express, before anything is written.
    """
    source, out = Path(source), Path(out)
    if target not in TARGETS:
        raise ExportError(f"--to {target}: one of {', '.join(TARGETS)}")
    if out.suffix.lower() not in TARGETS[target]:
        raise ExportError(f"-o {out}: a {target} is written to a "
                          f"{' or '.join(TARGETS[target])} file")
    if not source.is_file():
        raise ExportError(f"{source}: no such file")
    if out.resolve() == source.resolve():
        raise ExportError(f"-o {out} would overwrite the workflow itself")
    if target == "spec":
        return _spec(source, out)
    text = _writer(target)(load(source))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return [out]


def _spec(source: Path, out: Path) -> list[Path]:
    if source.suffix.lower() == ".ipynb":
        from ..notebook.export import export_notebook

        return export_notebook(source, out)
    from ..spec import dump_spec, load_spec

    try:
        spec = load_spec(source)
    except NbflowError as exc:
        raise ExportError(str(exc)) from None
    dump_spec(spec.data, out)
    return [out]
