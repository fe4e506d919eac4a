"""Cell body -> function: names, result, line mapping, cache-key parts. No IPython needed."""

from __future__ import annotations

import asyncio
import linecache
import traceback

import pytest

from nbflow import Flow
from nbflow.notebook.compiler import (
    CellKey,
    build_function,
    cell_of,
    cell_task,
    classify,
    parse_cell,
    resync,
)

HEADER = "%%nbflow task t"


def parse(body: str, name: str = "t"):
    return parse_cell(name, body, label="cell In[1]", filename=f"<test-cell {name}>",
                      header=f"%%nbflow task {name}")


def test_reads_are_names_used_before_assignment():
    cell = parse("import math\nx = load + 1\ny = helper(x)\nz = [v for v in data if v > lim]\n"
                 "f = lambda q: q + other\nmath.sqrt(x)\n")
    assert list(cell.reads) == ["load", "helper", "data", "lim", "other"]
    assert cell.reads["load"] == 3  # the cell's line (the %%nbflow line is line 1)
    assert cell.result == "expr"


def test_a_name_read_then_reassigned_is_an_input():
    cell = parse("threshold = threshold * 2\ncount += 1\ntotal = 0\ntotal += 1\ntotal")
    assert cell.rebound == {"threshold", "count"}
    assert "total" not in cell.reads


def test_result_is_the_task_variable_else_the_last_expression():
    assert parse("t = 1\n2\n").result == "name"
    assert parse("x = 1\nx + 1\n").result == "expr"
    assert parse("x = 1\n").result == "none"
    ns: dict = {}
    assert build_function(parse("t = 1\n2\n"), (), ns)() == 1
    assert build_function(parse("x = 1\nx + 1\n"), (), ns)() == 2
    assert build_function(parse("x = 1\n"), (), ns)() is None


def test_the_task_reading_its_own_name_is_not_an_input():
    cell = parse("t = 1\nt = t + 1\n")
    assert "t" not in cell.reads


def test_code_key_ignores_comments_and_blank_lines():
    a = parse("x = load + 1\nx\n")
    b = parse("# a comment\n\nx = load + 1   # why\nx\n")
    c = parse("x = load + 2\nx\n")
    assert a.code_key == b.code_key != c.code_key


def test_syntax_error_has_the_cell_line():
    with pytest.raises(SyntaxError) as info:
        parse("x = 1\ny = = 2\n")
    assert info.value.lineno == 3
    assert info.value.filename == "<test-cell t>"


def test_traceback_points_at_the_cell_line():
    fn = build_function(parse("x = load + 1\nx / 0\n"), ("load",), {})
    with pytest.raises(ZeroDivisionError) as info:
        fn(load=1)
    text = "".join(traceback.format_exception(info.value))
    assert 'File "<test-cell t>", line 3, in t' in text
    assert "x / 0" in text  # the source line comes from linecache
    assert linecache.getline("<test-cell t>", 1) == HEADER + "\n"


def test_function_reads_notebook_globals_at_call_time():
    ns: dict = {"scale": lambda v: v * 2}
    fn = build_function(parse("scale(load)\n"), ("load",), ns)
    assert fn(load=3) == 6
    ns["scale"] = lambda v: v * 10
    assert fn(load=3) == 30
    assert "scale" not in ns or ns.get("t") is None  # nothing assigned into the namespace


def test_top_level_await_makes_an_async_task():
    cell = parse("import asyncio\nawait asyncio.sleep(0)\n7\n")
    assert cell.is_async
    assert asyncio.run(build_function(cell, (), {})()) == 7


def test_classify_tasks_data_and_globals():
    import math

    cell = parse("y = helper(load) + n + math.pi + len(items) + missing\n")
    ns = {"helper": lambda v: v, "n": 3, "math": math, "items": [1]}
    inputs, globals_ = classify(cell, {"load"}, ns)
    assert set(inputs) == {"load", "n", "items", "missing"}
    assert set(globals_) == {"helper", "math", "len"}


def test_cell_key_covers_helper_source_transitively_and_the_globals_they_read():
    ns: dict = {"__name__": "__main__", "FACTOR": 2}
    exec("def inner(v):\n    return v * FACTOR\n"
         "def helper(v):\n    return inner(v) + 1\n", ns)
    cell = parse("helper(load)\n")
    _, globals_ = classify(cell, {"load"}, ns)
    key = CellKey(cell, ns, globals_)
    first = key.components()
    assert set(first) == {"function 'helper'", "function 'inner' (read by 'helper')",
                          "global 'FACTOR' (read by 'inner')"}
    ns["FACTOR"] = 3
    assert key.components()["global 'FACTOR' (read by 'inner')"] != \
        first["global 'FACTOR' (read by 'inner')"]
    exec("def inner(v):\n    return v * FACTOR * 2\n", ns)
    assert key.components()["function 'inner' (read by 'helper')"] != \
        first["function 'inner' (read by 'helper')"]
    assert key() == key()  # deterministic


def test_cell_key_copes_with_unpicklable_globals():
    import threading

    ns: dict = {"__name__": "__main__", "lock": threading.Lock()}
    exec("def helper():\n    return lock\n", ns)
    cell = parse("helper()\n")
    key = CellKey(cell, ns, classify(cell, (), ns)[1])
    assert key.components()["global 'lock' (read by 'helper')"].startswith("id:")


def test_cell_task_and_resync_when_an_upstream_is_declared_later():
    flow = Flow("f")
    ns: dict = {"__name__": "__main__", "later": print}  # a function now, a task later
    cell = parse("later + 1\n")
    task = cell_task(cell, flow, ns, {})
    flow.replace(task)
    assert task.inputs == ()
    assert cell_of(task) is cell

    @flow.task
    def later():
        return 1

    assert resync(flow) == ["t"]
    assert flow.tasks["t"].inputs == ("later",)
    assert flow.run().results["t"] == 2
