"""An ``nbflow run`` output notebook opened in JupyterLab is untrusted; its DAG must show.

Untrusted notebooks render no SVG (and no widget view), so the run cell must show the PNG
that the widget output carries. ``nbflow run`` makes the output notebook, JupyterLab runs
on 127.0.0.1 with a fresh data dir (so nothing has signed the notebook), and Debian's
headless Chromium (driven by Playwright over CDP) opens it. A screenshot goes to
build/test-artifacts/screens/untrusted-output.png. Server and browser are stopped by pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240)]

CHROMIUM = "/usr/bin/chromium"
NOTEBOOK = Path(__file__).parents[1] / "batch" / "notebooks" / "static.ipynb"
SCREENS = Path(__file__).parents[2] / "build" / "test-artifacts" / "screens"
TOKEN = "nbflow-untrusted"
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we started (and its children) by its pid's process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def user_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    for name in ("NBFLOW_CACHE_DIR", "NBFLOW_EVENTS_LOG", "NBFLOW_CLUSTER", "NBFLOW_EXECUTOR"):
        env.pop(name, None)
    # a fresh data dir: a fresh notebook-signature database, so the output is untrusted
    env.update(JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "user-settings"))
    return env


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
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "overrides.json").write_text(json.dumps({
        "@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                         "checkForUpdates": False}}))
    port = free_port()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
           "--ip", "127.0.0.1", f"--port={port}", f"--IdentityProvider.token={TOKEN}",
           f"--ServerApp.root_dir={output_notebook.parent}",
           "--LabApp.expose_app_in_browser=True", f"--LabApp.app_settings_dir={settings}",
           "--ServerApp.port_retries=0"]
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(cmd, env=user_env(tmp_path), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("the Jupyter server did not start:\n"
                                + (tmp_path / "server.log").read_text()[-3000:])
                time.sleep(0.2)  # the poll's period
        yield f"{base}/lab/tree/{output_notebook.name}?token={TOKEN}"
    finally:
        stop(proc)
        log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Debian's headless Chromium, started by us (so we hold its pid), driven over CDP."""
    port = free_port()
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", f"--remote-debugging-port={port}",
         "--remote-debugging-address=127.0.0.1", f"--user-data-dir={tmp_path / 'chromium'}",
         "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with sync_api.sync_playwright() as p:
            deadline = time.monotonic() + 30
            while True:
                try:
                    browser = p.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
                    break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)  # the poll's period
            yield browser
            browser.close()
    finally:
        stop(proc)


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
