"""Which notebook cell the user sees: the running cell's number, and cell files -> ``In[N]``.

Two questions, answered the same way on IPython 8 and 9:

- *Which cell is running?* :func:`current_count`. ``shell.execution_count``
  is not the answer: IPython 9 advances it before the cell body runs (so a
  magic reads ``N + 1`` in the cell shown as ``[N]``), IPython 8 after. Both
  versions compile the cell under a file name mapped to the cell's number
  (below) before running it, so the outermost frame on the stack compiled
  from a cell names the cell the user ran, also through a helper or a nested
  ``run_cell(store_history=False)`` (whose own number IPython 9 gives as
  ``N + 1``). With no cell frame on the stack, the cell's ``ExecutionResult``
  (``displayhook.exec_result``, created with the cell's number by both
  versions) answers.
- *Which cell is this file?* :func:`cell_number`. Each cell is compiled under a
  file name (``<ipython-input-3-...>`` in a terminal, ``/tmp/ipykernel_<pid>/
  <hash>.py`` under ipykernel); IPython's compiler remembers the cell number of
  each (``shell.compile.format_code_name``, the ``_filename_map`` behind it).
  :func:`relabel_traceback` uses it to show a frame of a notebook helper (a
  ``def`` in an ordinary cell, called by a task) as ``<cell In[N]>``.

Nothing here imports IPython: the shell is passed in, or looked up only when
IPython is already loaded.
"""

from __future__ import annotations

import linecache
import re
import sys
from types import FrameType
from typing import Any

__all__ = ("cell_label", "cell_number", "current_count", "relabel_traceback")

_IN = re.compile(r"In\[(\d+)\]")
#: a traceback frame line: ``  File "NAME", line 3, in f``
_FILE = re.compile(r'^(\s*File ")([^"]+)(", line \d+)')


def _shell(shell: Any = None) -> Any:
    if shell is not None:
        return shell
    ipython = sys.modules.get("IPython")
    return None if ipython is None else ipython.get_ipython()


def cell_number(filename: str, shell: Any = None) -> int | None:
    """The execution count of the cell compiled under ``filename``, or None.

    Parameters
    ----------
    filename
        A code object's ``co_filename`` (a frame's file in a traceback).
    shell
        The IPython shell (default: the running one, if any).
    """
    compiler = getattr(_shell(shell), "compile", None)
    if compiler is None:
        return None
    mapping = getattr(compiler, "_filename_map", None)
    if isinstance(mapping, dict):
        number = mapping.get(filename)
        if isinstance(number, int):
            return number
    fmt = getattr(compiler, "format_code_name", None)  # IPython >= 8: ("Cell", "In[3]")
    if callable(fmt):
        try:
            named = fmt(filename)
        except Exception:
            return None
        if isinstance(named, tuple) and len(named) == 2:
            match = _IN.fullmatch(str(named[1]))
            if match:
                return int(match.group(1))
    return None


def current_count(shell: Any = None, frame: FrameType | None = None) -> int | None:
    """The number the user sees next to the running cell (``[N]``), or None outside a cell.

    Parameters
    ----------
    shell
        The IPython shell (default: the running one, if any).
    frame
        Where to start looking on the stack (default: the caller's frame).
    """
    shell = _shell(shell)
    if shell is None:
        return None
    found: int | None = None
    f: FrameType | None = frame if frame is not None else sys._getframe(1)
    while f is not None:  # the outermost cell frame: the cell run, not a helper it calls
        number = cell_number(f.f_code.co_filename, shell)
        if number is not None and number > 0:
            found = number
        f = f.f_back
    if found is not None:
        return found
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    count = getattr(result, "execution_count", None)
    return count if isinstance(count, int) and count > 0 else None


def cell_label(count: int | None) -> str:
    """``"cell In[3]"`` (or ``"cell"`` when the number is unknown), for messages."""
    return f"cell In[{count}]" if count else "cell"


def relabel_traceback(text: str, shell: Any = None) -> str:
    """Show frames of notebook cells in a formatted traceback as ``File "<cell In[N]>"``.

    Frames of code compiled from an ordinary cell (a helper function) name the
    file IPython or ipykernel compiled the cell under, which means nothing to
    the reader; this rewrites them to the cell's number. A cell frame formatted
    where the cell's text is unknown (a process or dask worker) gets its source
    line from the kernel's :mod:`linecache`. Other frames are kept.
    """
    shell = _shell(shell)
    out: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _FILE.match(line)
        if match is None:
            out.append(line)
            continue
        filename = match.group(2)
        number = cell_number(filename, shell) if shell is not None else None
        if number is not None:
            line = f"{match.group(1)}<cell In[{number}]>{match.group(3)}{line[match.end():]}"
        out.append(line)
        following = lines[i + 1] if i + 1 < len(lines) else ""
        is_cell = number is not None or filename.startswith("<cell In[")
        if is_cell and not following.startswith("    "):
            lineno = int(match.group(3).rsplit(" ", 1)[1])  # '", line 3'
            source = linecache.getline(filename, lineno).strip()
            if source:
                out.append(f"    {source}")
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")
