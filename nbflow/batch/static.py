"""Make a batch output notebook show its DAG pictures, not dead widget views.

nbclient and papermill store the widget state in ``metadata.widgets``. With it
there, nbconvert's HTML shows an output's widget view (the widget manager comes
from a CDN: no DAG offline) instead of the ``image/svg+xml``/``image/png`` the
same output carries, and a trusted JupyterLab shows "Error displaying widget" once
the kernel is gone. The kernel of a batch run is always gone, so a widget view
that has a static image beside it is removed, along with the state of its model
(and of the models only it refers to, such as its layout). Every reader then
falls back to the image: nbconvert (inline SVG or a ``data:`` PNG), GitHub, and an
untrusted JupyterLab (PNG: untrusted notebooks render no SVG).

Widget views with no image (other libraries' widgets) and their state are kept;
``metadata.widgets`` is removed when no widget view is left (a notebook with no
widget view that has an image is left as it is).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
IMAGES = ("image/png", "image/svg+xml")
_REF = re.compile(r"IPY_MODEL_([0-9a-zA-Z_-]+)")


def prefer_static_images(nb: dict[str, Any],
                         where: Callable[[dict[str, Any]], bool] | None = None) -> int:
    """Drop the widget views that carry a static image, in place; return how many.

    ``nb`` is a notebook as a JSON dict (or an ``nbformat.NotebookNode``). ``where``
    (an output -> bool) limits it to some outputs: the others are left as they are.
    """
    removed: set[str] = set()
    shown: set[str] = set()
    dropped = views_left = 0
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            data = out.get("data")
            if not isinstance(data, dict) or WIDGET_VIEW not in data:
                continue
            if any(data.get(mime) for mime in IMAGES) and (where is None or where(out)):
                view = data.pop(WIDGET_VIEW)
                dropped += 1
                if isinstance(view, dict) and view.get("model_id"):
                    removed.add(str(view["model_id"]))
            else:
                views_left += 1
                if isinstance(data[WIDGET_VIEW], dict):
                    shown.add(str(data[WIDGET_VIEW].get("model_id")))
    widgets = nb.get("metadata", {}).get("widgets")
    if dropped and isinstance(widgets, dict):
        if not views_left:
            del nb["metadata"]["widgets"]
        elif removed:
            _drop_models(widgets.get(WIDGET_STATE), removed - shown)
    return dropped


def _drop_models(saved: Any, removed: set[str]) -> None:
    """Remove ``removed`` models from a saved widget state, and every model that only
    they refer to (a model is kept if a model nobody refers to leads to it)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        return
    state: dict[str, Any] = saved["state"]
    refs = {mid: set(_REF.findall(json.dumps(model.get("state", {}))))
            for mid, model in state.items() if isinstance(model, dict)}
    referenced = set().union(*refs.values()) if refs else set()
    todo = [mid for mid in state if mid not in referenced and mid not in removed]
    kept: set[str] = set()
    while todo:
        mid = todo.pop()
        if mid in kept or mid in removed or mid not in state:
            continue
        kept.add(mid)
        todo.extend(refs.get(mid, ()))
    for mid in list(state):
        if mid not in kept:
            del state[mid]


def rewrite_output(path: str | Path) -> int:
    """Apply :func:`prefer_static_images` to the notebook file ``path``; rewrite it only if
    something changed. Returns how many widget views were replaced by their images."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    count = prefer_static_images(nb)
    if count:
        nbformat.write(nb, path)  # type: ignore[no-untyped-call]
    return count
