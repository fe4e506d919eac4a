"""``nbflow convert``: the command's targets, outputs and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def nbflow(*args, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbflow", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_each_target_writes_its_file(tmp_path):
    spec = ROOT / "examples" / "climate.yaml"
    for target, name in (("spec", "again.yaml"), ("script", "script.py"),
                         ("jupytext", "text.py"), ("airflow", "dag.py")):
        out = nbflow("convert", spec, "--to", target, "-o", name, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"nbflow convert: wrote {name}"
    again = yaml.safe_load((tmp_path / "again.yaml").read_text())
    assert again == yaml.safe_load(spec.read_text())
    assert "# %%" in (tmp_path / "text.py").read_text()
    compile((tmp_path / "dag.py").read_text(), "dag.py", "exec")
    notebook = nbflow("convert", ROOT / "notebooks" / "01-quickstart.ipynb", "--to", "spec",
                      "-o", "quick.yaml", cwd=tmp_path)
    assert notebook.returncode == 0, notebook.stderr
    assert notebook.stdout.split() == ["nbflow", "convert:", "wrote", "quick.yaml", "nbflow",
                                       "convert:", "wrote", "quick_tasks.py"]


def test_what_a_target_cannot_express_is_one_line(tmp_path):
    (tmp_path / "gen.py").write_text("def items():\n    yield 1\n\n\n"
                                     "def twice(x):\n    return 2 * x\n")
    (tmp_path / "stream.yaml").write_text(
        "nbflow: 1\nname: s\ntasks:\n  items: {use: 'gen:items'}\n"
        "  twice: {use: 'gen:twice', map: items, args: {x: {$task: items}}}\n")
    out = nbflow("convert", "stream.yaml", "--to", "script", "-o", "s.py", cwd=tmp_path)
    assert out.returncode == 2 and not (tmp_path / "s.py").exists()
    assert out.stderr.startswith("nbflow convert: ") and "'items'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    suffix = nbflow("convert", "stream.yaml", "--to", "script", "-o", "s.txt", cwd=tmp_path)
    assert suffix.returncode == 2 and "a script is written to a .py file" in suffix.stderr
    missing = nbflow("convert", "nope.yaml", "--to", "script", "-o", "s.py", cwd=tmp_path)
    assert missing.returncode == 2 and "nope.yaml: no such file" in missing.stderr
