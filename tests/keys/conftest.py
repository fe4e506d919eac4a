"""Fixtures for cache-key tests: write a module to a directory and import it afresh."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nbflow import code_sources


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., types.ModuleType]]:
    """``load(name, source)``: write ``NAME.py`` into a directory on sys.path and (re)import
    it; a new mtime each time, as an editor save gives."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []
    tick = [0]

    def write(name: str, source: str, *, where: Path | None = None) -> types.ModuleType:
        path = (where or tmp_path) / f"{name.replace('.', '/')}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        tick[0] += 1
        stamp = 1_700_000_000 + tick[0]
        os.utime(path, (stamp, stamp))
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        names.append(name)
        return importlib.import_module(name)

    yield write
    for name in names:
        sys.modules.pop(name, None)
    code_sources.reset()
