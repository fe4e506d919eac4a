"""A task whose cell no longer declares it leaves the flow (issue 20, item 8: ghost tasks).

Front ends name the cell of each execute request (``cellId`` in its metadata, as
JupyterLab, Notebook 7 and VS Code send it); nbclient does not, so the real-kernel
test sends the requests as JupyterLab does. The in-process tests pass the cell id
to IPython's ``run_cell`` as ipykernel does.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import errors, text


class FrontEnd:
    """Runs cells in a real kernel the way JupyterLab does: each execute request names
    its cell (``metadata.cellId``), so a re-run cell is known as the same cell."""

    def __init__(self, k: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.k = k
        self.cell_id: str | None = None
        kc = k.client.kc

        def execute(code: str, silent: bool = False, store_history: bool = True,
                    user_expressions: dict[str, Any] | None = None,
                    allow_stdin: bool | None = None, stop_on_error: bool = True) -> str:
            content = {"code": code, "silent": silent, "store_history": store_history,
                       "user_expressions": user_expressions or {}, "allow_stdin": False,
                       "stop_on_error": stop_on_error}
            msg = kc.session.msg("execute_request", content, metadata={"cellId": self.cell_id})
            kc.shell_channel.send(msg)
            return str(msg["header"]["msg_id"])

        monkeypatch.setattr(kc, "execute", execute)  # what nbclient calls for each cell

    def __call__(self, cell_id: str, source: str) -> Any:
        self.cell_id = cell_id
        return self.k(source)


@pytest.mark.slow
def test_a_renamed_task_cell_leaves_no_ghost_in_a_real_kernel(k, monkeypatch):
    run = FrontEnd(k, monkeypatch)
    run("setup", "scale = 0")
    run("cell-a", "%%nbflow task ratio\n10 / scale")
    first = run("run", "%nbflow run")
    assert "ZeroDivisionError" in str(errors(first))
    # the user renames the task, and fixes its code, in the same cell
    renamed = run("cell-a", "%%nbflow task share\n10 / max(scale, 1)")
    assert not errors(renamed)
    assert text(renamed).splitlines()[-1] == "nbflow: dropped task 'ratio': its cell now " \
        "declares 'share'"
    again = run("run", "%nbflow run")  # the ghost 'ratio' would fail this run again
    assert not errors(again), errors(again)
    assert text(run("check", "import nbflow\nprint(sorted(nbflow.notebook_flow().tasks), share)")) \
        == "['share'] 10.0\n"


def run_cell(ip: Any, cell_id: str | None, source: str) -> Any:
    """Run ``source`` as the cell ``cell_id`` (as ipykernel passes a front end's cell id)."""
    return ip.shell.run_cell(source, store_history=True, cell_id=cell_id)


def test_a_cell_that_stops_declaring_a_task_drops_it(ip, capsys):
    run_cell(ip, "c1", "%%nbflow task load\n[1, 2, 3]")
    run_cell(ip, "c2", "%%nbflow task total\nsum(load)")
    assert sorted(ip.flow.tasks) == ["load", "total"]
    capsys.readouterr()
    # re-running a cell unchanged keeps its task
    run_cell(ip, "c2", "%%nbflow task total\nsum(load)")
    assert "dropped" not in capsys.readouterr().out
    # an ordinary cell now: its task goes
    run_cell(ip, "c2", "total = 6")
    assert capsys.readouterr().out == "nbflow: dropped task 'total': its cell no longer " \
        "declares it\n"
    assert sorted(ip.flow.tasks) == ["load"]
    assert ip.ns["total"] == 6  # the notebook's values are the user's


def test_a_renamed_function_task_is_dropped(ip, capsys):
    source = "import nbflow as nf\nflow = nf.notebook_flow()\n@flow.task\ndef {}():\n    return 1"
    run_cell(ip, "f", source.format("first"))
    run_cell(ip, "f", source.format("second"))
    assert sorted(ip.flow.tasks) == ["second"]
    assert "nbflow: dropped task 'first': its cell now declares 'second'" in capsys.readouterr().out


def test_only_the_cell_that_declared_a_task_last_drops_it(ip):
    run_cell(ip, "x", "%%nbflow task a\n1")
    run_cell(ip, "y", "%%nbflow task a\n2")  # a copy of the cell, run after it: y owns 'a'
    run_cell(ip, "x", "%%nbflow task b\n1")
    assert sorted(ip.flow.tasks) == ["a", "b"]
    run_cell(ip, "y", "%%nbflow task c\n2")
    assert sorted(ip.flow.tasks) == ["b", "c"]


def test_a_failing_cell_drops_nothing(ip):
    run_cell(ip, "x", "%%nbflow task a\n1")
    result = run_cell(ip, "x", "%%nbflow task b\n1 +")  # a syntax error: nothing declared
    assert not result.success
    assert sorted(ip.flow.tasks) == ["a"]
    run_cell(ip, "x", "%%nbflow task b\n1 + 1")
    assert sorted(ip.flow.tasks) == ["b"]


def test_without_cell_ids_nothing_is_dropped(ip):
    run_cell(ip, None, "%%nbflow task a\n1")
    run_cell(ip, None, "%%nbflow task b\n1")
    assert sorted(ip.flow.tasks) == ["a", "b"]
