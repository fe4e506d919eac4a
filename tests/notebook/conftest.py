"""Fixtures for the notebook layer: an in-process IPython shell and a real kernel."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until  # the tests' one poller (tests/conftest.py)

NOTEBOOKS = Path(__file__).parent / "notebooks"

__all__ = ["wait_until"]


class Shell:
    """IPython's in-process shell with ``%load_ext nbflow`` done and a fresh default flow."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def __call__(self, source: str, *, ok: bool = True) -> Any:
        result = self.shell.run_cell(source, store_history=True)
        if ok and not result.success:
            raise AssertionError(f"cell failed: {result.error_in_exec or result.error_before_exec!r}")
        return result

    @property
    def ns(self) -> dict[str, Any]:
        return self.shell.user_ns  # type: ignore[no-any-return]

    @property
    def flow(self) -> Any:
        import nbflow

        return nbflow.notebook_flow()


@pytest.fixture
def ip() -> Iterator[Shell]:
    from IPython.core.interactiveshell import InteractiveShell

    import nbflow.notebook
    from nbflow import capture

    # IPython puts its user module in sys.modules["__main__"]; put the real one back after
    # each test, or later process-pool tests cannot spawn (DummyMod has no __spec__).
    main = sys.modules["__main__"]
    shell = InteractiveShell.instance()
    sys.modules["__main__"] = shell.user_module
    shell.reset(new_session=True)
    nbflow.notebook.reset()
    shell.run_cell("%load_ext nbflow")
    shell.run_cell("%reload_ext nbflow")  # binds the new default flow to this namespace
    try:
        yield Shell(shell)
    finally:
        run = nbflow.notebook_flow().last_run
        if run is not None and not run.done:
            run.cancel()
            run.wait(10)
        nbflow.notebook.reset()
        shell.reset(new_session=True)
        capture.uninstall()
        sys.modules["__main__"] = main


class Kernel:
    """A real IPython kernel driven through nbclient, one cell at a time."""

    def __init__(self) -> None:
        import nbformat
        from nbclient import NotebookClient

        self.nb = nbformat.v4.new_notebook()
        self.client = NotebookClient(self.nb, kernel_name="python3", timeout=60,
                                     allow_errors=True)
        # nbclient's own context manager starts the kernel now and shuts it down in close()
        self._kernel = contextlib.ExitStack()
        self._kernel.enter_context(self.client.setup_kernel())

    def __call__(self, source: str) -> Any:
        import nbformat

        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1)
        return cell

    def interrupt_when(self, predicate: Callable[[], Any], timeout: float = 30.0) -> threading.Thread:
        """Interrupt the kernel (from another thread) once ``predicate()`` is true."""
        km = self.client.km

        def interrupt() -> None:
            wait_until(predicate, timeout)
            asyncio.run(km.interrupt_kernel())  # nbclient's manager is async

        thread = threading.Thread(target=interrupt, name="interrupt-kernel", daemon=True)
        thread.start()
        return thread

    def send_when(self, predicate: Callable[[], Any], msg_type: str, content: dict[str, Any],
                  timeout: float = 30.0) -> threading.Thread:
        """Send a shell message (as a front end does) from another thread, once
        ``predicate()`` is true: while a cell is running, for instance."""
        kc = self.client.kc

        def send() -> None:
            wait_until(predicate, timeout)
            kc.shell_channel.send(kc.session.msg(msg_type, content))

        thread = threading.Thread(target=send, name="send-to-kernel", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._kernel.close()


def text(cell: Any, name: str = "stdout") -> str:
    """All stream text of one stream of an executed cell."""
    return "".join(o.get("text", "") for o in cell.outputs
                   if o.output_type == "stream" and o.name == name)


def errors(cell: Any) -> list[Any]:
    return [o for o in cell.outputs if o.output_type == "error"]


@pytest.fixture
def k() -> Iterator[Kernel]:
    """A fresh kernel with ``%load_ext nbflow`` done, shut down (with what it started) by the
    test that used it."""
    k = Kernel()
    try:
        k("%load_ext nbflow\nimport time")
        yield k
    finally:
        k.close()
