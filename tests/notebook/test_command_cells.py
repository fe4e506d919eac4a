"""``%%nbflow command NAME`` cells: a shell script declared as a command task (issue 14).

Most tests share one real kernel (nbclient), emptied before each test; the usage
mistakes and the ghost-task case use IPython's in-process shell.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.error import UsageError

from .conftest import Kernel, errors, text
from .test_cell_owners import run_cell


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    k = Kernel()
    try:
        k("%load_ext nbflow")
        yield k
    finally:
        k.close()


@pytest.fixture
def k(kernel: Kernel) -> Kernel:
    """The module's kernel with an empty flow and no cached results."""
    cell = kernel("%nbflow reset --all")
    assert not errors(cell), errors(cell)
    return kernel


def ok(cell: Any) -> str:
    assert not errors(cell), errors(cell)
    return text(cell)


def usage_error(cell: Any) -> str:
    """A kernel shows a UsageError as one line on stderr, not as an error output."""
    assert not errors(cell), errors(cell)
    assert text(cell, "stderr").startswith("UsageError: ")
    return text(cell, "stderr")


def value(k: Kernel, expr: str) -> Any:
    return json.loads(ok(k(f"import json; print(json.dumps({expr}))")))


@pytest.mark.slow
def test_a_command_cell_declares_and_a_later_task_cell_reads_its_result(k, tmp_path):
    marker = tmp_path / "ran"
    declared_cell = k(f"%%nbflow command words\ntouch {marker}\nprintf 'b\\na\\nb\\n'")
    assert ok(declared_cell) == "nbflow: task 'words' (upstream: none): new\n"
    assert not marker.exists()  # running the cell only declares
    ok(k("%%nbflow task top\nsorted(words.stdout.split())[-1]"))
    run = ok(k("%nbflow run"))
    assert "2 computed (words, top)" in run
    assert "[words]\nb\na\nb\n" in run  # the command's output streams under the run's cell
    assert marker.exists()
    assert value(k, "[top, words.returncode, type(words).__name__]") == ["b", 0, "CommandResult"]
    source = value(k, "__import__('nbflow').notebook_flow().tasks['words'].source")
    assert source == f"cell In[{declared_cell.execution_count}]"


@pytest.mark.slow
def test_stdin_and_output_files(k):
    ok(k("%%nbflow task text\n'b\\na\\nb\\n'"))
    ok(k("%%nbflow command count --stdin text --output counts=counts.txt "
         "--output first=first.txt\n"
         "sort | uniq -c | sort -rn > counts.txt\n"
         "head -n1 counts.txt > first.txt\n"
         "wc -l < counts.txt"))
    ok(k("%%nbflow task top\ncount.path('first').read_text().split()[1]"))
    ok(k("%nbflow run"))
    assert value(k, "[top, count.stdout.strip(), count.path('counts').name]") == \
        ["b", "2", "counts.txt"]


@pytest.mark.slow
def test_env_values_are_placeholders_resolved_at_each_run(k):
    ok(k("who = 'a b'"))
    # IPython would expand {who} in a magic's line when the cell runs: not in this header
    declared = ok(k("%%nbflow command greet --env MSG={who} --env 'GREETING=hello there'\n"
                    'echo "$GREETING, $MSG" {who}'))
    assert "notebook: who" in declared
    ok(k("%nbflow run"))
    assert value(k, "greet.stdout") == "hello there, a b a b\n"
    ok(k("who = 'c'"))
    ok(k("%nbflow run"))
    assert value(k, "greet.stdout") == "hello there, c c\n"
    # other %nbflow lines are still expanded, as IPython expands every magic's line
    assert "no task named 'nothing'" in usage_error(k("name = 'nothing'\n%nbflow why {name}"))


@pytest.mark.slow
def test_a_bad_option_name_is_a_usage_error_with_the_close_name(k):
    message = usage_error(k("%%nbflow command warp --outptu tif=warped.tif\ntouch warped.tif"))
    assert "%%nbflow command: unrecognized arguments: --outptu tif=warped.tif. Did you mean" \
        in message
    assert "'--output'" in message
    assert value(k, "sorted(__import__('nbflow').notebook_flow().tasks)") == []


@pytest.mark.slow
def test_an_unknown_placeholder_is_reported_with_the_cell_and_line(k):
    ok(k("%%nbflow command words\necho a b"))
    declared = k("%%nbflow command count\n# count them\necho {wrods} | wc -w")
    assert "notebook: wrods (not defined yet)" in ok(declared)
    assert usage_error(k("%nbflow run")) == (
        f"UsageError: Command 'count' (cell In[{declared.execution_count}], line 3) uses "
        "{wrods}, which is neither a task nor defined in the notebook. Did you mean 'words'?\n")


