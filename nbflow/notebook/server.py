"""Jupyter server extension: a DAG whose kernel is gone shows its picture, not an error.

A DAG widget's output holds the widget view and, beside it, the DAG as SVG and
PNG. JupyterLab and Notebook 7 always render the view, and once the kernel
process that drew it is gone (a kernel restart, the notebook opened the next
day) they write "Error displaying widget: model not found": they never fall back
to the picture beside it.

The kernel names itself in the output's metadata (``{"nbflow": {"kernel":
{"pid", "host"}}}``, see :func:`nbflow.widget.static.output_metadata`). When the
server hands a notebook to the browser, this extension drops the widget view of
every such output whose kernel process is not one of the server's running
kernels: the browser then shows the picture, which is the widget's last state
(the final one for a run that ended). An output whose kernel still runs keeps
its view, so a page reloaded during a run shows the live widget. Other
libraries' widgets are left as they are.

pip installs ``etc/jupyter/jupyter_server_config.d/nbflow.json``, which enables
the extension in every Jupyter server of the environment.
"""

from __future__ import annotations

import inspect
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from ..batch.static import prefer_static_images

__all__ = ("running_kernel_pids", "show_pictures_of_gone_kernels")

logger = logging.getLogger(__name__)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "nbflow.notebook.server"}]


def show_pictures_of_gone_kernels(nb: dict[str, Any], alive: Iterable[int],
                                  host: str | None = None) -> int:
    """Drop, in place, the DAG widget views drawn by a kernel process not in ``alive``
    (pids on ``host``, default this machine); return how many were dropped."""
    alive = set(alive)
    host = socket.gethostname() if host is None else host

    def gone(output: dict[str, Any]) -> bool:
        nbflow = (output.get("metadata") or {}).get("nbflow")
        kernel = nbflow.get("kernel") if isinstance(nbflow, dict) else None
        if not isinstance(kernel, dict):
            return False  # not a DAG nbflow drew: not ours to change
        return kernel.get("host") != host or kernel.get("pid") not in alive

    return prefer_static_images(nb, where=gone)


def running_kernel_pids(kernels: Any) -> set[int]:
    """The process ids of a server's running kernels (those it started on this machine)."""
    pids = set()
    for kernel_id in kernels.list_kernel_ids():
        try:
            manager = kernels.get_kernel(kernel_id)
        except KeyError:  # it stopped meanwhile
            continue
        pid = getattr(getattr(manager, "provisioner", None), "pid", None)
        if isinstance(pid, int):
            pids.add(pid)
    return pids


def _picture_when_gone(model: Any, kernels: Any) -> Any:
    if isinstance(model, dict) and model.get("type") == "notebook" and \
            isinstance(model.get("content"), dict):
        try:
            show_pictures_of_gone_kernels(model["content"], running_kernel_pids(kernels))
        except Exception:  # the notebook opens as it is rather than not at all
            logger.warning("nbflow: could not check the DAG outputs of %s", model.get("path"),
                           exc_info=True)
    return model


def _wrap_get(get: Callable[..., Any], kernels: Any) -> Callable[..., Any]:
    """``contents_manager.get`` that applies :func:`show_pictures_of_gone_kernels`
    (async if the manager's is)."""
    if inspect.iscoroutinefunction(get):
        async def get_async(*args: Any, **kwargs: Any) -> Any:
            return _picture_when_gone(await get(*args, **kwargs), kernels)

        return get_async

    def get_sync(*args: Any, **kwargs: Any) -> Any:
        return _picture_when_gone(get(*args, **kwargs), kernels)

    return get_sync


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Make the server's contents manager show pictures of DAGs whose kernel is gone."""
    contents = serverapp.contents_manager
    if getattr(contents, "_nbflow_pictures", False):
        return
    contents.get = _wrap_get(contents.get, serverapp.kernel_manager)
    contents._nbflow_pictures = True
    serverapp.log.info("nbflow: DAG outputs of kernels that are gone show their picture")
