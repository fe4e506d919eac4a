"""The magics in IPython's in-process shell: declare, run, edit and re-run, explain, errors."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

import nbflow as nf
from nbflow.errors import UnknownTaskError

from .conftest import wait_until


def declare_pipeline(ip):
    ip("import math\nFACTOR = 2\ndef double(x):\n    return x * FACTOR\nn = 4")
    ip("%%nbflow task load\nload = list(range(n))")
    ip("%%nbflow task clean\n[double(v) for v in load if v > 0]")
    ip("%%nbflow task total\nsum(clean) + math.floor(0.5)")


def test_declaring_prints_one_line_and_does_not_run(ip, capsys):
    declare_pipeline(ip)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "nbflow: task 'load' (upstream: none; notebook: n): new",
        "nbflow: task 'clean' (upstream: load): new",
        "nbflow: task 'total' (upstream: clean): new",
    ]
    assert "load" not in ip.ns
    assert list(ip.flow.tasks) == ["load", "clean", "total"]
    assert ip.flow.upstreams("total") == ("clean",)


def test_run_binds_results_and_summarises(ip, capsys):
    declare_pipeline(ip)
    capsys.readouterr()
    ip("%nbflow run")
    assert (ip.ns["load"], ip.ns["clean"], ip.ns["total"]) == ([0, 1, 2, 3], [2, 4, 6], 12)
    out = capsys.readouterr().out
    assert "nbflow: run succeeded in" in out
    assert "3 computed (load, clean, total)" in out


def test_editing_a_cell_recomputes_only_what_it_affects(ip, capsys):
    declare_pipeline(ip)
    ip("%nbflow run")
    # a comment-only edit keeps the cache
    ip("%%nbflow task clean\n# keep positives\n[double(v) for v in load if v > 0]  # here")
    assert capsys.readouterr().out.strip().endswith(": unchanged")
    ip("%nbflow run")
    assert ip.flow.last_run.states == {"load": "cached", "clean": "cached", "total": "cached"}

    ip("%%nbflow task clean\n[double(v) for v in load if v > 1]")
    assert "changed; stale downstream: total" in capsys.readouterr().out
    ip("%nbflow status")
    status = capsys.readouterr().out
    assert [line.split()[:2] for line in status.splitlines()[2:]] == [
        ["load", "cached"], ["clean", "stale"], ["total", "stale"]]
    ip("%nbflow run")
    assert ip.flow.last_run.states == {"load": "cached", "clean": "succeeded",
                                       "total": "succeeded"}
    assert ip.ns["total"] == 10


def test_stale_says_whether_the_code_or_an_upstream_changed(ip, capsys):
    declare_pipeline(ip)
    assert ip.flow.stale("clean") is None  # nothing ran: no result to be stale
    ip("%nbflow run")
    assert [ip.flow.stale(n) for n in ("load", "clean", "total")] == [None, None, None]
    ip("%%nbflow task clean\n[double(v) for v in load if v > 1]")
    assert ip.flow.stale("load") is None
    assert ip.flow.stale("clean") == "its code changed"
    assert ip.flow.stale("total") == "its upstream 'clean' changed"
    with pytest.raises(UnknownTaskError, match="totl"):
        ip.flow.stale("totl")
    capsys.readouterr()
    ip("%nbflow status")
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["load"].split()[1] == "succeeded" and not rows["load"].endswith("changed")
    assert rows["clean"].split()[1] == "stale" and rows["clean"].endswith("  code changed")
    assert rows["total"].split()[1] == "stale"
    assert rows["total"].endswith("  upstream 'clean' changed")
    ip("%nbflow run")
    assert [ip.flow.stale(n) for n in ("load", "clean", "total")] == [None, None, None]


def test_widget_runs_recompute_forced_tasks_and_bind_their_results(ip):
    """The widget's node actions start runs through runner.start, as %nbflow run does."""
    from nbflow.notebook import runner

    declare_pipeline(ip)
    ip("%nbflow run")
    del ip.ns["clean"]
    run = runner.start(ip.flow, ip.ns, ["clean", "total"], force=["clean", "total"])
    run.wait(10)
    assert ip.flow.last_run is run
    assert run.states == {"load": "cached", "clean": "succeeded", "total": "succeeded"}
    assert ip.ns["clean"] == [2, 4, 6]  # bound by the run's Binder
    assert ip.flow.history.get("clean").run_id == run.id  # and recorded for %nbflow why
    again = runner.start(ip.flow, ip.ns, ["total"])
    again.wait(10)
    assert again.states == {"load": "cached", "clean": "cached", "total": "cached"}