@pytest.mark.slow
def test_redeclaring_replaces_the_task(k):
    ok(k("%%nbflow command num\necho 1"))
    ok(k("%%nbflow task doubled\nint(num.stdout) * 2"))
    ok(k("%nbflow run"))
    assert value(k, "doubled") == 2
    changed = ok(k("%%nbflow command num --retries 1\necho 5"))
    assert changed == "nbflow: task 'num' (upstream: none): changed; stale downstream: doubled\n"
    assert "2 computed (num, doubled)" in ok(k("%nbflow run"))
    assert value(k, "[doubled, len(__import__('nbflow').notebook_flow())]") == [10, 2]
    same = ok(k("%%nbflow command num --retries 1\necho 5"))
    assert same == "nbflow: task 'num' (upstream: none): unchanged\n"
    assert "1 cached (num)" in ok(k("%nbflow run num"))


@pytest.mark.slow
def test_a_failing_command_is_the_run_cells_error(k):
    ok(k("%%nbflow command broken\necho half way\necho oops >&2\nexit 3"))
    cell = k("%nbflow run")
    [err] = errors(cell)
    assert err.ename == "FlowFailed"
    shown = "\n".join(err.traceback)
    assert "CommandFailed: Command task 'broken' exited with code 3." in shown
    assert "last lines of stderr:\n    oops" in shown
    assert "[broken]\nhalf way\n" in text(cell)


# -- usage mistakes and ghosts, in IPython's in-process shell ---------------------------------


@pytest.mark.parametrize(("source", "message"), [
    ("%%nbflow command 1bad\necho", "%%nbflow command: '1bad' is not a valid task name"),
    ("%%nbflow command print\necho", "%%nbflow command: 'print' is a Python builtin"),
    ("%%nbflow command c --retries many\necho", "argument --retries: invalid int value"),
    ("%%nbflow command c --output tif\necho", "argument --output: expected NAME=VALUE"),
    ("%%nbflow command c --output 1=x.tif\necho", "%%nbflow command c (cell In[2]): Task 'c': "
     "--output must map names to file paths"),
    ("%%nbflow command c --stdin 'a b'\necho", "--stdin must name an upstream task"),
    ("%%nbflow command c\n#!/usr/bin/python3\necho", "the cell body runs with a shell's -c, "
     "so '#!/usr/bin/python3' cannot choose its interpreter"),
    ("%%nbflow command c\necho {x!r}", "has placeholder {x} in 'echo {x!r}'"),
    ("%%nbflow command c\necho {", "malformed placeholder"),
    ("%%nbflow command c --map items\necho {item}", "--map 'items' must be an input of the "
     "command, a placeholder {items} that stands for each item. Did you mean 'item'? "
     "Placeholders: {item}."),
    ("%%nbflow command c --timeout nan\necho", "option 'timeout' must be a finite number"),
    ("%%nbflow command c --env 'A=b\necho", "No closing quotation"),
    ("%%nbflow command c\n   \n", "the cell has no command"),
    ("%nbflow command c", "%nbflow command must be the first line of a cell"),
])
def test_usage_mistakes_are_one_line_errors_naming_the_cell(ip, capsys, source, message):
    ip("value = 3")
    result = ip(source, ok=False)
    assert isinstance(result.error_in_exec, UsageError)
    assert message in str(result.error_in_exec)
    assert "Traceback" not in capsys.readouterr().err
    assert "c" not in ip.flow


def test_a_sh_shebang_is_a_comment_and_the_options_are_task_options(ip):
    ip("%%nbflow command c --retries 2 --timeout 5 --priority 3 --group io --image alpine:3 "
       "--after a,b --bytes --no-cache\n#!/bin/sh\nprintf x")
    task = ip.flow.tasks["c"]
    opts = task.options
    assert (opts.retries, opts.timeout, opts.priority, opts.group, opts.image, opts.after,
            opts.cache) == (2, 5.0, 3, "io", "alpine:3", ("a", "b"), False)
    assert task.command == "#!/bin/sh\nprintf x"


def test_a_bash_shebang_runs_the_body_with_bash(ip):
    ip("%%nbflow command b\n#!/usr/bin/env bash\nwords=(a b c); echo ${{#words[@]}} $BASH_VERSION")
    assert ip.flow.tasks["b"].command.startswith("#!/usr/bin/env bash")
    ip("%nbflow run")
    count, version = ip.ns["b"].stdout.split()
    assert count == "3" and version


