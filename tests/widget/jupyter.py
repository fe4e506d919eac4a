"""Real Jupyter servers and Debian's Chromium for the browser tests, started and stopped by pid.

:func:`jupyter_server` starts JupyterLab or Notebook 7 on 127.0.0.1 with a token, its own
config, runtime, settings and workspace dirs (so tests never share state with the user's
Jupyter), and stops it by its process group. :func:`chromium` starts headless Chromium
(never a downloaded browser) and connects Playwright to it over CDP.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from conftest import wait_until  # the tests' one poller (tests/conftest.py)

CHROMIUM = "/usr/bin/chromium"
TOKEN = "nbflow-test"
#: JupyterLab settings of every test server: no "news" toast in screenshots
QUIET = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                          "checkForUpdates": False}}


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


def isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a test server: Jupyter's dirs under ``tmp_path``, no nbflow
    settings from the environment the tests run in."""
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    for name in ("NBFLOW_CACHE_DIR", "NBFLOW_EVENTS_LOG", "NBFLOW_CLUSTER", "NBFLOW_EXECUTOR"):
        env.pop(name, None)
    env.update(JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "user-settings"), **extra)
    return env


@contextlib.contextmanager
def jupyter_server(app: str, root: Path, tmp_path: Path,
                   settings: Mapping[str, Any] | None = None,
                   server_config: Mapping[str, Any] | None = None,
                   env: Mapping[str, str] | None = None) -> Iterator[str]:
    """``jupyter lab`` or ``jupyter notebook`` serving ``root``; yields its base URL.

    ``settings`` are JupyterLab settings overrides (with :data:`QUIET`),
    ``server_config`` a ``jupyter_server_config.json`` for this server only.
    """
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    if server_config:
        (config / "jupyter_server_config.json").write_text(json.dumps(server_config))
    app_settings = tmp_path / "settings"
    app_settings.mkdir(exist_ok=True)
    (app_settings / "overrides.json").write_text(json.dumps({**QUIET, **(settings or {})}))
    port = free_port()
    app_class = "LabApp" if app == "lab" else "JupyterNotebookApp"
    cmd = [sys.executable, "-m", "jupyter", app, "--no-browser", "--allow-root",
           "--ip", "127.0.0.1", f"--port={port}", f"--IdentityProvider.token={TOKEN}",
           f"--ServerApp.root_dir={root}", f"--{app_class}.expose_app_in_browser=True",
           f"--{app_class}.app_settings_dir={app_settings}", "--ServerApp.port_retries=0"]
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=dict(env or isolated_env(tmp_path)), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError("the Jupyter server stopped:\n"
                                     + log_path.read_text()[-3000:])
            with urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2):
                return True

        try:
            wait_until(up, 60, "the Jupyter server answers", interval=0.2)
            yield base
        finally:
            stop(proc)


@contextlib.contextmanager
def chromium(tmp_path: Path) -> Iterator[Any]:
    """Debian's headless Chromium, started by us (so we hold its pid), driven over CDP."""
    from playwright import sync_api

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
            def connected() -> Any:
                if proc.poll() is not None:
                    raise AssertionError(f"{CHROMIUM} stopped (exit {proc.returncode})")
                try:
                    return p.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
                except Exception:
                    return None

            browser = wait_until(connected, 30, "Chromium accepts CDP", interval=0.2)
            yield browser
            browser.close()
    finally:
        stop(proc)
