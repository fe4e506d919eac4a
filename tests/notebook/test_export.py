"""nbflow export: a workflow notebook as a plain Python module, or as a spec + module."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import nbflow as nf
from nbflow.errors import ExportError
from nbflow.notebook.export import export_notebook

QUICKSTART = Path(__file__).resolve().parents[2] / "notebooks" / "01-quickstart.ipynb"


def report_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if " mean " in line and "trend" in line]


@pytest.fixture(scope="module")
def notebook_report(tmp_path_factory):
    """The report the notebook itself prints, executed in a real kernel."""
    nb = nbformat.read(QUICKSTART, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(tmp_path_factory.mktemp("nb"))}}).execute()
    for cell in nb.cells:
        if cell.cell_type == "code" and "for line in report" in cell.source:
            return report_lines("".join(o.get("text", "") for o in cell.outputs))
    raise AssertionError("the quickstart lost its report cell")


def test_exported_module_gives_the_notebooks_results(tmp_path, notebook_report):
    (out,) = export_notebook(QUICKSTART, tmp_path / "quickstart.py")
    source = out.read_text()
    assert "%nbflow" not in source and "get_ipython" not in source
    result = subprocess.run([sys.executable, str(out)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert report_lines(result.stdout) == notebook_report
    assert "flow '01_quickstart': succeeded" in result.stdout


def test_exported_module_takes_parameters(tmp_path, notebook_report):
    (out,) = export_notebook(QUICKSTART, tmp_path / "quickstart.py")
    result = subprocess.run([sys.executable, str(out), "-p", "days", "30"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = report_lines(result.stdout)
    assert len(lines) == 3 and lines != notebook_report


def test_spec_export_runs_like_the_notebooks_first_run(tmp_path, notebook_report):
    spec, module = export_notebook(QUICKSTART, tmp_path / "quickstart.yaml")
    assert module.name == "quickstart_tasks.py"
    flow = nf.Flow.from_spec(spec)
    assert flow.parameter_info["days"] == {"type": "integer", "default": 60}
    run = flow.run()  # the parameters cell's values, as in the notebook's first run
    assert run.results["report"] == notebook_report
    assert flow.run(params={"limit": 30.0}).results["report"] != notebook_report


def test_export_errors(tmp_path):
    empty = tmp_path / "empty.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), empty)
    with pytest.raises(ExportError, match="no %%nbflow task cells"):
        export_notebook(empty, tmp_path / "out.py")
    bad = tmp_path / "bad.ipynb"
    cell = nbformat.v4.new_code_cell("%%nbflow task a --retries many\n1")
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), bad)
    with pytest.raises(ExportError, match=r"bad\.ipynb cell 1"):
        export_notebook(bad, tmp_path / "out.py")
    broken = tmp_path / "broken.ipynb"
    cell = nbformat.v4.new_code_cell("%%nbflow task a\nx = (")
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), broken)
    with pytest.raises(ExportError, match=r"broken\.ipynb cell 1, line 2"):
        export_notebook(broken, tmp_path / "out.py")
    with pytest.raises(ExportError, match="cannot read"):
        export_notebook(tmp_path / "missing.ipynb", tmp_path / "out.py")
    with pytest.raises(ExportError, match=r"\.txt"):
        export_notebook(QUICKSTART, tmp_path / "out.txt")
    assert json.loads(QUICKSTART.read_text())  # untouched


@pytest.mark.parametrize(("header", "message"), [
    ("%%nbflow task class", "'class' is a Python keyword"),
    ("%%nbflow task print", "'print' is a Python builtin"),
    ("%%nbflow task slow --timeout nan", "option 'timeout' must be a finite number"),
])
def test_export_refuses_headers_the_magic_refuses(tmp_path, header, message):
    # issue 20: these exported as code that does not compile (def class():) or misbehaves
    notebook = tmp_path / "names.ipynb"
    cells = [nbformat.v4.new_code_cell(f"{header}\n1")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), notebook)
    with pytest.raises(ExportError, match=r"names\.ipynb cell 1: ") as info:
        export_notebook(notebook, tmp_path / "out.py")
    assert message in str(info.value)
    assert not (tmp_path / "out.py").exists()


def test_export_needs_no_ipython(tmp_path):
    """`nbflow export` reads task headers and run lines with the magics' parser, without IPython."""
    cells = [
        nbformat.v4.new_code_cell("n = 3", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("%%nbflow task items --retries 2 --after first --no-cache\n"
                                  "list(range(n))"),
        nbformat.v4.new_code_cell("%%nbflow task first\n0"),
        nbformat.v4.new_code_cell("%nbflow run -p n=4\nprint(items)"),
    ]
    notebook = tmp_path / "small.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), notebook)
    code = (
        "import sys\n"
        "import nbflow.notebook.export as export\n"
        "assert 'IPython' not in sys.modules, 'importing the export imported IPython'\n"
        f"export.export_notebook({str(notebook)!r}, {str(tmp_path / 'small.py')!r})\n"
        f"export.export_notebook({str(notebook)!r}, {str(tmp_path / 'small.yaml')!r})\n"
        "assert 'IPython' not in sys.modules, 'exporting imported IPython'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    source = (tmp_path / "small.py").read_text()
    assert "@flow.task(name='items', retries=2, cache=False, after=['first'])" in source
    assert "_run = flow.run(params={'n': 4})" in source
    run = subprocess.run([sys.executable, "small.py"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("[0, 1, 2, 3]\n")
