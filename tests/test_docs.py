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


BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
OUTPUT_FLAGS = ("-o", "--output", "--out-dir", "--cache-dir", "--log-events", "--grid")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_shell_commands_in_docs_are_valid(path):
    """Each `nbflow ...` line parses with the real CLI parser and names inputs that exist."""
    import shlex

    from nbflow.cli import build_parser

    parser = build_parser()
    for block in BASH_BLOCK.findall(path.read_text()):
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            command = re.split(r"\s[|>]\s", command)[0]  # the shell's pipes and redirections
            if command.startswith("bash scripts/"):
                assert (ROOT / command.split()[1]).exists(), command
            if not command.startswith("nbflow "):
                continue
            words = shlex.split(command)[1:]
            args = parser.parse_args(words)  # exits (SystemExit) on a wrong flag
            assert args.command, command
            for i, word in enumerate(words):
                previous = words[i - 1] if i else ""
                is_input = word.endswith((".ipynb", ".yaml", ".json")) and "/" in word
                if is_input and previous not in OUTPUT_FLAGS[:3] + ("-f",):
                    if previous == "--grid" or not previous.startswith("-"):
                        assert (ROOT / word).exists(), f"{path.name}: {command}: {word}"