def test_helper_source_and_globals_are_part_of_the_key(ip, capsys):
    declare_pipeline(ip)
    ip("%nbflow run")
    ip("def double(x):\n    return x * FACTOR + 0")
    capsys.readouterr()
    ip("%nbflow why clean")
    assert "Next run: clean will re-run: function 'double' changed." in capsys.readouterr().out
    ip("%nbflow run")
    assert ip.flow.last_run.states["clean"] == "succeeded"
    assert ip.flow.last_run.states["load"] == "cached"

    ip("FACTOR = 3")
    capsys.readouterr()
    ip("%nbflow why total")
    why = capsys.readouterr().out.splitlines()
    assert why[0].startswith("total (cell In[")
    assert "recomputed in run" in why[0] and "upstream 'clean' was recomputed" in why[0]
    assert why[1] == "Next run: total will re-run: upstream 'clean' will re-run."
    ip("%nbflow why clean")
    assert "global 'FACTOR' (read by 'double') changed" in capsys.readouterr().out
    ip("%nbflow run")
    assert ip.ns["total"] == 18
    capsys.readouterr()
    ip("%nbflow why clean")
    assert "Next run: clean will be reused" in capsys.readouterr().out


def test_notebook_variables_are_parameters(ip, capsys):
    declare_pipeline(ip)
    ip("%nbflow run")
    ip("n = 3")
    capsys.readouterr()
    ip("%nbflow why load")
    assert "parameter 'n' 4 -> 3" in capsys.readouterr().out
    ip("%nbflow run")
    assert ip.ns["load"] == [0, 1, 2]
    ip("%nbflow run -p n=6 total")
    assert ip.ns["load"] == [0, 1, 2, 3, 4, 5]
    assert ip.ns["n"] == 3  # -p does not change the notebook


def test_flow_task_functions_and_task_cells_share_the_flow(ip):
    ip("flow = nf.notebook_flow()" if False else "import nbflow as nf\nflow = nf.notebook_flow()")
    ip("@flow.task\ndef source(size=3):\n    return list(range(size))")
    ip("%%nbflow task squares\n[v * v for v in source]")
    ip("@flow.task\ndef report(squares):\n    return f'{len(squares)} squares'")
    ip("@flow.task\ndef source(size=3):\n    return list(range(size + 1))")  # re-run a cell
    ip("%nbflow run")
    assert ip.ns["report"] == "4 squares"
    assert ip.ns["squares"] == [0, 1, 4, 9]


def test_a_task_declared_after_its_reader_becomes_its_upstream(ip, capsys):
    ip("%%nbflow task total\nsum(values)")
    assert "notebook: values (not defined yet)" in capsys.readouterr().out
    ip("%%nbflow task values\n[1, 2, 3]")
    assert ip.flow.upstreams("total") == ("values",)
    ip("%nbflow run")
    assert ip.ns["total"] == 6


def test_map_and_options(ip):
    ip("%%nbflow task items\n[1, 2, 3]")
    ip("%%nbflow task sq --map items --retries 2 --retry-delay 0.01 --timeout 5 --priority 3 "
       "--max-parallel 2 --resources GPU=1 --no-cache\nitems * items")
    opts = ip.flow.tasks["sq"].options
    assert (opts.map, opts.retries, opts.retry_delay, opts.timeout, opts.priority,
            opts.max_parallel, dict(opts.resources or {}), opts.cache) == \
        ("items", 2, 0.01, 5.0, 3, 2, {"GPU": 1.0}, False)
    ip("%%nbflow task handler --run-on always --after sq\n'done'")
    assert ip.flow.tasks["handler"].options.after == ("sq",)
    ip("%nbflow run")
    assert ip.ns["sq"] == [1, 4, 9]
    assert ip.ns["handler"] == "done"


def test_task_output_is_shown_under_the_run_cell_and_kept(ip, capsys):
    ip("from IPython.display import display, HTML\nimport sys")
    ip("%%nbflow task talk\nprint('hello from talk')\nprint('careful', file=sys.stderr)\n"
       "display(HTML('<b>bold</b>'))\n1")
    capsys.readouterr()
    ip("%nbflow run")
    captured = capsys.readouterr()
    assert "[talk]\nhello from talk\n" in captured.out
    assert "careful" in captured.err
    output = ip.flow.last_run.task("talk").output[None]
    assert output.text() == "hello from talk\n"
    assert output.displays == [{"data": {"text/plain": "<IPython.core.display.HTML object>",
                                         "text/html": "<b>bold</b>"}, "metadata": {}}]
    ip("%nbflow output talk")
    assert "hello from talk" in capsys.readouterr().out


