"""The widget in a real browser: JupyterLab (and Notebook 7) + Debian's Chromium + Playwright.

Starts the server on 127.0.0.1 with a token, opens tests/widget/notebooks/dag.ipynb,
waits until its kernel is connected, runs all cells, and checks the DOM: one SVG node per
task, final succeeded/failed styles, and the failed node's traceback in the details panel;
and that a view drawn from saved widget state with no kernel behind it says so.
Screenshots go to build/test-artifacts/. Server and browser are stopped by pid.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .jupyter import CHROMIUM, TOKEN, chromium, jupyter_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

HERE = Path(__file__).parent
ARTIFACTS = HERE.parent.parent / "build" / "test-artifacts"
KERNEL_READY = """() => {
  const w = window.jupyterapp?.shell.currentWidget; const sc = w?.sessionContext;
  const k = sc?.session?.kernel;
  return !!(sc?.isReady && k?.connectionStatus === 'connected' && k.status === 'idle');
}"""

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (scripts/test.sh installs Debian's chromium as root)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A Jupyter server (``lab`` or ``notebook``) on 127.0.0.1; yields the notebook URL."""
    # "lab", "notebook", "lab-save-state" (widget state saved), and "...-no-extension":
    # without nbflow's server extension, as a Jupyter server of another environment
    app = request.param
    bare = app.endswith("-no-extension")
    app = app.removesuffix("-no-extension")
    save_state = app.endswith("-save-state")
    app = app.removesuffix("-save-state")
    root = tmp_path / "root"
    root.mkdir()
    for notebook in (HERE / "notebooks").glob("*.ipynb"):  # dag.ipynb, reload.ipynb
        shutil.copy(notebook, root / notebook.name)
    settings = {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": save_state}}
    config = {"ServerApp": {"jpserver_extensions": {"nbflow.notebook.server": False}}} \
        if bare else None
    with jupyter_server(app, root, tmp_path, settings, config) as base:
        path = "lab/tree" if app == "lab" else "notebooks"
        yield f"{base}/{path}/dag.ipynb?token={TOKEN}"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    """Debian's headless Chromium, started by us (so we hold its pid), driven over CDP."""
    with chromium(tmp_path) as started:
        yield started


@pytest.mark.parametrize("server", ["lab", "notebook"], indirect=True)
def test_live_widget_in_the_browser(server: str, browser, request) -> None:
    app = request.node.callspec.params["server"]
    context = browser.contexts[0] if browser.contexts else browser.new_context()
    page = context.new_page()
    page.set_viewport_size({"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server)
    page.wait_for_function(KERNEL_READY, timeout=60_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    # the first widget shows the flow (with a dashboard link); the last one follows the run
    page.locator(".nbf-root").nth(1).wait_for(timeout=60_000)
    root = page.locator(".nbf-root").last
    # Watch the live widget: states seen while the run goes on, until it has failed.
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while True:
        status, shown = page.evaluate("""() => { const r = [...document.querySelectorAll('.nbf-root')].pop();
            const nodes = r ? [...r.querySelectorAll('svg g.node')] : [];
            return [r ? r.dataset.runStatus : '', nodes.map((g) => g.dataset.state)]; }""")
        seen.update(shown)
        if status == "failed" and len(shown) == 4:
            break
        assert time.monotonic() < deadline, f"the widget did not finish: {status} {shown}"
        time.sleep(0.05)
    assert "running" in seen  # live deltas arrived while the cell was still running
    nodes = root.locator("svg g.node")
    states = {nodes.nth(i).get_attribute("data-name"): nodes.nth(i).get_attribute("data-state")
              for i in range(nodes.count())}
    assert states == {"load_data": "succeeded", "square": "succeeded", "total": "succeeded",
                      "explode": "failed"}
    # the mapped node shows its branches
    assert "3/3" in (root.locator("g.node[data-name='square']").text_content() or "")
    body = page.locator("body").inner_text()
    assert "Error displaying widget" not in body and "Loading widget" not in body

    root.locator("g.node[data-name='explode']").click()
    traceback = root.locator(".nbf-panel .nbf-traceback")
    traceback.wait_for(timeout=10_000)
    assert "ValueError: explode: total 14 is too small" in traceback.inner_text()

    # no cluster, no link; the flow widget was given one (as a dask run sets it)
    assert root.locator("a.nbf-dashboard").is_hidden()
    link = page.locator(".nbf-root").first.locator("a.nbf-dashboard")
    link.wait_for(state="visible", timeout=10_000)
    assert link.get_attribute("href") == "http://127.0.0.1:8787/status"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"widget-{app}.png"), full_page=True)
    assert not [e for e in errors if "nbf" in e or "widget.js" in e], errors


@pytest.mark.parametrize("server", ["lab-save-state-no-extension"], indirect=True)
def test_a_view_from_saved_state_says_no_kernel_answers(server: str, browser) -> None:
    """With JupyterLab's "save widget state" on, a notebook reopened after a kernel restart
    draws its widgets from the saved state (where nbflow's server extension does not run:
    it would show the pictures instead); each view pinged the kernel on render, got no
    answer, and says it shows the saved state of a given time (see widget.js, "ping")."""
    context = browser.contexts[0] if browser.contexts else browser.new_context()
    page = context.new_page()
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(server)
    page.wait_for_function(KERNEL_READY, timeout=60_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.wait_for_function("""() => { const r = [...document.querySelectorAll('.nbf-root')];
        return r.length === 2 && r[1].dataset.runStatus === 'failed'
          && r.every((v) => v.dataset.live === 'yes'); }""", timeout=120_000)
    # The failing cell's traceback can reach the notebook model after the widget says
    # "failed": wait until the kernel is idle (its last output has arrived), then save,
    # saving again if an output still made the model dirty after a save.
    page.wait_for_function(KERNEL_READY, timeout=60_000)
    page.wait_for_function("""async () => {
        const w = window.jupyterapp.shell.currentWidget;
        if (w.context.model.dirty) { await w.context.save(); }
        return !w.context.model.dirty; }""", timeout=60_000, polling=500)
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session"
                  ".kernel.restart()")
    page.wait_for_function(KERNEL_READY, timeout=60_000)
    page.reload()
    page.wait_for_function(KERNEL_READY, timeout=60_000)
    roots = page.locator(".nbf-root")
    roots.first.locator("svg g.node").first.wait_for(timeout=60_000)
    page.wait_for_function("""() => { const r = [...document.querySelectorAll('.nbf-root')];
        return r.length === 2 && r.every((v) => v.dataset.live === 'no'); }""", timeout=60_000)
    notes = page.locator(".nbf-root .nbf-offline").all_inner_texts()
    assert len(notes) == 2
    for note in notes:
        assert re.fullmatch(r"no answer from the kernel \(showing the saved state of \d\d:\d\d\)",
                            note), note
    # the saved picture itself: the final states of the run
    last = roots.last
    assert last.locator("g.node[data-name='explode']").get_attribute("data-state") == "failed"
    (ARTIFACTS / "screens").mkdir(parents=True, exist_ok=True)
    last.screenshot(path=str(ARTIFACTS / "screens" / "saved-state-not-live.png"))
