"""The live DAG widget: layout (Graphviz in another process), the anywidget model, ESM + CSS.

``nbflow.widget`` imports neither anywidget nor ipywidgets until :class:`DagWidget`
is used, so the layout process and ``flow.to_graphviz()`` stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .layout import STATES, STYLES, structure_of, to_graphviz
from .service import draw

if TYPE_CHECKING:
    from .model import DagWidget

__all__ = ("STATES", "STYLES", "DagWidget", "draw", "structure_of", "to_graphviz")


def __getattr__(name: str) -> Any:
    if name == "DagWidget":
        try:
            from .model import DagWidget
        except ImportError as exc:
            msg = f'the nbflow widget needs anywidget and ipywidgets: pip install "nbflow[widget]" ({exc})'
            raise ImportError(msg) from exc
        return DagWidget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
