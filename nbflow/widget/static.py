"""The DAG as pictures: the SVG and PNG that a widget's output carries beside its view,
and :class:`WidgetPictures`, the part of :class:`~nbflow.widget.DagWidget` that draws
and displays them.

Wherever the widget's JavaScript does not run, the picture is what readers see:
papermill outputs, nbconvert's HTML, GitHub, an untrusted notebook in JupyterLab
(which shows PNG but not SVG), and a notebook whose kernel is gone. Both pictures
show the nodes in the states given, the final ones for a run that ended.

- The SVG is the widget's own layout, coloured (:func:`nbflow.widget.layout.colour_svg`).
- The PNG is a layout of its own (:func:`nbflow.widget.layout.static_graph`),
  drawn by the layout process, so it never holds the kernel's GIL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .layout import Structure, colour_svg, placeholder_svg, static_graph
from .service import LayoutService

if TYPE_CHECKING:
    from ..run import Run
    from .collapse import Folding
    from .nodes import NodeTable

__all__ = ("WidgetPictures", "output_metadata", "picture_svg", "pictures", "png_of",
           "start_png")

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


class WidgetPictures:
    """The pictures of :class:`~nbflow.widget.DagWidget` (a part of it, as a mixin), and
    the outputs it displayed itself, redrawn when a run it follows ends.

    A widget displayed while its run goes on would leave a mid-run picture in the
    saved notebook (and, once the kernel is gone, on screen). Each display the
    widget makes (:meth:`show`, what ``display(widget)`` and a cell's value call) is
    therefore redrawn once a run it follows has ended (:meth:`redraw`).
    """

    #: seconds ``_repr_mimebundle_`` waits for a layout that is still being computed
    static_wait = 5.0

    if TYPE_CHECKING:  # what the widget provides
        _lock: threading.RLock
        _run: Run | None
        _ended: str | None
        _service: LayoutService
        _shown: Structure | None
        _layout_key: str
        _table: NodeTable
        _folding: Folding

        #: [handle, version of the picture it shows] per display :meth:`show` made
        _displays: list[list[Any]]
        _redraw_lock: threading.Lock

        def flush(self, final: bool = False, status: str | None = None) -> None: ...
        def wait_layout(self, timeout: float | None = 30) -> bool: ...

    def static_svg(self, timeout: float | None = 0) -> str:
        """The current state as a standalone SVG (legend included).

        Waits up to ``timeout`` seconds for a layout still being computed; without one,
        a small placeholder SVG says so. A run that ended is shown in its final states.
        """
        nodes = self._static_nodes()
        if timeout:
            self.wait_layout(timeout)
        assert self._shown is not None
        return picture_svg(self._service, self._shown, self._layout_key, nodes)

    def static_png(self, timeout: float | None = 30) -> str | None:
        """The current state as a PNG, base64-encoded as Jupyter stores images.

        The same picture as :meth:`static_svg`, drawn by the layout process (a layout
        of its own). None if it fails or takes longer than ``timeout`` seconds.
        """
        nodes = self._static_nodes()
        if self._shown is None:
            return None
        return png_of(start_png(self._service, self._shown, nodes), timeout)

    def static_pictures(self, wait: float | None = None) -> dict[str, str]:
        """The DAG's pictures as a MIME bundle (SVG, and PNG when drawn in time), in
        the current (for an ended run, final) states; see :mod:`nbflow.widget.static`."""
        nodes = self._static_nodes()  # first: it applies a run's final states
        assert self._shown is not None
        return pictures(self._service, self._shown, self._layout_key, nodes,
                        self.wait_layout, self.static_wait if wait is None else wait)

    def _static_nodes(self) -> dict[str, dict[str, Any]]:
        """Every node's info (collapsed ones too), final once the followed run ended.

        A run is done once its events were handed to observers, but an observer
        removed or slow might not have flushed the final ones: flush them here, so a
        displayed widget of an ended run never stores a mid-run picture.
        """
        run = self._run
        if run is not None and run.done and self._ended is None:
            self.flush(final=True)
        with self._lock:
            return {**self._table.nodes, **self._folding.infos(self._table.nodes)}

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        """The widget view, plus the DAG as SVG and as PNG (untrusted notebooks show no
        SVG; nbconvert's HTML and GitHub show either), in the same (final) states; the
        metadata names the kernel that drew it (:func:`.static.output_metadata`)."""
        images = self.static_pictures()
        shown = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        data, metadata = shown if isinstance(shown, tuple) else (shown, {})
        assert isinstance(data, dict)
        data.update(images)
        return data, {**(metadata or {}), **output_metadata()}

    def show(self) -> Any:
        """Display the widget (its view and pictures) under the current cell.

        Returns IPython's display handle (None outside IPython). The output is
        redrawn when a run the widget follows ends, so it keeps the final picture.
        """
        from IPython.display import display

        data, metadata = self._repr_mimebundle_()
        handle = display(data, metadata=metadata, raw=True,  # type: ignore[no-untyped-call]
                         display_id=True)
        if handle is not None:
            with self._redraw_lock:
                self._displays.append([handle, _version(data)])
            run = self._run
            if run is not None and run.done:
                self._redraw_later()  # it may have ended while the pictures were drawn
        return handle

    def _ipython_display_(self) -> None:
        """What ``display(widget)`` and a cell evaluating to the widget do: :meth:`show`."""
        self.show()

    def redraw(self) -> None:
        """Redraw the outputs :meth:`show` made that do not show the current picture.

        Called when a followed run ended (on a thread of its own), and by
        ``%nbflow run`` before its cell ends; whichever comes second finds nothing
        to do.
        """
        with self._redraw_lock:
            if not self._displays:
                return
            data, metadata = self._repr_mimebundle_()
            version = _version(data)
            for shown in self._displays:
                if shown[1] != version:
                    shown[0].update(data, metadata=metadata, raw=True)
                    shown[1] = version

    def _redraw_later(self) -> None:
        """:meth:`redraw` on a thread of its own (the run's event thread goes on)."""
        if not self._displays:
            return

        def redraw() -> None:
            try:
                self.redraw()
            except Exception:  # the output keeps its earlier picture
                logger.warning("nbflow widget: could not redraw its output", exc_info=True)

        threading.Thread(target=redraw, name="nbflow-widget-redraw", daemon=True).start()


def _version(data: Mapping[str, Any]) -> str:
    """What a display shows: a digest of its pictures."""
    pictures = {mime: data.get(mime) for mime in ("image/svg+xml", "image/png")}
    return hashlib.blake2b(json.dumps(pictures, sort_keys=True).encode(),
                           digest_size=16).hexdigest()
