"""%nbflow cluster, %nbflow run --cluster and %%nbflow task --executor in IPython's shell."""

from __future__ import annotations

import sys

import pytest
from dask_clusters import local_fixture  # noqa: F401  (the `local` fixture)

import nbflow as nf

pytest.importorskip("IPython")


@pytest.fixture
def ip():
    from IPython.core.interactiveshell import InteractiveShell

    import nbflow.notebook
    from nbflow import capture

    main = sys.modules["__main__"]
    shell = InteractiveShell.instance()
    sys.modules["__main__"] = shell.user_module
    shell.reset(new_session=True)
    nbflow.notebook.reset()
    shell.run_cell("%load_ext nbflow")
    shell.run_cell("%reload_ext nbflow")

    def run(cell: str):
        result = shell.run_cell(cell)
        if not result.success:
            raise AssertionError(f"cell failed: {result.error_in_exec or result.error_before_exec!r}")
        return result

    run.ns = shell.user_ns
    try:
        yield run
    finally:
        nbflow.notebook.reset()
        shell.reset(new_session=True)
        capture.uninstall()
        sys.modules["__main__"] = main


def declare(ip):
    ip("n = 5")
    ip("%%nbflow task numbers\nnumbers = list(range(n))")
    ip("%%nbflow task squares --map numbers\nnumbers * numbers")
    ip("%%nbflow task report --executor threads\nf'total {sum(squares)}'")


def test_run_with_cluster_address(ip, local, capsys):
    declare(ip)
    ip(f"%nbflow run --cluster {local.scheduler_address}")
    assert ip.ns["report"] == "total 30"
    run = nf.notebook_flow().last_run
    assert run.task("numbers").where.startswith("inproc://")


def test_cluster_with_a_bad_target_is_a_usage_error(ip):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    result = shell.run_cell("%nbflow cluster nonsense")
    assert not result.success
    assert "expected local, close or a scheduler address" in str(result.error_in_exec)


def test_cluster_local_then_runs_use_it_and_light_tasks_stay_home_then_close(ip, local, capsys):
    declare(ip)
    ip("%nbflow cluster local")
    out = capsys.readouterr().out
    assert f"dask cluster at {local.scheduler_address}" in out and "%nbflow run uses it" in out
    ip("%nbflow run")
    assert ip.ns["report"] == "total 30"
    assert ip.ns["squares"] == [0, 1, 4, 9, 16]  # bound: gathered from the workers
    run = nf.notebook_flow().last_run
    assert run.task("squares").where.startswith("inproc://")
    assert run.task("report").where.startswith("thread")
    ip("%nbflow cluster close")
    assert "closed the local dask cluster" in capsys.readouterr().out
