"""The widget's "re-run with downstream" in a real kernel, clicked as a front end does.

Regression: after the widget recomputed a task, a plain ``%nbflow run`` bound
the results cached *before* that re-run. The re-run's results must replace the
cached ones (``flow.run(force=[...])``), so the plain run reuses the new values.
"""

from __future__ import annotations

import pytest

from .conftest import errors, text

pytestmark = pytest.mark.slow

WIDGET = "application/vnd.jupyter.widget-view+json"


def click(k, cell, action: str, task: str) -> None:
    """Send the widget shown in ``cell`` the message its front end sends for a node action."""
    [view] = [o["data"][WIDGET] for o in cell.outputs if WIDGET in o.get("data", {})]
    kc = k.client.kc
    msg = kc.session.msg("comm_msg", {"comm_id": view["model_id"], "data": {
        "method": "custom", "content": {"action": action, "task": task}}})
    kc.shell_channel.send(msg)


def values(k) -> tuple[dict[str, str], int, int]:
    out = text(k("print(dict(flow.last_run.states), tick, later)"))
    states, tick, later = out.rsplit(" ", 2)
    return eval(states), int(tick), int(later)


def test_a_plain_run_after_a_widget_rerun_binds_the_new_results(k):
    # a task whose result changes on every computation; the counter is a callable global,
    # so it is not part of the cache key: only a recomputation changes the value
    k("import itertools\nimport nbflow\nflow = nbflow.notebook_flow()\n"
      "ticker = itertools.count(1).__next__")
    k("%%nbflow task tick\nticker()")
    k("%%nbflow task later\ntick * 10")
    first = k("%nbflow run")
    assert not errors(first)
    assert "2 computed (tick, later)" in text(first)
    assert values(k) == ({"tick": "succeeded", "later": "succeeded"}, 1, 10)

    k("first = flow.last_run")
    click(k, first, "rerun", "tick")
    # the kernel handles the comm message before the next cell (one shell channel, in
    # order): the widget's run has started by then; wait in the kernel until it ended
    waited = k("print(flow.last_run is not first, flow.last_run.wait(30).status)")
    assert text(waited) == "True succeeded\n"
    assert values(k) == ({"tick": "succeeded", "later": "succeeded"}, 2, 20)

    plain = k("%nbflow run")
    assert not errors(plain)
    assert "2 cached (tick, later)" in text(plain)
    assert values(k) == ({"tick": "cached", "later": "cached"}, 2, 20)
    # and the counter was not called again
    assert text(k("print(ticker())")) == "3\n"
