"""A blocking ``%nbflow run`` that leaves the kernel free to answer the front end.

A cell that runs synchronously holds the kernel's shell channel until it ends:
the widget's buttons do nothing, and a page reloaded meanwhile shows "Loading
widget..." until the run is over, because the front end asks the kernel for its
widgets on that channel. ipykernel (7 and later) dispatches widget messages
while a cell *awaits*, so a cell line ``%nbflow run ...`` (or ``%nbflow wait``)
at the top level of a cell is rewritten, after IPython's own transforms, from

    get_ipython().run_line_magic('nbflow', 'run ...')

to

    await get_ipython().find_line_magic('nbflow').__self__.awaitable('run ...')

The cell still blocks: the next cell runs after the run ended, as before. Only
kernels whose cells run on asyncio with ``%autoawait`` on are rewritten (the
IPython terminal, other loop runners and lines inside blocks or expressions keep
the synchronous magic).
"""

from __future__ import annotations

import ast
from typing import Any

__all__ = ("AwaitBlockingRuns", "install")

#: the subcommands that may block: only these are awaited
BLOCKING = ("run", "wait")


def _magic_argument(line: str) -> str | None:
    """The argument string of a top-level ``%nbflow run|wait`` line as IPython rewrote it."""
    if not line.startswith("get_ipython().run_line_magic("):
        return None
    try:
        tree = ast.parse(line.strip())
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    call = tree.body[0].value
    if not (isinstance(call, ast.Call) and len(call.args) == 2 and not call.keywords):
        return None
    name, argument = call.args
    if not (isinstance(name, ast.Constant) and name.value == "nbflow"
            and isinstance(argument, ast.Constant) and isinstance(argument.value, str)):
        return None
    words = argument.value.split()
    if not words or words[0] not in BLOCKING:
        return None
    return argument.value


class AwaitBlockingRuns:
    """An IPython ``input_transformers_post`` entry: awaits top-level blocking runs."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def applies(self) -> bool:
        """Whether awaited cells run on the kernel's asyncio loop now."""
        runner = getattr(self.shell, "loop_runner", None)
        return bool(getattr(self.shell, "autoawait", False)) and \
            type(runner).__name__ == "_AsyncIORunner" and \
            getattr(self.shell, "kernel", None) is not None

    def __call__(self, lines: list[str]) -> list[str]:
        if not self.applies():
            return lines
        out = []
        for line in lines:
            argument = _magic_argument(line)
            if argument is None:
                out.append(line)
                continue
            end = "\n" if line.endswith("\n") else ""
            out.append("await get_ipython().find_line_magic('nbflow').__self__"
                       f".awaitable({argument!r}){end}")
        return out


def install(shell: Any) -> None:
    """Add the transform to ``shell`` once (loading the extension twice adds nothing)."""
    transforms = shell.input_transformers_post
    if not any(isinstance(t, AwaitBlockingRuns) for t in transforms):
        transforms.append(AwaitBlockingRuns(shell))
