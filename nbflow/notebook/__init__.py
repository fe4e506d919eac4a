"""Notebook integration: ``%%nbflow task`` cells, ``%nbflow`` commands, the kernel's default flow.

``%load_ext nbflow`` registers the magics. Importing this package does not
import IPython; :mod:`nbflow.notebook.magics` does.
"""

from __future__ import annotations

from typing import Any

from .state import NotebookFlow, notebook_flow, reset

__all__ = ("NotebookFlow", "load_ipython_extension", "notebook_flow", "reset")


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%nbflow`` / ``%%nbflow`` against the kernel's default flow."""
    from .magics import load

    load(ipython)
