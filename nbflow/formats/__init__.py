"""Other systems' workflow files, read into nbflow specs: Ephemeral job maps, CryoCloud
workflows and ecoscope-workflows compilation specs (see ``docs/formats.md``).

Each reader checks its file (every problem names the file, the key path and the line)
and returns the equivalent nbflow spec, whose tasks may call the reader's runtime
adapters; everything that reads a spec (``nbflow run``, ``validate``, ``params``,
``convert``, ``serve``, ``nf.Flow.from_spec``) then reads these files too. The
format is told from the top-level keys; the ``spec_format`` setting (``--format``)
forces one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import config
from ..spec import Spec

__all__ = ["FORMATS", "detect", "own_uses", "to_nbflow"]

FORMATS = ("nbflow", "ephemeral", "cryocloud", "ecoscope")


def detect(data: Mapping[str, Any]) -> str:
    """The format of a parsed workflow file, from its top-level keys."""
    if "nbflow" in data:
        return "nbflow"
    if isinstance(data.get("workflow"), Mapping) and "tasks" not in data:
        return "cryocloud"
    if isinstance(data.get("workflow"), list) or "datasource" in data:
        return "ephemeral"
    from .ecoscope import is_ecoscope

    if is_ecoscope(data):
        return "ecoscope"
    return "nbflow"


def to_nbflow(spec: Spec) -> Spec:
    """``spec`` as an nbflow spec: itself, or its translation (same file, for messages)."""
    forced = str(config.get("spec_format"))
    if forced not in ("auto", *FORMATS):
        raise spec.error(f"--format {forced}: one of auto, {', '.join(FORMATS)}")
    kind = detect(spec.data) if forced == "auto" else forced
    if kind == "nbflow":
        return spec
    allow = bool(config.get("allow_unsupported"))
    data: dict[str, Any]
    if kind == "ecoscope":
        from .ecoscope import ecoscope_spec

        data = ecoscope_spec(spec)
    elif kind == "ephemeral":
        from .ephemeral import ephemeral_spec

        data = ephemeral_spec(spec)
    else:
        from .cryocloud import cryocloud_spec

        data = cryocloud_spec(spec, allow_unsupported=allow)
    return Spec(data, spec.file, {}, source_format=kind)


def own_uses(kind: str, data: Mapping[str, Any]) -> list[str]:
    """The functions of the workflow's own modules that a translated spec's adapters call
    (``nbflow validate`` lists their modules)."""
    if kind == "ephemeral":
        from .ephemeral import ephemeral_uses

        return ephemeral_uses(data)
    if kind == "cryocloud":
        from .cryocloud import module_uses

        return module_uses(dict(data))
    return []
