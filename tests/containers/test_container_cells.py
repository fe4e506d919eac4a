"""A notebook task cell with ``--image``: the cell's code runs in the image's Python."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbflow import config, containers
from tests.notebook.conftest import ip  # noqa: F401  (the in-process shell fixture)


@pytest.fixture(autouse=True)
def _settings(tmp_path: Path, container_engine: str):
    containers.forget_checks()
    with config.set(job_dir_base=str(tmp_path / "jobs"), container_engine=container_engine):
        yield
    containers.forget_checks()


def test_a_task_cell_with_an_image_runs_there_and_its_errors_name_the_cell(ip, python_image):  # noqa: F811
    ip("import sys\nfactor = 3\ndef triple(x):\n    return x * factor")
    ip(f"%%nbflow task inside --image {python_image}\n"
       "import os\n"
       "inside = (triple(int(os.environ.get('N', '5'))), sys.executable)")
    ip("%nbflow run")
    assert ip.ns["inside"] == (15, "/usr/bin/python3")
    ip(f"%%nbflow task broken --image {python_image}\n"
       "x = 1\n"
       "broken = x / 0")
    result = ip("%nbflow run", ok=False)
    failed = ip.flow.last_run.failures[0]
    assert isinstance(failed.error, ZeroDivisionError)
    assert "broken = x / 0" in failed.traceback and python_image in failed.traceback
    assert result is not None
