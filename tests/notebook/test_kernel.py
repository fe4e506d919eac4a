"""The magics in a real IPython kernel, driven cell by cell through nbclient (a kernel per test)."""

from __future__ import annotations

import json

import pytest

from .conftest import errors, text

pytestmark = pytest.mark.slow


def states(k) -> dict:
    cell = k("print(dict(__import__('nbflow').notebook_flow().last_run.states))")
    return eval(text(cell))


def test_declare_run_edit_rerun(k):
    cell = k("%%nbflow task raw\nraw = [3, 1, 2]")
    assert text(cell) == "nbflow: task 'raw' (upstream: none): new\n"
    k("%%nbflow task ordered\nsorted(raw)")
    k("%%nbflow task top\nordered[-1]")
    cell = k("%nbflow run")
    assert not errors(cell)
    assert "3 computed (raw, ordered, top)" in text(cell)
    assert text(k("print(raw, ordered, top)")) == "[3, 1, 2] [1, 2, 3] 3\n"

    cell = k("%%nbflow task ordered\nsorted(raw, reverse=True)")
    assert "changed; stale downstream: top" in text(cell)
    cell = k("%nbflow run")
    assert "2 computed (ordered, top), 1 cached (raw)" in text(cell)
    assert states(k) == {"raw": "cached", "ordered": "succeeded", "top": "succeeded"}
    assert text(k("print(top)")) == "1\n"
    why = text(k("%nbflow why ordered"))
    assert "recomputed in run" in why and "its code changed" in why


def test_failure_is_the_cell_error_pointing_at_the_task_line(k):
    k("%%nbflow task fine\n10")
    k("%%nbflow task broken\nvalue = fine * 2\nvalue = value - 20\nfine / value")
    cell = k("%nbflow run")
    [err] = errors(cell)
    assert err.ename == "FlowFailed"
    tb = "\n".join(err.traceback)
    assert "task broken>\", line 4, in broken" in tb
    assert "    fine / value" in tb
    assert "ZeroDivisionError: division by zero" in tb
    assert "nbflow/" not in tb
    assert "1 failed (broken)" in text(cell)


def test_background_run_keeps_output_out_of_other_cells(k):
    k("import threading\nfrom IPython.display import display, HTML\n"
      "started = threading.Event()\ngo = threading.Event()")
    k("%%nbflow task slow\nprint('slow says hi')\ndisplay(HTML('<i>slow</i>'))\n"
      "started.set()\ngo.wait(10)\nprint('slow done')\n'result'")
    # the task cannot end before a later cell sets `go`, so this cell returned while it ran
    cell = k("run = %nbflow run --background\nrun")
    assert "Run('notebook'" in cell.outputs[-1]["data"]["text/plain"]
    # the task prints and ends while this cell runs, and none of it lands here
    other = k("started.wait(10); print('busy'); go.set(); run.wait(10); print('still me')")
    assert {(o.output_type, o.get("name")) for o in other.outputs} == {("stream", "stdout")}
    assert text(other) == "busy\nstill me\n"
    status = text(k("%nbflow status"))
    assert "last run" in status and "slow" in status
    assert text(k("run.wait(10); print(slow)")) == "result\n"
    shown = k("%nbflow output slow")
    assert "slow says hi" in text(shown) and "slow done" in text(shown)
    assert any("text/html" in o.get("data", {}) for o in shown.outputs)


def test_blocking_run_shows_outputs_and_rich_displays_under_its_cell(k):
    k("from IPython.display import display, HTML")
    k("%%nbflow task chatty\nimport sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\n"
      "display(HTML('<b>rich</b>'))\n1")
    cell = k("%nbflow run")
    assert "[chatty]\nto stdout\n" in text(cell)
    assert "to stderr" in text(cell, "stderr")
    html = [o for o in cell.outputs if "text/html" in o.get("data", {})]
    assert html[0]["data"]["text/html"] == "<b>rich</b>"


def test_interrupting_the_kernel_cancels_a_blocking_run(k, tmp_path):
    began, ended = tmp_path / "began", tmp_path / "ended"
    k(f"%%nbflow task forever\nopen({str(began)!r}, 'w').close()\n"
      f"import threading\nthreading.Event().wait(30)\nopen({str(ended)!r}, 'w').close()")
    interrupter = k.interrupt_when(began.exists)  # once the task runs
    cell = k("%nbflow run")
    interrupter.join()
    [err] = errors(cell)
    assert err.ename == "KeyboardInterrupt"
    assert err.traceback == ["KeyboardInterrupt: the nbflow run was cancelled"]  # no frames
    assert "run cancelled by a kernel interrupt" in text(cell)
    assert states(k) == {"forever": "cancelled"}
    assert not ended.exists()  # the run ended, cancelled, before the task's body did
    # the kernel is usable afterwards
    assert text(k("print(1 + 1)")) == "2\n"


def test_a_blocking_run_leaves_the_kernel_answering_the_front_end(k, tmp_path):
    """While a blocking ``%nbflow run`` waits, the kernel handles comm messages (what a
    widget's button or a reloaded page sends): this task only ends well once the kernel
    handled one, sent while the cell runs."""
    began, answered = tmp_path / "began", tmp_path / "answered"
    k("def _probe(comm, msg):\n"
      f"    open({str(answered)!r}, 'w').close()\n"
      "get_ipython().kernel.comm_manager.register_target('probe', _probe)")
    k(f"%%nbflow task waits\nimport os, threading\nopen({str(began)!r}, 'w').close()\n"
      "for _ in range(600):\n"
      f"    if os.path.exists({str(answered)!r}):\n"
      "        break\n"
      "    threading.Event().wait(0.05)\n"
      f"'answered' if os.path.exists({str(answered)!r}) else 'no answer'")
    sender = k.send_when(began.exists, "comm_open",
                         {"comm_id": "probe-1", "target_name": "probe", "data": {}})
    cell = k("%nbflow run")
    sender.join()
    assert not errors(cell), errors(cell)
    assert "1 computed (waits)" in text(cell)
    assert text(k("print(waits)")) == "answered\n"


