"""Progress of streaming tasks on a terminal, for ``nbflow run`` (tqdm bars).

:class:`StreamProgress` is an observer: for each streaming task of the run (a
generator task, ``docs/streams.md``) it shows a bar with the items made so far,
the items per second, and how many the tasks that map the stream finished. It
listens only; it reads the run's task views when a batch of events arrives, on
the event thread. ``nbflow run`` adds it when its standard error is a terminal
and ``-q`` is not given.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from ..events import Event, RunEvent
from ..states import FINAL

if TYPE_CHECKING:
    from ..run import Run

__all__ = ["StreamProgress"]


class StreamProgress:
    """tqdm bars for the streaming tasks of one run, written to ``out``."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.run: Run | None = None
        self._bars: dict[str, Any] = {}

    def bind(self, run: Run) -> None:
        """The run started: make a bar per streaming task."""
        from tqdm import tqdm

        self.run = run
        width = shutil.get_terminal_size().columns or 100  # a terminal with no size: 0
        for pt in run.plan.tasks:
            if pt.stream:
                self._bars[pt.name] = tqdm(desc=pt.name, unit=" items", file=self.out,
                                           ncols=width, leave=True)
        self._refresh()  # a fast run may be well on (or over) before it is bound
        if run.done:
            self.close()

    def __call__(self, events: Sequence[Event]) -> None:
        if self.run is None or not self._bars:
            return
        self._refresh()
        if any(isinstance(e, RunEvent) and e.status in FINAL for e in events):
            self.close()

    def _refresh(self) -> None:
        """Each bar as its task's view says now."""
        if self.run is None:
            return
        for name, bar in list(self._bars.items()):
            view = self.run.task(name)
            made = view.branches or 0
            if made > bar.n:
                bar.update(made - bar.n)
            final = f", {view.state}" if view.state in FINAL else ""
            bar.set_postfix_str(f"{view.consumed} done by its maps{final}", refresh=not final)

    def close(self) -> None:
        """Close the bars (the run ended, or was interrupted), showing where they got."""
        self._refresh()
        bars, self._bars = self._bars, {}
        for bar in bars.values():
            bar.close()
