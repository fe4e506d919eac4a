"""nbflow's Jupyter server extension: which widget views it replaces by their pictures.

The browser test (tests/widget/test_reload.py) runs it in a real JupyterLab after a
kernel restart; these check the rules on hand-made notebooks.
"""

from __future__ import annotations

import asyncio
import os
import socket
from types import SimpleNamespace

from nbflow.notebook.server import (
    _load_jupyter_server_extension,
    running_kernel_pids,
    show_pictures_of_gone_kernels,
)

VIEW = "application/vnd.jupyter.widget-view+json"
HOST = socket.gethostname()


def output(model_id: str, kernel: dict | None, images: bool = True) -> dict:
    data = {VIEW: {"model_id": model_id, "version_major": 2, "version_minor": 0},
            "text/plain": "DagWidget(...)"}
    if images:
        data["image/svg+xml"] = "<svg/>"
    metadata = {} if kernel is None else {"nbflow": {"kernel": kernel}}
    return {"output_type": "display_data", "data": data, "metadata": metadata}


def notebook(*outputs: dict) -> dict:
    return {"cells": [{"cell_type": "code", "outputs": list(outputs)}], "metadata": {}}


def views(nb: dict) -> list[str]:
    return [out["data"][VIEW]["model_id"] for out in nb["cells"][0]["outputs"]
            if VIEW in out["data"]]


def test_views_of_a_kernel_that_is_gone_give_way_to_their_picture():
    nb = notebook(output("gone", {"pid": 111, "host": HOST}),
                  output("alive", {"pid": 222, "host": HOST}),
                  output("elsewhere", {"pid": 222, "host": "another-machine"}),
                  output("other-library", None),
                  output("no-picture", {"pid": 111, "host": HOST}, images=False))
    assert show_pictures_of_gone_kernels(nb, alive={222}, host=HOST) == 2
    assert views(nb) == ["alive", "other-library", "no-picture"]
    assert nb["cells"][0]["outputs"][0]["data"]["image/svg+xml"] == "<svg/>"
    assert show_pictures_of_gone_kernels(nb, alive={222}, host=HOST) == 0  # idempotent


def test_running_kernel_pids_reads_the_provisioners():
    kernels = {"a": SimpleNamespace(provisioner=SimpleNamespace(pid=10)),
               "b": SimpleNamespace(provisioner=None)}  # a remote kernel: no pid

    class Manager:
        def list_kernel_ids(self):
            return [*kernels, "stopped"]

        def get_kernel(self, kernel_id):
            return kernels[kernel_id]

    assert running_kernel_pids(Manager()) == {10}


def server_app(get):
    class Kernels:
        def list_kernel_ids(self):
            return ["k"]

        def get_kernel(self, kernel_id):
            return SimpleNamespace(provisioner=SimpleNamespace(pid=os.getpid()))

    contents = SimpleNamespace(get=get)
    log = SimpleNamespace(info=lambda *args: None)
    return SimpleNamespace(contents_manager=contents, kernel_manager=Kernels(), log=log)


def stored() -> dict:
    return {"type": "notebook", "path": "a.ipynb", "content": notebook(
        output("mine", {"pid": os.getpid(), "host": HOST}),
        output("old", {"pid": -1, "host": HOST}))}


def test_the_extension_wraps_an_async_contents_manager():
    async def get(path, content=True, **kwargs):
        return stored() if content else {"type": "notebook", "content": None}

    app = server_app(get)
    _load_jupyter_server_extension(app)
    _load_jupyter_server_extension(app)  # loaded twice: wrapped once
    model = asyncio.run(app.contents_manager.get("a.ipynb"))
    assert views(model["content"]) == ["mine"]
    assert asyncio.run(app.contents_manager.get("a.ipynb", content=False))["content"] is None


def test_the_extension_wraps_a_sync_contents_manager():
    app = server_app(lambda path, **kwargs: stored())
    _load_jupyter_server_extension(app)
    assert views(app.contents_manager.get("a.ipynb")["content"]) == ["mine"]