def test_background_run_returns_at_once_and_binds_later(ip, capsys):
    ip("import threading\nprinted = threading.Event()\nrelease = threading.Event()")
    ip("%%nbflow task slow\nprint('slow output')\nprinted.set()\nrelease.wait(10)\n42")
    capsys.readouterr()
    # the task cannot end before `release` is set, so the cell returned while it ran
    result = ip("%nbflow run --background")
    run = result.result
    assert isinstance(run, nf.Run)
    assert not run.done
    wait_until(ip.ns["printed"].is_set)
    ip("print('other cell')")
    ip("%nbflow status")
    out = capsys.readouterr().out
    assert "slow output" not in out  # the task printed while these cells ran
    assert "slow  running" in out
    assert "slow" not in ip.ns
    ip("release.set()")
    run.wait(10)
    assert ip.ns["slow"] == 42  # run.wait returns once the last events were delivered
    ip("%nbflow wait")
    assert "[slow]\nslow output" in capsys.readouterr().out


def test_cancel_a_task_of_a_background_run(ip, capsys):
    ip("import threading\nrelease = threading.Event()")
    ip("%%nbflow task stuck\nrelease.wait(10)\n1")
    ip("%%nbflow task after_stuck\nstuck + 1")
    ip("%%nbflow task fine\n2")
    ip("%nbflow cancel", ok=False)  # nothing has run yet: a usage error
    run = ip("%nbflow run --background").result
    wait_until(lambda: run.task("stuck").state == "running")
    result = ip("%nbflow cancel stuk", ok=False)
    assert isinstance(result.error_in_exec, UsageError)
    assert "Did you mean 'stuck'?" in str(result.error_in_exec)
    capsys.readouterr()
    ip("%nbflow cancel stuck")
    assert "cancelling task 'stuck'" in capsys.readouterr().out
    run.wait(10)
    ip("release.set()")
    assert run.states == {"stuck": "cancelled", "after_stuck": "skipped", "fine": "succeeded"}
    assert ip.ns["fine"] == 2 and "stuck" not in ip.ns
    ip("%nbflow cancel")
    assert "the last run has ended (cancelled)" in capsys.readouterr().out


def test_failing_task_is_the_cell_error_with_the_cell_line(ip, capsys):
    ip("%%nbflow task boom\nx = 1\ny = x - 1\nx / y")
    result = ip("%nbflow run", ok=False)
    err = result.error_in_exec
    assert isinstance(err, nf.FlowFailed)
    lines = err._render_traceback_()
    assert "FlowFailed" in lines[0] and "boom" in lines[0]
    assert any('File "<cell In[' in line and "task boom>\", line 4, in boom" in line
               for line in lines)
    assert "    x / y" in lines
    assert not any("nbflow/" in line for line in lines)  # no frames of nbflow's code
    assert lines[-1] == "ZeroDivisionError: division by zero"


@pytest.mark.parametrize(("source", "message"), [
    ("%%nbflow task bad --bogus 3\n1", "%%nbflow task: unrecognized arguments: --bogus 3"),
    ("%%nbflow task bad --retries many\n1", "argument --retries: invalid int value"),
    ("%%nbflow task 1bad\n1", "is not a valid task name"),
    # issue 20, item 7: a SyntaxError traceback from the compiled function
    ("%%nbflow task class\n1", "%%nbflow task: 'class' is a Python keyword: no parameter or "
     "variable can be named 'class', so no task could use its result; name it 'class_' or "
     "another word"),
    ("%%nbflow task print\n1", "%%nbflow task: 'print' is a Python builtin"),
    ("%%nbflow task slow --timeout nan\n1", "Task 'slow': option 'timeout' must be a finite "
     "number of seconds > 0, or None (no timeout), got nan (float)"),
    ("%nbflow task bad", "must be the first line of a cell"),
    ("%nbflow", "missing a subcommand"),
    ("%nbflow frobnicate", "invalid choice: 'frobnicate'"),
    ("%nbflow run nope", "'nope', which is not a task"),
    ("%nbflow why nope", "no task named 'nope'"),
    ("%nbflow drop nope", "no task named 'nope'"),
    ("%%nbflow task m --map value\nvalue", "--map 'value' must be an upstream task"),
    ("%%nbflow task m --map other\n1", "'other' is not read by the cell"),
    ("%%nbflow run\n1", "is a line magic"),
])
def test_usage_mistakes_are_one_line_usage_errors(ip, capsys, source, message):
    ip("value = 3")
    result = ip(source, ok=False)
    assert isinstance(result.error_in_exec, UsageError)
    assert message in str(result.error_in_exec)
    assert "Traceback" not in capsys.readouterr().err


