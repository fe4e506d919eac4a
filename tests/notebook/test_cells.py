"""nbflow.notebook.cells in IPython's in-process shell: the running cell's number, cell files."""

from __future__ import annotations

from nbflow.notebook.cells import cell_label, cell_number, current_count, relabel_traceback


def test_current_count_is_the_running_cells_number(ip):
    ip("from nbflow.notebook.cells import current_count")
    result = ip("seen = current_count()")
    assert result.execution_count is not None
    assert ip.ns["seen"] == result.execution_count


def test_a_nested_cell_without_history_counts_as_the_cell_that_ran_it(ip):
    ip("from nbflow.notebook.cells import current_count")
    result = ip("get_ipython().run_cell('inner = current_count()', store_history=False)")
    assert ip.ns["inner"] == result.execution_count


def test_outside_a_cell_there_is_no_count():
    assert current_count(object()) is None
    assert cell_label(None) == "cell"
    assert cell_label(7) == "cell In[7]"


def test_cell_files_map_to_their_cell_and_tracebacks_are_relabelled(ip):
    helper = ip("def helper():\n    return 1 / 0")
    ip("import traceback\ntry:\n    helper()\nexcept ZeroDivisionError as e:\n"
       "    tb = ''.join(traceback.format_exception(e))")
    filename = ip.ns["helper"].__code__.co_filename
    assert cell_number(filename, ip.shell) == helper.execution_count
    assert cell_number("/nowhere.py", ip.shell) is None
    text = relabel_traceback(ip.ns["tb"], ip.shell)
    assert f'File "<cell In[{helper.execution_count}]>", line 2, in helper\n' \
        "    return 1 / 0" in text
    assert filename not in text
    # a frame formatted where the cell's text was unknown gets its line back
    bare = f'Traceback (most recent call last):\n  File "{filename}", line 2, in helper\nE: x'
    assert relabel_traceback(bare, ip.shell).splitlines()[1:3] == [
        f'  File "<cell In[{helper.execution_count}]>", line 2, in helper',
        "    return 1 / 0"]
    assert relabel_traceback(bare, object()) == bare  # no IPython compiler: unchanged
