"""An ``nbflow run`` output notebook opened in JupyterLab is untrusted; its DAG must show.

Untrusted notebooks render no SVG (and no widget view), so the run cell must show the PNG
that the widget output carries. ``nbflow run`` makes the output notebook, JupyterLab runs
on 127.0.0.1 with a fresh data dir (so nothing has signed the notebook), and Debian's
headless Chromium (driven by Playwright over CDP) opens it. A screenshot goes to
build/test-artifacts/screens/untrusted-output.png. Server and browser are stopped by pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .jupyter import CHROMIUM, TOKEN, chromium, isolated_env, jupyter_server

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

NOTEBOOK = Path(__file__).parents[1] / "batch" / "notebooks" / "static.ipynb"
SCREENS = Path(__file__).parents[2] / "build" / "test-artifacts" / "screens"
NOTEBOOK_OPEN = """() => {
  const w = window.jupyterapp?.shell.currentWidget;
  return !!(w?.context?.isReady && w.content?.widgets?.length > 0);
}"""
CELLS_TRUSTED = """() => window.jupyterapp.shell.currentWidget.content.widgets
  .filter(c => c.model.type === 'code').map(c => c.model.trusted)"""

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (scripts/test.sh installs Debian's chromium as root)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def user_env(tmp_path: Path) -> dict[str, str]:
    # a fresh data dir: a fresh notebook-signature database, so the output is untrusted
    return isolated_env(tmp_path, JUPYTER_DATA_DIR=str(tmp_path / "data"))


@pytest.fixture
def output_notebook(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    proc = subprocess.run([sys.executable, "-m", "nbflow", "run", str(NOTEBOOK), "-o",
                           str(root / "out.ipynb"), "-q"], capture_output=True, text=True,
                          timeout=120, env=user_env(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return root / "out.ipynb"


@pytest.fixture
def lab(tmp_path: Path, output_notebook: Path) -> Iterator[str]:
    """JupyterLab on 127.0.0.1 serving the output notebook; yields its URL."""
    with jupyter_server("lab", output_notebook.parent, tmp_path,
                        env=user_env(tmp_path)) as base:
        yield f"{base}/lab/tree/{output_notebook.name}?token={TOKEN}"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path) as started:
        yield started


def test_untrusted_output_notebook_shows_the_dag_png(lab: str, browser: Any) -> None:
    context = browser.contexts[0] if browser.contexts else browser.new_context()
    page = context.new_page()
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(lab)
    page.wait_for_function(NOTEBOOK_OPEN, timeout=60_000)
    trusted = page.evaluate(CELLS_TRUSTED)
    assert trusted and not any(trusted), f"the output notebook should be untrusted: {trusted}"

    cell = page.locator(".jp-CodeCell").filter(
        has=page.locator(".jp-InputArea", has_text="%nbflow run")).first
    cell.scroll_into_view_if_needed(timeout=30_000)
    img = cell.locator(".jp-OutputArea-output img").first
    img.wait_for(state="visible", timeout=30_000)
    src = img.get_attribute("src") or ""
    assert src.startswith("data:image/png;base64,"), src[:60]
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                           arg=img.element_handle(), timeout=30_000)
    size = img.evaluate("(img) => [img.naturalWidth, img.naturalHeight]")
    assert size[0] > 100 and size[1] > 100, size
    box = img.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100, box
    outputs = cell.locator(".jp-OutputArea-output")
    texts = [t for t in outputs.all_inner_texts() if "DagWidget(" in t]
    assert not texts, f"the widget output shows as text: {texts}"
    assert cell.locator("text=Error displaying widget").count() == 0
    assert cell.locator("text=Loading widget").count() == 0

    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / "untrusted-output.png"))
