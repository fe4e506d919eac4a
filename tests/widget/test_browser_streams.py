"""A streaming task's node in a real browser: JupyterLab + Debian's Chromium + Playwright.

Opens tests/widget/notebooks/stream.ipynb (a generator task cell and a map of it), runs
all cells, and checks that the stream's node counts its items with a rate and that its
panel shows items made, in flight and done. Server and browser are stopped by pid.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .jupyter import CHROMIUM, TOKEN, chromium, jupyter_server
from .test_browser import ARTIFACTS, KERNEL_READY

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

HERE = Path(__file__).parent

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (scripts/test.sh installs Debian's chromium as root)",
                allow_module_level=True)
pytest.importorskip("playwright.sync_api")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(HERE / "notebooks" / "stream.ipynb", root / "stream.ipynb")
    settings = {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": False}}
    with jupyter_server("lab", root, tmp_path, settings, None) as base:
        yield f"{base}/lab/tree/stream.ipynb?token={TOKEN}"


def test_a_stream_node_counts_its_items_in_the_browser(lab: str, tmp_path: Path) -> None:
    with chromium(tmp_path) as browser:
        context = browser.contexts[0] if browser.contexts else browser.new_context()
        page = context.new_page()
        page.set_viewport_size({"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(lab)
        page.wait_for_function(KERNEL_READY, timeout=60_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        root = page.locator(".nbf-root").last
        root.wait_for(timeout=60_000)
        page.wait_for_function("""() => { const r = [...document.querySelectorAll('.nbf-root')].pop();
            return r && r.dataset.runStatus === 'succeeded'; }""", timeout=60_000)
        source = root.locator("g.node[data-name='source']")
        page.wait_for_function("""() => { const r = [...document.querySelectorAll('.nbf-root')].pop();
            const g = r && r.querySelector("g.node[data-name='source']");
            return g && /30 items/.test(g.textContent); }""", timeout=30_000)
        assert "/s" in (source.text_content() or "")
        assert "30/30" in (root.locator("g.node[data-name='doubled']").text_content() or "")
        source.click()
        facts = root.locator(".nbf-panel .nbf-facts")
        facts.wait_for(timeout=10_000)
        assert "30 made, 0 in flight, 30 done" in facts.inner_text()
        (ARTIFACTS / "screens").mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "screens" / "stream-node.png"), full_page=True)
        assert not [e for e in errors if "nbf" in e or "widget.js" in e], errors
