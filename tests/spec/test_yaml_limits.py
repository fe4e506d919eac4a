"""YAML input is bounded: alias bombs are refused in one line, error messages stay short.

The bombs run in subprocesses with a deadline, so a regression fails the test
instead of eating the machine's memory or hanging CI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nbflow import yaml_safe
from nbflow.errors import SpecError
from nbflow.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "notebooks" / "06-batch.ipynb"


def bomb(levels: int = 9, width: int = 9) -> str:
    """A billion-laughs document: ``width ** levels`` strings behind a few lines of aliases."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def bomb_list(key: str, indent: str = "", levels: int = 9, width: int = 9) -> str:
    """The same bomb as one value: ``key:`` holds a list whose items define the anchors."""
    lines = [f"{indent}{key}:", f"{indent}  - &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"{indent}  - &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def nbflow(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    # the deadline: the unbounded loader took 30-100 s and gigabytes on these files
    return subprocess.run([sys.executable, "-m", "nbflow", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_an_alias_bomb_in_a_spec_is_refused_in_one_line(tmp_path):
    spec = tmp_path / "bomb.yaml"
    spec.write_text("name: bomb\n" + bomb() + "tasks: {a: {use: 'json:loads', args: {s: *l8}}}\n")
    proc = nbflow("validate", spec, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"nbflow validate: {spec}:7: not valid YAML/JSON: alias *l4 ")
    assert "repeat more than 100,000 values" in line


def test_an_alias_bomb_in_a_params_file_is_refused_before_any_kernel(tmp_path):
    # a real parameter whose value is the bomb: the message used to print it expanded
    (tmp_path / "p.yaml").write_text(bomb_list("noise"))
    proc = nbflow("run", EXAMPLE, "-f", "p.yaml", "-o", "out.ipynb", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.splitlines()
    assert "parameters file 'p.yaml' is not valid YAML/JSON (line 7): alias *l4" in line
    assert len(line) < 400
    assert not (tmp_path / "out.ipynb").exists()


def test_an_alias_bomb_in_a_grid_file_and_in_a_p_value(tmp_path):
    (tmp_path / "grid.yaml").write_text("grid:\n" + bomb_list("noise", indent="  "))
    proc = nbflow("sweep", EXAMPLE, "--grid", "grid.yaml", "--out-dir", "o", cwd=tmp_path)
    assert proc.returncode == 2 and "grid file 'grid.yaml' is not valid YAML/JSON" in proc.stderr
    assert not (tmp_path / "o").exists()
    with pytest.raises(yaml.YAMLError, match="repeat more than"):
        yaml_safe.load(bomb().replace("\n", ", ").join("{}"))


def test_a_long_value_in_an_error_message_is_cut_with_its_length(tmp_path):
    # no alias at all: a long list where a number belongs
    (tmp_path / "p.yaml").write_text("noise: [" + ", ".join(["1"] * 50_000) + "]\n")
    proc = nbflow("run", EXAMPLE, "-f", "p.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert "... (150,000 characters) is an array" in line and len(line) < 500


def test_aliases_within_the_limit_and_merge_keys_still_work():
    text = "base: &b {x: 1, y: [1, 2]}\nother: {<<: *b, z: 3}\nsame: *b\n"
    assert yaml_safe.load(text) == {"base": {"x": 1, "y": [1, 2]},
                                    "other": {"x": 1, "y": [1, 2], "z": 3},
                                    "same": {"x": 1, "y": [1, 2]}}
    assert yaml_safe.load(bomb(levels=3, width=9)) is not None  # 9 ** 3 = 729 values
    with pytest.raises(yaml.YAMLError, match="repeat more than 10 values"):
        yaml_safe.load(bomb(levels=3, width=9), limit=10)


def test_an_alias_inside_its_own_value_is_refused():
    with pytest.raises(SpecError, match=r"spec.yaml:2: .*alias \*a is inside the value it names"):
        parse_spec("name: x\ntasks: &a {b: *a}\n", "spec.yaml")


def test_nesting_deeper_than_python_allows_is_one_error():
    with pytest.raises(SpecError, match="nests too deep"):
        parse_spec("[" * 100_000 + "]" * 100_000, "deep.yaml")


def test_short():
    assert yaml_safe.short("abc") == "abc"
    assert yaml_safe.short([1] * 100, limit=10) == "[1, 1, 1, ... (300 characters)"
