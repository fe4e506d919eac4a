"""The DAG as pictures: the SVG and PNG that a widget's output carries beside its view.

Wherever the widget's JavaScript does not run, the picture is what readers see:
papermill outputs, nbconvert's HTML, GitHub, an untrusted notebook in JupyterLab
(which shows PNG but not SVG), and a notebook whose kernel is gone. Both pictures
show the nodes in the states given, the final ones for a run that ended.

- The SVG is the widget's own layout, coloured (:func:`nbflow.widget.layout.colour_svg`).
- The PNG is a layout of its own (:func:`nbflow.widget.layout.static_graph`),
  drawn by the layout process, so it never holds the kernel's GIL.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from .layout import Structure, colour_svg, placeholder_svg, static_graph
from .service import LayoutService

__all__ = ("output_metadata", "picture_svg", "pictures", "png_of", "start_png")

logger = logging.getLogger(__name__)

Nodes = Mapping[str, Mapping[str, Any]]


def output_metadata() -> dict[str, Any]:
    """The metadata of a widget output: the kernel process that drew it.

    ``{"nbflow": {"kernel": {"pid", "host"}}}``. Once that process is gone, nbflow's
    Jupyter server extension (:mod:`nbflow.notebook.server`) shows the pictures of
    the output instead of its widget view, which would only say "model not found".
    """
    return {"nbflow": {"kernel": {"pid": os.getpid(), "host": socket.gethostname()}}}


def picture_svg(service: LayoutService, structure: Structure, layout_key: str,
                nodes: Nodes) -> str:
    """The laid-out SVG painted in ``nodes``' states; a placeholder while no layout is
    cached for ``layout_key`` (it says the layout is being computed)."""
    svg = service.cached(layout_key)
    if svg is None:
        return placeholder_svg(structure)
    return colour_svg(svg, dict(nodes))


def start_png(service: LayoutService, structure: Structure, nodes: Nodes) -> Future[str]:
    """Start drawing the PNG (base64, as Jupyter stores images) in the layout process."""
    frozen = dict(nodes)
    return service.render(lambda: static_graph(structure, frozen).source, "png")


def png_of(future: Future[str], timeout: float | None) -> str | None:
    """The PNG of :func:`start_png`, or None if it failed or took longer than ``timeout``.

    No PNG is not an error: the SVG is still there, and most readers show it.
    """
    try:
        return future.result(timeout)
    except Exception as exc:
        future.cancel()
        logger.info("nbflow widget: no static PNG of the DAG: %s", exc or type(exc))
        return None


def pictures(service: LayoutService, structure: Structure, layout_key: str, nodes: Nodes,
             wait_layout: Callable[[float], object], wait: float) -> dict[str, str]:
    """``image/svg+xml`` and (when drawn in time) ``image/png`` of the DAG in ``nodes``' states.

    ``wait_layout(seconds)`` waits for a layout still being computed; both pictures
    share the ``wait`` seconds given (the PNG is drawn while the layout is awaited).
    """
    png = start_png(service, structure, nodes)
    started = time.monotonic()
    if wait:
        wait_layout(wait)
    bundle = {"image/svg+xml": picture_svg(service, structure, layout_key, nodes)}
    image = png_of(png, max(0.0, wait - (time.monotonic() - started)))
    if image is not None:
        bundle["image/png"] = image
    return bundle
