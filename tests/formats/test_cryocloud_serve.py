"""``nbflow serve wf.json``: a CryoCloud workflow's dirwatcher is the service's watched
folder, each new file a job with its path as ``fullpath``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from conftest import wait_ended, wait_until

from nbflow.service.store import SqliteJobs

WORKFLOWS = Path(__file__).parent / "cryocloud_workflows"


def test_a_dirwatcher_becomes_the_watched_folder(tmp_path):
    folder = tmp_path / "wf"
    shutil.copytree(WORKFLOWS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    workflow = folder / "watch.json"
    workflow.write_text(json.dumps({"workflow": {
        "name": "watch", "options": {"inbox": {"default": str(inbox)}},
        "nodes": [
            {"module": "dirwatcher", "name": "Input", "downstreamOf": ["entry"],
             "args": {"src": {"option": "inbox"}}},
            {"module": "cc_note", "name": "Seen", "downstreamOf": ["Input"],
             "args": {"message": {"output": "Input.relpath"}}}]}}))
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    log = open(tmp_path / "serve.log", "w")  # closed once the child has it
    proc = subprocess.Popen([sys.executable, "-m", "nbflow", "serve", workflow, "--state-dir",
                             state, "--stable", "0.1"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=tmp_path, env=env)
    log.close()
    try:
        wait_until(lambda: "serving" in (tmp_path / "serve.log").read_text(), timeout=30,
                   what="the service up")
        (inbox / "scene.dat").write_bytes(b"12345")
        db = wait_until(lambda: (state / "jobs.db").exists() and SqliteJobs(state / "jobs.db"),
                        what="the job store")
        wait_until(lambda: [j.state for j in db.jobs()] == ["succeeded"], timeout=60,
                   what="a job for the file")
        [job] = db.jobs()
        assert job.params == {"fullpath": str(inbox / "scene.dat")}
        assert job.results["Seen"] == {"message": "scene.dat"}
        assert "Input: its dirwatcher is the watched folder" in (tmp_path / "serve.log").read_text()
        db.close()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        if wait_ended([proc.pid], timeout=30):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
