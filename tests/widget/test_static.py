"""The static image of the DAG: every widget output carries it as SVG and as PNG, in the
run's final states, so it shows where the widget cannot (untrusted notebooks show no SVG,
nbconvert's HTML has no widget manager offline, GitHub renders images only)."""

from __future__ import annotations

import base64
import struct

import nbformat
import pytest

import nbflow as nf
from nbflow.widget import DagWidget
from nbflow.widget.layout import PNG_DPI, static_graph, structure_of

from .conftest import node_states

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FINAL = {"load_data": "succeeded", "numbers": "succeeded", "square": "succeeded",
         "total": "succeeded", "fails": "failed", "report": "skipped"}


def bundle_of(widget: DagWidget) -> dict[str, object]:
    data = widget._repr_mimebundle_()
    bundle = data[0] if isinstance(data, tuple) else data
    assert isinstance(bundle, dict)
    return bundle


def png_size(encoded: str) -> tuple[int, int]:
    """(width, height) of a base64 PNG, checking its magic bytes."""
    raw = base64.b64decode(encoded, validate=True)
    assert raw.startswith(PNG_MAGIC)
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


def test_a_finished_run_s_bundle_has_png_and_svg_in_the_final_states(demo_flow):
    run = demo_flow.run(background=True)
    widget = run.widget(demo_flow)
    run.wait()
    bundle = bundle_of(widget)

    assert node_states(str(bundle["image/svg+xml"])) == FINAL
    png = bundle["image/png"]
    assert isinstance(png, str)  # base64 text, as Jupyter stores images
    width, height = png_size(png)
    assert 100 < width < 800 and 100 < height < 800  # one pixel per point: small
    # the PNG is the drawing of the final states (Graphviz draws the same source alike)
    final = widget._service.render(
        static_graph(structure_of(demo_flow), widget.snapshot["nodes"]).source).result(60)
    assert png == final
    source = static_graph(structure_of(demo_flow), widget.snapshot["nodes"]).source
    assert "fails\\nfailed" in source and "square\\nsucceeded 3/3" in source
    assert f"dpi={PNG_DPI}" in source


def test_the_png_changes_with_the_states(demo_flow):
    widget = demo_flow.widget()
    before = bundle_of(widget)["image/png"]
    assert set(node_states(str(bundle_of(widget)["image/svg+xml"])).values()) == {"pending"}
    demo_flow.run(background=True).wait()
    widget.refresh()
    after = bundle_of(widget)
    assert node_states(str(after["image/svg+xml"])) == FINAL
    assert after["image/png"] != before
    png_size(str(after["image/png"]))


def test_static_png_alone():
    flow = nf.Flow("two")
    flow.task(name="a")(lambda: 1)
    widget = flow.widget()
    png = widget.static_png(60)
    assert png is not None
    png_size(png)


NOTEBOOK = [
    "import nbflow as nf\n%load_ext nbflow\nflow = nf.notebook_flow()",
    "@flow.task\ndef load_data():\n    return [1, 2, 3]\n\n\n@flow.task\ndef total(load_data):\n"
    "    return sum(load_data)\n\n\n@flow.task\ndef double(total):\n    return 2 * total\n\n\n"
    "@flow.task\ndef report(total, double):\n    return f'{total} {double}'",
    "%nbflow run",
]


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> nbformat.NotebookNode:
    """A notebook that runs a four-task flow with ``%nbflow run``, executed by nbclient."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in NOTEBOOK]
    path = tmp_path_factory.mktemp("static")
    NotebookClient(nb, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(path)}}).execute()
    return nb


def dag_output(nb: nbformat.NotebookNode) -> dict[str, object]:
    (output,) = [o for o in nb.cells[-1].outputs if o.output_type == "display_data"]
    data = output["data"]
    assert isinstance(data, dict)
    return data


def test_the_run_cell_stores_the_final_dag_as_svg_and_png(executed):
    data = dag_output(executed)
    assert data["text/plain"] == "DagWidget(4 tasks: 4 succeeded)"
    assert set(node_states(str(data["image/svg+xml"])).values()) == {"succeeded"}
    png_size(str(data["image/png"]))
    # round-trips through the file format (nbformat validates the base64 text)
    nbformat.validate(nbformat.reads(nbformat.writes(executed), as_version=4))


def test_nbconvert_html_shows_the_final_dag_inline(executed):
    """As saved by JupyterLab (no widget state): nbconvert inlines the image, no network."""
    from nbconvert import HTMLExporter

    nb = nbformat.from_dict(executed)
    nb.metadata.pop("widgets", None)
    html, _ = HTMLExporter().from_notebook_node(nb)
    (svg,) = inline_images(html, "image/svg+xml")
    assert node_states(base64.b64decode(svg).decode()) == dict.fromkeys(
        ["load_data", "total", "double", "report"], "succeeded")

    # where an exporter prefers bitmaps (as GitHub and untrusted notebooks do): the PNG
    from traitlets.config import Config

    png_first = HTMLExporter(config=Config(
        {"NbConvertBase": {"display_data_priority": ["image/png", "text/plain"]}}))
    html, _ = png_first.from_notebook_node(nb)
    (png,) = inline_images(html, "image/png")
    png_size(png)


def inline_images(html: str, mimetype: str) -> list[str]:
    """The base64 data of every ``<img src="data:MIMETYPE;base64,...">`` in ``html``."""
    import re

    return re.findall(f'<img[^>]* src="data:{re.escape(mimetype)};base64,([^"]+)"', html)
