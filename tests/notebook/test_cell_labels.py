"""Every message names the cell the user sees: ``In[N]`` with N the count stored in the notebook.

A real kernel through nbclient: the number a cell shows is the ``execution_count``
nbclient stores from the kernel's reply, which is what these tests compare with.
"""

from __future__ import annotations

import pytest

from .conftest import errors, text

pytestmark = pytest.mark.slow


def traceback_of(cell) -> str:
    [err] = errors(cell)
    return "\n".join(err.traceback)


def test_a_failing_task_names_its_cell_and_line(k):
    k("%%nbflow task ok\n20")
    direct = k("%%nbflow task direct\nx = ok + 1\nx / 0")
    cell = k("%nbflow run")
    assert cell.execution_count == direct.execution_count + 1
    tb = traceback_of(cell)
    n = direct.execution_count
    assert f"--- direct (attempt 1, cell In[{n}]) ---" in tb
    assert f'File "<cell In[{n}]: task direct>", line 3, in direct' in tb
    assert "    x / 0" in tb
    assert f"In[{n + 1}]" not in tb


def test_a_redeclared_task_names_its_new_cell_not_the_run_cell(k):
    k("%%nbflow task ok\n20")
    k("%%nbflow task direct\nok")
    k("%nbflow run")
    again = k("%%nbflow task direct\nvalue = ok - 20\nok / value")
    cell = k("%nbflow run")
    tb = traceback_of(cell)
    n = again.execution_count
    assert f'File "<cell In[{n}]: task direct>", line 3, in direct' in tb
    assert f"In[{cell.execution_count}]" not in tb


def test_a_helper_defined_in_another_cell_shows_that_cell(k):
    helper = k("def helper(v):\n    w = v + 1\n    raise ValueError(f'helper got {w}')")
    task = k("%%nbflow task uses_helper\nhelper(1)")
    cell = k("%nbflow run")
    tb = traceback_of(cell)
    assert f'File "<cell In[{task.execution_count}]: task uses_helper>", line 2, in ' \
        "uses_helper" in tb
    assert f'File "<cell In[{helper.execution_count}]>", line 3, in helper' in tb
    assert "ValueError: helper got 2" in tb
    assert "ipykernel_" not in tb


def test_a_helper_frame_from_a_process_shows_its_cell(k):
    helper = k("def helper(v):\n    raise ValueError(f'helper got {v}')")
    k("%%nbflow task uses_helper\nhelper(1)")
    tb = traceback_of(k("%nbflow run --executor processes"))
    assert f'File "<cell In[{helper.execution_count}]>", line 2, in helper\n' \
        "    raise ValueError(f'helper got {v}')" in tb  # the worker had no cell text
    assert "ipykernel_" not in tb


def test_a_syntax_error_names_its_cell(k):
    k("1 + 1")
    bad = k("%%nbflow task bad\nx = 1\ny = (x,,)")
    err = text(bad, "stderr")
    assert f"invalid syntax in task cell 'bad' (cell In[{bad.execution_count}], line 3)" in err


def test_checks_before_a_run_name_the_reading_cell(k):
    uses = k("%%nbflow task uses\nmissing_valu + 1")
    cell = k("missing_value = 1\n%nbflow run")
    err = text(cell, "stderr")
    assert f"Task 'uses' (cell In[{uses.execution_count}], line 2) reads 'missing_valu'" in err


def test_why_names_the_declaring_cell(k):
    k("%%nbflow task first\n1")
    declared = k("%%nbflow task second\nfirst + 1")
    k("%nbflow run")
    why = k("%nbflow why second")
    assert text(why).startswith(f"second (cell In[{declared.execution_count}]): ")