def test_a_task_may_not_hide_a_builtin(ip, capsys):
    # Issue 20, item 8: `%%nbflow task print` was declared, the run bound its result over
    # print() in the notebook, and `%nbflow drop print` did not bring print() back
    result = ip("%%nbflow task print\n'shadow'", ok=False)
    assert str(result.error_in_exec) == (
        "%%nbflow task: 'print' is a Python builtin: the notebook binds a task's result under "
        "the task's name, which would hide the builtin 'print' from every cell; name it "
        "'print_' or another word")
    assert "print" not in ip.flow
    ip("%%nbflow task hello\nprint('hi')\n1")
    assert ip.flow.upstreams("hello") == ()  # print is the builtin, not a task
    ip("%nbflow run")
    assert "print" not in ip.ns and ip.ns["hello"] == 1
    assert "hi" in capsys.readouterr().out
    # the same name from Python, declared into the notebook's flow
    result = ip("import nbflow as nf\n@nf.notebook_flow().task\ndef sum(n=3):\n    return n",
                ok=False)
    assert isinstance(result.error_in_exec, nf.InvalidOptionError)
    assert str(result.error_in_exec).startswith("Task 'sum': option 'name' is a Python builtin")
    assert "sum" not in ip.flow
    # a plain flow binds nothing into the notebook: there the name is fine
    ip("plain = nf.Flow('plain')\n@plain.task\ndef max():\n    return 1")
    assert "max" in ip.ns["plain"]


def test_syntax_error_reports_the_cell_line_and_declares_nothing(ip):
    result = ip("%%nbflow task bad\nx = 1\ny = = 2\n", ok=False)
    err = result.error_in_exec
    assert isinstance(err, UsageError)
    assert "invalid syntax in task cell 'bad' (cell In[" in str(err)
    assert ", line 3)" in str(err)
    assert "bad" not in ip.flow


@pytest.mark.parametrize("line", ["!ls -l", "%time x = 1"])
def test_ipython_syntax_in_a_task_cell_says_what_to_do_instead(ip, line):
    result = ip(f"%%nbflow task shell\nx = 1\n{line}\n", ok=False)
    err = str(result.error_in_exec)
    assert f"line 3):\n    {line}" in err
    assert "IPython syntax (% magics, ! shell commands) cannot go in a task cell" in err
    assert "subprocess.run" in err and "shell" not in ip.flow


def test_unknown_name_fails_validation_with_a_suggestion(ip):
    ip("data = [1, 2]")
    ip("%%nbflow task uses\nx = 1\nsum(dta) + x")
    result = ip("%nbflow run", ok=False)
    err = result.error_in_exec
    assert isinstance(err, UsageError)
    assert "Task 'uses' (cell In[" in str(err)
    assert "line 3) reads 'dta', which is neither a task nor defined in the notebook. " \
        "Did you mean 'data'?" in str(err)
    assert ip.flow.last_run is None  # nothing ran


def test_status_show_drop_reset_and_help(ip, capsys):
    declare_pipeline(ip)
    ip("%nbflow run")
    capsys.readouterr()
    ip("%nbflow show")
    show = capsys.readouterr().out.splitlines()
    assert show[0] == "Flow 'notebook': 3 tasks"
    assert show[1].split() == ["load", "[reads", "n]"]
    assert show[2].split() == ["clean", "<-", "load"]
    ip("%nbflow status")
    status = capsys.readouterr().out.splitlines()
    assert status[1].split() == ["task", "state", "upstream", "duration", "note"]
    assert status[2].split()[:2] == ["load", "succeeded"]
    ip("%nbflow reset")
    ip("%nbflow run")
    assert set(ip.flow.last_run.states.values()) == {"succeeded"}
    ip("%nbflow drop total")
    assert "total" not in ip.flow
    ip("%nbflow reset --all")
    assert len(ip.flow) == 0
    capsys.readouterr()
    for command in ("", " task", " status", " show", " why", " drop", " reset", " output"):
        ip(f"%nbflow{command} --help")
        assert f"%nbflow{command} [-h]" in capsys.readouterr().out
    ip("%nbflow run --help")
    assert "--background" in capsys.readouterr().out


def test_import_nbflow_does_not_import_ipython():
    import subprocess
    import sys

    code = ("import sys, nbflow; f = nbflow.notebook_flow(); import nbflow.notebook; "
            "print('IPython' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_a_global_that_cannot_be_hashed_makes_the_task_always_run(ip, capsys):
    ip("import threading\nlock = threading.Lock()")
    ip("%%nbflow task guarded\nwith lock:\n    value = 1\nvalue")
    ip("%nbflow run")
    ip("%nbflow run")
    assert ip.flow.last_run.states == {"guarded": "succeeded"}
    capsys.readouterr()
    ip("%nbflow why guarded")
    assert "could not be cached" in capsys.readouterr().out
