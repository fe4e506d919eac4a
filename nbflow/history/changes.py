"""A change in one part of a cache key, in words: what ``%nbflow why``, ``nbflow why``
and the notebook's staleness notes print.

- a parameter: ``parameter 'days' 30 -> 60``;
- a labelled key part (:mod:`nbflow.key_parts`): ``function clean_helper in
  helpers.py at line 12``, ``package pandas 2.2.3 -> 3.0.1``, ``global 'THRESHOLD'
  changed`` (see :func:`nbflow.code_sources.describe_change`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..code_sources import describe_change

__all__ = ["param_change", "part_changes", "short_repr"]


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters ("..." at the end when cut)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def param_change(name: str, old: str | None, new: str | None) -> str:
    """``parameter 'days' 30 -> 60`` from the short reprs of the two values (None: absent
    or unknown)."""
    if old is None or new is None or old == new:
        return f"parameter {name!r} changed"
    return f"parameter {name!r} {old} -> {new}"


def part_changes(old: Mapping[str, str], new: Mapping[str, str],
                 known: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Each labelled key part that differs between ``old`` and ``new``, in words, by label.

    ``known``: local module versions by digest, for those this process never hashed
    (see :func:`~nbflow.code_sources.describe_change`).
    """
    return [describe_change(label, old.get(label), new.get(label), known)
            for label in sorted(set(old) | set(new)) if old.get(label) != new.get(label)]
