"""``%nbflow runs`` and ``%nbflow diff A B``: the run history from a notebook.

They print what ``nbflow runs`` and ``nbflow runs diff`` print (the same code,
:mod:`nbflow.history.commands` and :mod:`nbflow.history.query`), reading the database
this kernel records its runs in (``.nbflow/runs.db`` in the notebook's folder, or under
``NBFLOW_HOME``). A problem (no run recorded yet, an unknown run) is a one-line usage error.
"""

from __future__ import annotations

import argparse

from IPython.core.error import UsageError

from ..flow import Flow
from ..history.commands import print_runs
from ..history.query import diff as diff_runs
from ..history.store import HistoryError, RunStore

__all__ = ["diff", "runs"]


def runs(flow: Flow, args: argparse.Namespace) -> None:
    """``%nbflow runs [-n N] [--all] [--db PATH]``: the recent runs of ``flow``, newest first."""
    if args.limit < 0:
        raise UsageError(f"%nbflow runs: -n must be 0 (all) or more, got {args.limit}")
    try:
        print_runs(RunStore(args.db), None if args.all else flow.name, args.limit or None,
                   as_json=False)
    except HistoryError as exc:
        raise UsageError(f"%nbflow runs: {exc}") from None


def diff(args: argparse.Namespace) -> None:
    """``%nbflow diff A B [--db PATH]``: what differs between two recorded runs."""
    try:
        print(diff_runs(args.a, args.b, path=RunStore(args.db).path))
    except HistoryError as exc:
        raise UsageError(f"%nbflow diff: {exc}") from None
