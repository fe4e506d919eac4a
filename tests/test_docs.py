"""Every ```python block of the README and docs/ runs, and every `print(...)  # output` prints that.

Blocks of one file run in order in one namespace, in a temporary directory.
```ipython blocks (magics) are run by tests/notebook/test_docs_magics.py.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PRINT = re.compile(r"^(\s*)print\((.*)\)\s+#\s(.*)$")


def blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text())


def checked(source: str) -> str:
    """Turn `print(x)  # out` lines into checks that x prints exactly `out`."""
    lines = []
    for line in source.splitlines():
        m = PRINT.match(line)
        if m and not m.group(3).startswith(("a table", "task,")):
            indent, args, expected = m.groups()
            line = f"{indent}__expect({expected.strip()!r}, lambda: print({args}))"
        lines.append(line)
    return "\n".join(lines) + "\n"


def expect(expected: str, call) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        call()
    assert out.getvalue().strip() == expected


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    found = blocks(path)
    if path.name in ("README.md", "concepts.md", "executors.md", "python-api.md"):
        assert found, f"{path.name} lost its examples"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__", "__expect": expect}
    for i, source in enumerate(found):
        code = compile(checked(source), f"{path.name}[block {i}]", "exec")
        with contextlib.redirect_stdout(io.StringIO()):
            exec(code, namespace)


def test_the_checker_catches_a_wrong_output():
    with pytest.raises(AssertionError):
        exec(compile(checked("print(1 + 1)  # 3"), "t", "exec"), {"__expect": expect})


YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_yaml_spec_blocks_are_valid_specs(path):
    import yaml

    import nbflow as nf

    for source in YAML_BLOCK.findall(path.read_text()):
        data = yaml.safe_load(source)
        if isinstance(data, dict) and "tasks" in data:
            flow = nf.Flow.from_spec(data)
            assert list(flow.tasks) == list(data["tasks"])