def test_a_mapped_command_runs_once_per_item(ip):
    ip("%%nbflow task names\n['a', 'b c']")
    ip("%%nbflow command each --map names\nprintf '%s|' {names}")
    ip("%nbflow run")
    assert [r.stdout for r in ip.ns["each"]] == ["a|", "b c|"]


def test_a_renamed_command_cell_leaves_no_ghost(ip, capsys):
    run_cell(ip, "c1", "%%nbflow command first\necho 1")
    run_cell(ip, "c1", "%%nbflow command second\necho 1")
    assert capsys.readouterr().out.splitlines()[-1] == \
        "nbflow: dropped task 'first': its cell now declares 'second'"
    assert list(ip.flow.tasks) == ["second"]



# -- nbflow export -------------------------------------------------------------------------------


def workflow_notebook(tmp_path: Any, *cells: str) -> Any:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.cells[0].metadata["tags"] = ["parameters"]
    path = tmp_path / "words.ipynb"
    nbformat.write(nb, path)
    return path


WORKFLOW = ("word = 'b'",
            "%%nbflow task text\n'b\\na\\nb\\n'",
            "%%nbflow command count --stdin text --output counts=counts.txt --retries 1\n"
            "sort | uniq -c | sort -rn > counts.txt\ngrep -c {word} counts.txt || true",
            "%%nbflow task top\ncount.path('counts').read_text().split()[1]",
            "%nbflow run\nprint('top is', top, 'count is', count.stdout.strip())")


def test_nbflow_export_writes_a_command_cell_as_flow_command(tmp_path):
    from nbflow.notebook.export import export_notebook

    (module,) = export_notebook(workflow_notebook(tmp_path, *WORKFLOW), tmp_path / "words.py")
    assert "flow.command('count', 'sort | uniq -c | sort -rn > counts.txt\\ngrep -c {word} " \
        "counts.txt || true', outputs={'counts': 'counts.txt'}, stdin='text', retries=1)" \
        in module.read_text()
    for argv, count in (([], "1"), (["-p", "word", "x"], "0")):
        result = subprocess.run([sys.executable, str(module), *argv], capture_output=True,
                                text=True, timeout=120, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"top is b count is {count}" in result.stdout


def test_nbflow_export_writes_a_command_cell_as_a_spec_command(tmp_path):
    import yaml

    from nbflow.notebook.export import export_notebook

    spec, _ = export_notebook(workflow_notebook(tmp_path, *WORKFLOW), tmp_path / "words.yaml")
    entry = yaml.safe_load(spec.read_text())["tasks"]["count"]
    assert entry == {"command": "sort | uniq -c | sort -rn > counts.txt\n"
                                "grep -c {word} counts.txt || true",
                     "outputs": {"counts": "counts.txt"}, "stdin": "text", "retries": 1}
    result = subprocess.run([sys.executable, "-m", "nbflow", "run", str(spec), "-p", "word", "a"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "flow 'words': succeeded" in result.stdout


def test_nbflow_export_names_the_cell_of_a_command_it_cannot_write(tmp_path):
    from nbflow.errors import ExportError
    from nbflow.notebook.export import export_notebook

    path = workflow_notebook(tmp_path, "n = 1", "res = 30", "%%nbflow command warp\necho {res}")
    (tmp_path / "ok").mkdir()
    export_notebook(path, tmp_path / "ok" / "words.py")  # a module reads res as a global
    with pytest.raises(ExportError, match=r"words.ipynb cell 3: %%nbflow command warp uses "
                                          r"\{res\}, which is neither a task nor assigned in "
                                          "the cell tagged 'parameters'"):
        export_notebook(path, tmp_path / "words.yaml")
    bad = workflow_notebook(tmp_path, "n = 1", "%%nbflow command c --output 1=x\necho")
    with pytest.raises(ExportError, match=r"%%nbflow command c \(words.ipynb cell 2\): Task "
                                          "'c': --output must map names"):
        export_notebook(bad, tmp_path / "words.py")


def test_nbflow_export_keeps_the_shell_a_cell_names(tmp_path):
    from nbflow.notebook.export import export_notebook

    cells = ("%%nbflow command arr\n#!/bin/bash\nwords=(a b); echo ${{#words[@]}}",
             "%nbflow run\nprint('count is', arr.stdout.strip())")
    (module,) = export_notebook(workflow_notebook(tmp_path, *cells), tmp_path / "arr.py")
    assert "shell='/bin/bash'" in module.read_text()
    result = subprocess.run([sys.executable, str(module)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "count is 2" in result.stdout
