"""``nbflow runs``: the recorded runs, one run's tasks, and what differs between two runs;
``nbflow why``: what changed in a task's cache key since its last recorded run.

``nbflow.cli`` adds this parser and calls :func:`handle`. A run is named by its id,
a unique prefix of it, or ``-1`` (the latest), ``-2``... A problem (no database, an
unknown run) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from .lineage import recorded_lineage
from .query import diff
from .store import HistoryError, RunStore, writer

__all__ = ["add_parsers", "add_why_parser", "handle", "handle_why", "print_runs"]

EXIT_OK, EXIT_USAGE = 0, 2
_DB_HELP = ("the run database (default: $NBFLOW_HOME/runs.db when NBFLOW_HOME is set, "
            "else .nbflow/runs.db in this folder)")
_REF_HELP = "a run id, a unique prefix of one, or -1 (the latest run), -2, ..."


def add_parsers(sub: Any) -> None:
    """Add ``runs`` (with ``show`` and ``diff``) to the ``nbflow`` subcommands."""
    runs = sub.add_parser("runs", help="the recorded runs: list, show one, diff two",
                          description=(
        "Every run is recorded in a SQLite database (NBFLOW_HISTORY=0 turns that off). "
        "Without an action, list the recent runs, newest first."))
    runs.add_argument("--db", metavar="PATH", default=None, help=_DB_HELP)
    runs.add_argument("--flow", metavar="NAME", default=None, help="only the runs of this flow")
    runs.add_argument("-n", "--limit", type=int, default=20, metavar="N",
                      help="how many runs to list (default: 20; 0 for all)")
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    actions = runs.add_subparsers(dest="runs_action", metavar="ACTION")
    show = actions.add_parser("show", help="one run: parameters and tasks",
                              description="Show one run: its parameters and, per task, its "
                              "state, duration, where it ran, result hash and preview.")
    show.add_argument("run", metavar="ID", help=_REF_HELP)
    show.add_argument("--lineage", metavar="TASK", default=None,
                      help="print what produced TASK's result instead (JSON)")
    show.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=_DB_HELP)
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="print JSON")
    compare = actions.add_parser("diff", help="what differs between two runs", description=(
        "Which parameters differ between runs A and B, which tasks re-ran in B and why (the "
        "parts of their cache keys that changed), and which results differ by hash."))
    compare.add_argument("a", metavar="A", help=_REF_HELP)
    compare.add_argument("b", metavar="B", help=_REF_HELP)
    compare.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=_DB_HELP)
    compare.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="print JSON")


def add_why_parser(sub: Any) -> None:
    """Add ``why`` to the ``nbflow`` subcommands."""
    why = sub.add_parser("why", help="which part of a task's cache key changed since its "
                         "last run", description=(
        "Name what changed in TASK's cache key since the last recorded run of WORKFLOW (a "
        "notebook or a spec) that has TASK: its code, a parameter, a helper function, a "
        "local module's definition, a package version, a global, or an upstream task (and "
        "what changed in it); or say that a run now would be a cache hit. Runs no task: a "
        "notebook's setup code (the cells before its first %nbflow run) runs to see its "
        "helpers and globals, its task cells are only declared. Exit code 2 for an unknown "
        "task or when no run is recorded."))
    why.add_argument("workflow", metavar="WORKFLOW", help="NOTEBOOK.ipynb or SPEC.yaml")
    why.add_argument("task", metavar="TASK", help="the task to explain")
    why.add_argument("-p", "--param", nargs=2, action="append", default=[],
                     metavar=("NAME", "VALUE"), help="a parameter as nbflow run -p takes it "
                     "(repeatable): explain a run with that value")
    why.add_argument("-f", "--params-file", action="append", default=[], metavar="PARAMS.yaml",
                     help="parameters from a YAML/JSON mapping, as nbflow run -f takes them")
    why.add_argument("--run", metavar="ID", default=None,
                     help="compare with this recorded run (default: the latest run of the "
                     "workflow's flow that has TASK); " + _REF_HELP)
    why.add_argument("--db", metavar="PATH", default=None, help=(
        "the run database (default: $NBFLOW_HOME/runs.db when NBFLOW_HOME is set, else "
        ".nbflow/runs.db beside WORKFLOW)"))


def handle_why(args: argparse.Namespace) -> int:
    """Run ``nbflow why``; returns the exit code."""
    from ..errors import ValidationError
    from .why import why

    try:
        print(why(args.workflow, args.task, [tuple(p) for p in args.param], args.params_file,
                  db=args.db, run=args.run))
    except (HistoryError, ValidationError) as exc:  # an unknown task, a missing parameter
        print(f"nbflow why: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def handle(args: argparse.Namespace) -> int:
    """Run ``nbflow runs [show|diff]``; returns the exit code."""
    store = RunStore(args.db)
    action = getattr(args, "runs_action", None)
    try:
        if action == "show":
            if args.lineage is not None:
                _print_json(recorded_lineage(args.run, args.lineage, path=store.path))
                return EXIT_OK
            return _show(store, args.run, args.json)
        if action == "diff":
            result = diff(args.a, args.b, path=store.path)
            print(json.dumps(result.to_dict(), indent=2, default=repr) if args.json
                  else result)
            return EXIT_OK
        return print_runs(store, args.flow, args.limit or None, args.json)
    except (HistoryError, KeyError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"nbflow runs: {text}", file=sys.stderr)
        return EXIT_USAGE


def print_runs(store: RunStore, flow: str | None, limit: int | None, as_json: bool) -> int:
    """Print the recent runs (of ``flow``), newest first, as a table or JSON (``nbflow runs``,
    ``%nbflow runs``); returns the exit code."""
    writer.flush()  # this process's runs still being recorded
    rows = store.runs(flow, limit) if store.path.exists() else []
    if as_json:
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print(f"no runs recorded in {store.path}")
        return EXIT_OK
    counts = store.state_counts([r["run_id"] for r in rows])
    table = [("id", "flow", "status", "started", "duration", "tasks", "parameters")]
    for r in rows:
        by_state = counts.get(r["run_id"], {})
        tasks = ", ".join(f"{n} {s}" for s, n in sorted(by_state.items()))
        params = " ".join(f"{k}={_cut(json.dumps(v, default=repr), 30)}"
                          for k, v in r["params"].items())
        table.append((r["run_id"], r["flow"], r["status"], _when(r["started"]),
                      _seconds(r["started"], r["ended"]), tasks, _cut(params, 60)))
    print(_table(table))
    return EXIT_OK


def _show(store: RunStore, ref: str, as_json: bool) -> int:
    record = store.run(ref)
    tasks = store.tasks([record["run_id"]])
    if as_json:
        _print_json({**record, "tasks": tasks})
        return EXIT_OK
    print(f"run {record['run_id']} of flow {record['flow']!r}: {record['status']}")
    print(f"started {_when(record['started'])}, took {_seconds(record['started'], record['ended'])}"
          f", in {record['cwd']}")
    if record["params"]:
        print("parameters:")
        for k, v in record["params"].items():
            print(f"  {k} = {_cut(json.dumps(v, default=repr), 70)}")
    table = [("task", "state", "duration", "where", "result", "preview")]
    for t in tasks:
        preview = (t["error"] or t["preview"] or "").splitlines()
        table.append((t["task"], t["state"], _seconds(t["started"], t["ended"]),
                      t["where_"] or "", (t["result_hash"] or "")[:12],
                      _cut(preview[0] if preview else "", 50)))
    print(_table(table))
    return EXIT_OK


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _when(value: float | None) -> str:
    return "-" if value is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def _seconds(started: float | None, ended: float | None) -> str:
    if started is None or ended is None:
        return "-"
    return f"{max(0.0, ended - started):.2f}s"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=repr))