def test_an_awaited_run_line_expands_variables_like_any_magic(k):
    k("%%nbflow task one\n1")
    k("%%nbflow task two\n2")
    cell = k("target = 'two'\n%nbflow run {target}")
    assert not errors(cell), errors(cell)
    assert "1 computed (two)" in text(cell)


def test_processes_executor_and_notebook_helpers(k):
    k("def inc(v):\n    return v + 1")
    k("%%nbflow task base\n[1, 2]")
    k("%%nbflow task more\nprint('in a process')\n[inc(v) for v in base]")
    cell = k("%nbflow run --executor processes")
    assert not errors(cell)
    assert "[more]\nin a process\n" in text(cell)
    assert text(k("print(more)")) == "[2, 3]\n"


def test_usage_error_is_a_cell_error(k):
    cell = k("%nbflow run nosuchtask")
    assert "UsageError" in text(cell, "stderr")
    assert "'nosuchtask', which is not a task" in text(cell, "stderr")


#: a cell's code that waits for the threads that redraw outputs once a run ended
JOIN_REDRAWS = ("import threading\nfor t in threading.enumerate():\n"
                "    if t.name in ('nbflow-display-update', 'nbflow-widget-redraw'):\n"
                "        t.join(60)\n")

RECORD_UPDATES = ("import json\n_updates = []\n_pub = get_ipython().display_pub\n"
                  "_publish = _pub.publish\n"
                  "def _record(data, *args, **kwargs):\n"
                  "    if kwargs.get('update'):\n"
                  "        _updates.append({'text': data.get('text/plain', ''),\n"
                  "                         'succeeded_fill': '#b9e4d3' in data.get('image/svg+xml', ''),\n"
                  "                         'png': 'image/png' in data})\n"
                  "    return _publish(data, *args, **kwargs)\n"
                  "_pub.publish = _record")


def test_a_background_runs_outputs_end_with_the_final_state(k, tmp_path):
    """The saved outputs of `%nbflow run --background` do not say "running" forever: once
    the run ended, the kernel publishes an update of each by its display id (the front end
    applies it to the cell that showed it; nbclient keeps only messages of the cell it is
    running, so the test records what the kernel publishes)."""
    k(RECORD_UPDATES)
    go = tmp_path / "go"
    k(f"%%nbflow task slow\nimport os, threading\nwhile not os.path.exists({str(go)!r}):\n"
      "    threading.Event().wait(0.02)\nslow = 1")
    started = k("%nbflow run --background")
    go.touch()  # the run ends after its widget was shown
    assert any(o.get("data", {}).get("text/plain", "").startswith("DagWidget(")
               for o in started.outputs)  # shown at once, while the run goes on
    k("%nbflow wait")
    # the redraw runs on a thread of its own: wait for it, then read what it published
    updates = k(JOIN_REDRAWS + "print(json.dumps(_updates))")
    published = json.loads(text(updates))
    # the Run's output: as first shown (drawing the widget may take longer than the run),
    # then updated if it was still running
    runs = [o["data"]["text/plain"] for o in started.outputs
            if o.get("data", {}).get("text/plain", "").startswith("Run(")]
    runs += [u["text"] for u in published if u["text"].startswith("Run(")]
    assert runs[-1] == "Run('notebook', succeeded, 1 tasks: 1 succeeded)"
    # the widget's output: as first shown, then redrawn if the run had not ended by then
    widgets = [{"text": o["data"]["text/plain"],
                "succeeded_fill": "#b9e4d3" in o["data"].get("image/svg+xml", ""),
                "png": "image/png" in o["data"]} for o in started.outputs
               if o.get("data", {}).get("text/plain", "").startswith("DagWidget(")]
    widgets += [u for u in published if u["text"].startswith("DagWidget")]
    assert widgets[-1] == {"text": "DagWidget(1 tasks: 1 succeeded)", "succeeded_fill": True,
                           "png": True}
    # a run a cell evaluates to is shown the same way
    shown = k("import nbflow as nf\nnf.notebook_flow().last_run")
    assert [o["data"]["text/plain"] for o in shown.outputs] == [
        "Run('notebook', succeeded, 1 tasks: 1 succeeded)"]


def test_a_widget_shown_during_its_run_is_redrawn_when_the_run_ends(k, tmp_path):
    """A widget a cell evaluates to while its run goes on: its output (the picture a saved
    notebook keeps) is redrawn in the final states once the run ended."""
    go = tmp_path / "go"
    k(RECORD_UPDATES)
    k("import os, threading\nimport nbflow as nf\nflow = nf.Flow('shown')\n"
      "@flow.task\ndef waits():\n"
      f"    while not os.path.exists({str(go)!r}):\n"
      "        threading.Event().wait(0.02)\n"
      "    return 1\n"
      "run = flow.run(background=True)")
    shown = k("run.widget(flow)")
    [first] = [o for o in shown.outputs if o.get("output_type") == "display_data"]
    assert first["data"]["text/plain"] != "DagWidget(1 tasks: 1 succeeded)"
    assert first["metadata"]["nbflow"]["kernel"]["pid"] > 0  # names the kernel that drew it
    go.touch()
    k("run.wait(60)")
    published = json.loads(text(k(JOIN_REDRAWS + "print(json.dumps(_updates))")))
    assert published[-1] == {"text": "DagWidget(1 tasks: 1 succeeded)", "succeeded_fill": True,
                             "png": True}
