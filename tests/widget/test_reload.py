"""The widget after a page reload and after a kernel restart, in a real browser.

JupyterLab + Debian's Chromium + Playwright, as in test_browser.py (whose server and
browser fixtures these tests use). tests/widget/notebooks/reload.ipynb starts a
background run whose last task waits for a file the test never creates, so the kernel is idle while it runs;
finished.ipynb one whose last task ends when the test creates that file.

Screenshots go to build/test-artifacts/screens/, one per problem.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote
from typing import Any

import pytest

from nbflow.widget.layout import STYLES

from .conftest import gated_flow
from .test_model import started_event
from .test_browser import KERNEL_READY, browser, server  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

SCREENS = Path(__file__).parents[2] / "build" / "test-artifacts" / "screens"
#: the page is connected to the kernel (busy or not)
KERNEL_CONNECTED = """() => {
  const k = window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel;
  return k?.connectionStatus === 'connected';
}"""
SLOW = ".nbf-root g.node[data-name='slow']"

#: the nodes drawn in the states the run is in now, in their fill colours
CURRENT_STATES = """([succeeded, running]) => {
  const root = document.querySelector('.nbf-root');
  if (!root) return false;
  const want = {quick: ['succeeded', succeeded], also_quick: ['succeeded', succeeded],
                slow: ['running', running]};
  for (const [name, [state, fill]] of Object.entries(want)) {
    const g = root.querySelector(`g.node[data-name='${name}']`);
    const shape = g && g.querySelector('path, polygon, ellipse');
    if (!g || g.dataset.state !== state || !shape || shape.getAttribute('fill') !== fill)
      return false;
  }
  return true;
}"""

#: per node matching the selector: [seconds it shows, seconds since its task started by
#: the wall clock], or null while it shows no running time
SHOWN_AND_TRUE = """(selector) => [...document.querySelectorAll(selector)].map((g) => {
  const text = g.querySelector('.nbf-state-text');
  const m = text && /running (?:(\\d+)m)?([\\d.]+)s/.exec(text.textContent);
  if (!m || !g.dataset.t0) return null;
  return [60 * Number(m[1] || 0) + Number(m[2]), Date.now() / 1000 - Number(g.dataset.t0)];
})"""
LONG = ".nbf-root g.node[data-name='long']"


def running_times(page: Any, least: float, views: int) -> list[tuple[float, float]]:
    """Wait until ``views`` views of ``long`` show its running time, ``least`` s or more
    after it started; returns [(shown, since its start)] per view."""
    page.wait_for_function(f"""() => {{ const r = ({SHOWN_AND_TRUE})("{LONG}");
        return r.length === {views} && r.every((x) => x && x[1] >= {least}); }}""",
                           timeout=60_000)
    return [tuple(x) for x in page.evaluate(SHOWN_AND_TRUE, LONG)]


def assert_true_times(times: list[tuple[float, float]]) -> None:
    """At least the time since the task started (the ticker repaints every 0.5 s; one
    decimal shown), and no more."""
    for shown, since in times:
        assert since - 0.7 <= shown <= since + 0.2, times


def open_and_run(page: Any, url: str) -> None:
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_function(KERNEL_READY, timeout=60_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.locator(f"{SLOW}[data-state='running']").wait_for(timeout=60_000)
    page.locator(".nbf-root").nth(2).wait_for(timeout=60_000)  # the last cell's view
    # saved with its outputs, so the reloaded page shows the widgets (and the pictures)
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")


def reload_page(page: Any) -> None:
    page.reload()
    page.wait_for_function(KERNEL_READY, timeout=60_000)


@pytest.mark.parametrize("server", ["lab"], indirect=True)
def test_reload_mid_run_shows_live_state_and_true_running_time(server: str, browser) -> None:  # noqa: F811
    url = server.replace("dag.ipynb", "reload.ipynb")
    context = browser.contexts[0] if browser.contexts else browser.new_context()
    page = context.new_page()
    open_and_run(page, url)
    SCREENS.mkdir(parents=True, exist_ok=True)
    # Problem 1, in one page: the last cell's view of `timer_widget` is drawn from a
    # snapshot taken 4 s before (as `long` started); its running time still counts from
    # the task's start (t0), not from when the view first saw the task.
    assert_true_times(running_times(page, 5, views=2))

    reload_page(page)
    page.locator(".nbf-root svg g.node").first.wait_for(timeout=60_000)
    # Problem 2: within a second of the view being drawn, the nodes show the run's
    # current states (the state synced to a new view carries a fresh snapshot), not
    # those of the last snapshot sent (taken as the widget attached: `quick` running)
    page.wait_for_function(CURRENT_STATES,
                           arg=[STYLES["succeeded"]["fill"], STYLES["running"]["fill"]],
                           timeout=1_000)
    body = page.locator("body").inner_text()
    assert "Loading widget" not in body and "Error displaying widget" not in body
    page.locator(".nbf-root").first.screenshot(path=str(SCREENS / "reload-live-state.png"))

    # Problem 1 after the reload: both views show the time since the task started
    times = running_times(page, 10, views=2)
    assert_true_times(times)
    page.locator(".nbf-root").nth(2).screenshot(path=str(SCREENS / "reload-running-time.png"))


@pytest.mark.parametrize("server", ["lab", "lab-save-state"], indirect=True)
def test_after_kernel_restart_the_picture_shows(server: str, browser, tmp_path: Path,  # noqa: F811
                                                request: pytest.FixtureRequest) -> None:
    """Once the kernel that drew the widgets is gone, the reloaded notebook shows their
    pictures, not "Error displaying widget: model not found".

    Each widget output names its kernel process; nbflow's server extension
    (nbflow.notebook.server) drops the widget view of outputs whose kernel is gone when
    it hands the notebook to the page, so JupyterLab shows the SVG beside it. With
    JupyterLab's "save widget state" on as well ("lab-save-state"), the same.
    """
    url = server.replace("dag.ipynb", "reload.ipynb")
    context = browser.contexts[0] if browser.contexts else browser.new_context()
    page = context.new_page()
    open_and_run(page, url)

    saved = json.loads((tmp_path / "root" / "reload.ipynb").read_text())
    outputs = [out for cell in saved["cells"] for out in cell.get("outputs", [])
               if "data" in out]
    dags = [out for out in outputs if out.get("metadata", {}).get("nbflow", {}).get("kernel")]
    assert len(dags) == 3, [list(out["data"]) for out in outputs]
    assert all({"application/vnd.jupyter.widget-view+json", "image/svg+xml", "image/png"}
               <= out["data"].keys() for out in dags)

    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session"
                  ".kernel.restart()")
    page.wait_for_function(KERNEL_READY, timeout=60_000)
    reload_page(page)
    # JupyterLab draws an SVG output as an <img> of it
    pictures = page.locator(".jp-OutputArea-output.jp-RenderedSVG img")
    pictures.first.wait_for(timeout=60_000)
    assert pictures.count() == 3
    body = page.locator("body").inner_text()
    assert "Error displaying widget" not in body and "Loading widget" not in body
    assert page.locator(".nbf-root").count() == 0
    # each is the DAG it replaces, in the states it was drawn in
    sources = [unquote(src) for src in pictures.evaluate_all("(imgs) => imgs.map((i) => i.src)")]
    for source, names in zip(sources, (["quick", "also_quick", "slow"], ["first", "long"],
                                       ["first", "long"])):
        for name in names:
            assert f"<title>{name}</title>" in source
        assert 'data-state="' in source
    SCREENS.mkdir(parents=True, exist_ok=True)
    variant = request.node.callspec.params["server"]
    page.screenshot(path=str(SCREENS / f"kernel-restart-picture-{variant}.png"))


def test_full_state_carries_a_fresh_snapshot() -> None:
    """A view attached later (request_state after a reload) gets the nodes as they are
    now, with a seq after every message sent before; a partial state is unchanged."""
    from nbflow.widget import DagWidget

    flow, gate = gated_flow("fresh")
    run = flow.run(background=True)
    first_done = started_event(run, "first", "succeeded")
    widget = DagWidget(flow, run)
    try:
        assert first_done.wait(30)
        with widget._lock:
            widget._take_snapshot(run)  # the table reads the run's views: `first` ended
        # as after the last delta: the last snapshot sent showed none of that
        widget.snapshot_json = json.dumps({"seq": 0, "time": 0.0, "nodes": {}})
        state = widget.get_state()
        sent = json.loads(state["snapshot_json"])
        assert sent["seq"] > max(0, widget.delta.get("seq", 0))
        assert sent["nodes"] == widget._table.nodes
        assert sent["nodes"]["first"]["s"] == "succeeded"
        assert widget.get_state("snapshot_json")["snapshot_json"] == widget.snapshot_json
    finally:
        gate.set()
        run.wait()


@pytest.mark.parametrize("server", ["lab"], indirect=True)
def test_reload_during_a_blocking_run(server: str, browser, tmp_path: Path) -> None:  # noqa: F811
    """A reload while a blocking ``%nbflow run`` goes on shows the live widget.

    The blocking cell awaits the run on the kernel's event loop (nbflow.notebook.awaiting),
    so the kernel answers the reloaded page's request for its widgets while the run goes
    on: the widget shows the running task, then the run's end: its status line, and the
    failed task's error in the details panel. (The cell's own printed outputs answer a
    request of the page before the reload, which the reloaded page does not follow.)
    """
    url = server.replace("dag.ipynb", "blocking.ipynb")
    context = browser.contexts[0] if browser.contexts else browser.new_context()
    page = context.new_page()
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_function(KERNEL_READY, timeout=60_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    slowly = ".nbf-root g.node[data-name='slowly']"
    page.locator(f"{slowly}[data-state='running']").wait_for(timeout=60_000)
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.reload()
    # (the kernel stays busy: its cell runs until the run ended)
    page.wait_for_function(KERNEL_CONNECTED, timeout=60_000)
    # the live state while the run goes on (the task waits for the file "release"): not
    # "Loading widget..."
    # (JupyterLab first waits up to 3 s for the busy kernel's info, then asks for widgets)
    page.locator(f"{slowly}[data-state='running']").wait_for(timeout=15_000)
    root = page.locator(".nbf-root")
    assert root.locator("g.node[data-name='fast']").get_attribute("data-state") == "succeeded"
    assert "Loading widget" not in page.locator("body").inner_text()
    assert "running" in root.locator(".nbf-status").inner_text()
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENS / "blocking-reload-live.png"))
    (tmp_path / "root" / "release").touch()  # the task may end now
    # the run's end reaches the reloaded widget: the status line, and the error
    root.locator("g.node[data-name='slowly'][data-state='failed']").wait_for(timeout=60_000)
    assert "run failed (1 failed task)" in root.locator(".nbf-status").inner_text()
    root.locator("g.node[data-name='slowly']").click()
    traceback = root.locator(".nbf-panel .nbf-traceback")
    traceback.wait_for(timeout=10_000)
    assert "ValueError: slowly: gave up" in traceback.inner_text()
    page.screenshot(path=str(SCREENS / "blocking-reload-after-run.png"))


#: per view: its run status, whether the kernel answered it, its status line, and
#: {task: [state drawn, status text, fill]}
VIEWS = """() => [...document.querySelectorAll('.nbf-root')].map((r) => ({
  run: r.dataset.runStatus, live: r.dataset.live || '',
  status: (r.querySelector('.nbf-status') || {}).textContent || '',
  nodes: Object.fromEntries([...r.querySelectorAll('svg g.node')].map((g) => {
    const text = g.querySelector('.nbf-state-text');
    const shape = g.querySelector('path, polygon, ellipse');
    return [g.dataset.name, [g.dataset.state, text ? text.textContent : '',
                             shape ? shape.getAttribute('fill') : '']];
  }))}))"""
#: the three views of finished.ipynb show its run ended: every task succeeded
ENDED = """() => { const r = [...document.querySelectorAll('.nbf-root')];
  return r.length === 3 && r.every((v) => v.dataset.runStatus === 'succeeded'
    && v.querySelectorAll("svg g.node[data-state='succeeded']").length === 3); }"""
GATED = ".nbf-root g.node[data-name='gated']"
#: the three views are drawn, and the kernel answered each (see widget.js, "ping")
LIVE = """() => { const r = [...document.querySelectorAll('.nbf-root')];
  return r.length === 3 && r.every((v) => v.dataset.live === 'yes'
    && v.querySelectorAll('svg g.node').length === 3); }"""
SAVE_WHEN_IDLE = """async () => {
  const w = window.jupyterapp.shell.currentWidget;
  if (w.context.model.dirty) { await w.context.save(); }
  return !w.context.model.dirty; }"""


@pytest.mark.parametrize("server", ["lab", "lab-save-state"], indirect=True)
def test_reload_after_a_run_shows_its_end(server: str, browser, tmp_path: Path,  # noqa: F811
                                          request: pytest.FixtureRequest) -> None:
    """A reload after a run ended, its kernel alive, rebuilds every view from the kernel:
    the final states and durations, not running, and not the state saved in the notebook.

    tests/widget/notebooks/finished.ipynb shows one run three times (its widget twice,
    the flow's widget once). The notebook is saved mid-run: with "save widget state" on
    ("lab-save-state") the file then holds widget state with ``gated`` running, and after
    the reload the kernel's state wins over it. The run's end then redraws the outputs'
    pictures, so the notebook may be unsaved at the reload: the page leaves anyway.
    """
    url = server.replace("dag.ipynb", "finished.ipynb")
    context = browser.contexts[0] if browser.contexts else browser.new_context()
    page = context.new_page()
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.on("dialog", lambda dialog: dialog.accept())  # "leave the unsaved page?"
    page.goto(url)
    page.wait_for_function(KERNEL_READY, timeout=60_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.wait_for_function(f"""() => document.querySelectorAll("{GATED}[data-state='running']")
        .length === 3""", timeout=60_000)
    page.wait_for_function(KERNEL_READY, timeout=60_000)  # every cell's output arrived
    page.wait_for_function(SAVE_WHEN_IDLE, timeout=60_000, polling=500)
    saved = json.loads((tmp_path / "root" / "finished.ipynb").read_text())
    widget_state = saved["metadata"].get("widgets", {})
    if request.node.callspec.params["server"] == "lab-save-state":
        # the stale state the reload must not show: `gated` running
        assert '\\"s\\": \\"running\\"' in json.dumps(widget_state), widget_state
    else:
        assert not widget_state

    (tmp_path / "root" / "release").touch()  # `gated` ends, then the run
    page.wait_for_function(ENDED, timeout=60_000)
    page.wait_for_function(KERNEL_READY, timeout=60_000)
    # the run's end redraws the outputs (their pictures), so JupyterLab draws new views:
    # each is live once the kernel answered its ping
    page.wait_for_function(LIVE, timeout=60_000)
    before = page.evaluate(VIEWS)
    for view in before:
        assert view["run"] == "succeeded" and view["live"] == "yes", view
        assert "running" not in json.dumps(view), view
    gated = before[0]["nodes"]["gated"]
    assert re.fullmatch(r"succeeded \d+\.\ds", gated[1]), gated
    assert gated[2] == STYLES["succeeded"]["fill"]

    page.reload()
    page.wait_for_function(KERNEL_READY, timeout=60_000)
    page.wait_for_function(LIVE, timeout=60_000)
    page.wait_for_function(ENDED, timeout=60_000)
    after = page.evaluate(VIEWS)
    # the same final states, durations and status lines as before the reload
    assert after == before
    body = page.locator("body").inner_text()
    assert "Loading widget" not in body and "Error displaying widget" not in body
    SCREENS.mkdir(parents=True, exist_ok=True)
    variant = request.node.callspec.params["server"]
    page.screenshot(path=str(SCREENS / f"reload-after-run-{variant}.png"))
