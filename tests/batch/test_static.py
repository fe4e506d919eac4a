"""Batch output notebooks show the final DAG as an image where no widget can run.

Unit tests of :func:`nbflow.batch.static.prefer_static_images`, then ``nbflow run`` and
``nbflow sweep`` on a real kernel, converted by nbconvert's HTMLExporter with the network
blocked: the HTML holds the DAG as a ``data:`` image with the final states, and neither
the widget view nor the widget manager's CDN script.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nbflow.batch.static import WIDGET_STATE, WIDGET_VIEW, prefer_static_images

from .conftest import nbflow

STATIC = Path(__file__).parent / "notebooks" / "static.ipynb"
SVG_NS = "{http://www.w3.org/2000/svg}"
slow = pytest.mark.slow


# --- prefer_static_images on hand-made notebooks --------------------------------------

def _view(model_id: str, images: bool) -> dict[str, Any]:
    data: dict[str, Any] = {WIDGET_VIEW: {"model_id": model_id, "version_major": 2,
                                          "version_minor": 1},
                            "text/plain": "DagWidget(1 task: 1 succeeded)"}
    if images:
        data["image/png"] = "iVBORw0KGgo="
        data["image/svg+xml"] = "<svg/>"
    return {"output_type": "display_data", "data": data, "metadata": {}}


def _notebook(*outputs: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    return {"cells": [{"cell_type": "code", "source": "", "metadata": {},
                       "execution_count": 1, "outputs": list(outputs)}],
            "metadata": {"widgets": {WIDGET_STATE: {"version_major": 2, "version_minor": 0,
                                                    "state": state}}},
            "nbformat": 4, "nbformat_minor": 5}


def _model(name: str, **refs: str) -> dict[str, Any]:
    return {"model_name": name, "model_module": "m", "model_module_version": "1",
            "state": {k: f"IPY_MODEL_{v}" for k, v in refs.items()}}


def test_a_view_with_an_image_loses_the_view_and_the_state_goes():
    nb = _notebook(_view("dag", images=True),
                   state={"dag": _model("AnyModel", layout="lay"), "lay": _model("LayoutModel")})
    assert prefer_static_images(nb) == 1
    data = nb["cells"][0]["outputs"][0]["data"]
    assert sorted(data) == ["image/png", "image/svg+xml", "text/plain"]
    assert "widgets" not in nb["metadata"]
    assert prefer_static_images(nb) == 0  # idempotent


def test_other_widgets_keep_their_view_and_state():
    state = {"dag": _model("AnyModel", layout="lay"), "lay": _model("LayoutModel"),
             "box": _model("VBoxModel", layout="lay2", child="slider"),
             "slider": _model("IntSliderModel", layout="lay3"),
             "lay2": _model("LayoutModel"), "lay3": _model("LayoutModel")}
    nb = _notebook(_view("dag", images=True), _view("box", images=False), state=state)
    assert prefer_static_images(nb) == 1
    outputs = nb["cells"][0]["outputs"]
    assert WIDGET_VIEW not in outputs[0]["data"]
    assert outputs[1]["data"][WIDGET_VIEW]["model_id"] == "box"
    kept = nb["metadata"]["widgets"][WIDGET_STATE]["state"]
    assert sorted(kept) == ["box", "lay2", "lay3", "slider"]


def test_a_notebook_without_image_views_is_left_alone():
    nb = _notebook(_view("box", images=False), state={"box": _model("VBoxModel")})
    before = copy.deepcopy(nb)
    assert prefer_static_images(nb) == 0
    assert nb == before


# --- nbflow run / sweep, then nbconvert offline ------------------------------------------

@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt from this process fails (nbconvert must need none)."""
    def refuse(self: socket.socket, address: Any) -> None:
        raise OSError(f"network blocked in this test: connect to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def to_html(path: Path, priority: list[str] | None = None) -> str:
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    config = Config()
    if priority is not None:
        config.NbConvertBase.display_data_priority = priority
    html, _ = HTMLExporter(config=config).from_notebook_node(nbformat.read(path, as_version=4))
    return str(html)


def image_urls(html: str, mime: str) -> list[str]:
    return re.findall(rf'<img [^>]*src="data:{re.escape(mime)};base64,([A-Za-z0-9+/=]+)"', html)


def svg_states(svg: str) -> dict[str, str]:
    root = ET.fromstring(svg)
    return {g.find(f"{SVG_NS}title").text: g.get("data-state", "")  # type: ignore[union-attr]
            for g in root.iter(f"{SVG_NS}g") if "node" in (g.get("class") or "").split()}


def check_offline_html(out: Path, states: dict[str, str]) -> None:
    nb = nbformat.read(out, as_version=4)
    assert "widgets" not in nb.metadata
    run_cell = next(c for c in nb.cells if c.cell_type == "code" and c.source == "%nbflow run")
    [dag] = [o for o in run_cell.outputs if o.output_type == "display_data"]
    assert WIDGET_VIEW not in dag.data
    assert dag.data["text/plain"].startswith("DagWidget(")

    html = to_html(out)
    assert WIDGET_VIEW not in html and "html-manager" not in html and "unpkg" not in html
    [svg64] = image_urls(html, "image/svg+xml")  # nbconvert inlines the SVG as a data: URL
    assert svg_states(base64.b64decode(svg64).decode()) == states

    # a reader that renders no SVG (untrusted JupyterLab) gets the PNG
    html = to_html(out, ["text/html", "image/png", "image/svg+xml", "text/plain"])
    assert '<img alt="No description has been provided for this image" class="" src="data:image/png;base64,' in html
    [png64] = image_urls(html, "image/png")
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(png64))) as img:
        assert img.format == "PNG" and img.width > 100 and img.height > 100


@slow
def test_run_output_shows_the_final_dag_offline(tmp_path, no_network):
    proc = nbflow("run", STATIC, "-o", "out.ipynb", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    check_offline_html(tmp_path / "out.ipynb", dict.fromkeys(
        ("load_data", "total", "check", "report"), "succeeded"))


@slow
def test_failed_run_output_shows_the_failure_offline(tmp_path, no_network):
    proc = nbflow("run", STATIC, "-o", "out.ipynb", "-p", "fail", "True", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    check_offline_html(tmp_path / "out.ipynb", {"load_data": "succeeded", "total": "succeeded",
                                                "check": "failed", "report": "skipped"})


@slow
def test_sweep_job_outputs_show_the_final_dag_offline(tmp_path, no_network):
    (tmp_path / "grid.json").write_text(json.dumps({"jobs": [{"fail": False}]}))
    proc = nbflow("sweep", STATIC, "--grid", "grid.json", "--out-dir", "sweep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [out] = sorted((tmp_path / "sweep").glob("static-*.ipynb"))
    check_offline_html(out, dict.fromkeys(("load_data", "total", "check", "report"),
                                          "succeeded"))
