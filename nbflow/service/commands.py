"""The service's commands: ``nbflow serve``, ``nbflow submit`` and ``nbflow jobs``.

``nbflow.cli`` adds these parsers and calls :func:`handle`; problems are
:class:`~nbflow.errors.ServiceError` lines (exit code 2), like bad input elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import BatchInputError, ServiceError
from .jobs import JOB_STATES, Job

__all__ = ["add_parsers", "handle"]

EXIT_OK, EXIT_FAILED = 0, 1
_STATE_DIR_HELP = ("the service's state dir: its job queue and records (default: "
                   "$NBFLOW_STATE_DIR, else .nbflow in this folder)")


def add_parsers(sub: Any) -> None:
    """Add ``serve``, ``submit`` and ``jobs`` to the ``nbflow`` subcommands."""
    serve = sub.add_parser("serve", help="run a workflow as a service: jobs from a watched "
                           "folder, HTTP or nbflow submit", description=(
        "Serve WORKFLOW (a notebook, a spec or package.module:flow) until stopped (Ctrl-C or "
        "SIGTERM stop it cleanly): each trigger makes a job, a run of the workflow with its "
        "own parameters, job directory, cache and results. Jobs are kept in SQLite in the "
        "state dir, so a killed service loses nothing: the next start runs what was queued or "
        "running, from each job's cache."))
    serve.add_argument("workflow", metavar="WORKFLOW",
                       help="NOTEBOOK.ipynb, SPEC.yaml or package.module:flow")
    serve.add_argument("--concurrency", type=int, default=1, metavar="N",
                       help="jobs that run at once (default: 1)")
    serve.add_argument("--cluster", metavar="ADDRESS", default=None,
                       help="run the jobs' tasks on this dask scheduler")
    serve.add_argument("--state-dir", metavar="DIR", default=None,
                       help="the job queue and records (default: .nbflow beside WORKFLOW)")
    serve.add_argument("--shared", action="append", default=[], metavar="TASK",
                       help="TASK's max_parallel holds across all jobs of the service, not "
                       "per job (repeatable; a spec or module workflow)")
    watch = serve.add_argument_group("a watched folder")
    watch.add_argument("--watch", metavar="DIR", default=None,
                       help="each new file in DIR becomes a job once it is stable")
    watch.add_argument("--pattern", metavar="GLOB", default="*",
                       help="only files whose name matches GLOB (default: *)")
    watch.add_argument("--recursive", action="store_true", help="watch DIR's subfolders too")
    watch.add_argument("--param", metavar="NAME", default="path",
                       help="the parameter that gets the file's path (default: path)")
    watch.add_argument("--existing", action="store_true",
                       help="files already in DIR become jobs too (once each, across restarts)")
    watch.add_argument("--stable", type=float, default=1.0, metavar="SECONDS",
                       help="a file is stable when its size and mtime have not changed for "
                       "SECONDS (default: 1)")
    http = serve.add_argument_group("an HTTP endpoint")
    http.add_argument("--http", metavar="HOST:PORT", default=None,
                      help="take jobs from POST /jobs and serve a status page at / (a HOST other "
                      "than 127.0.0.1 or localhost needs --token)")
    http.add_argument("--token", metavar="TOKEN", default=None,
                      help="require 'Authorization: Bearer TOKEN' (default: "
                      "$NBFLOW_SERVICE_TOKEN)")
    http.add_argument("--max-body", type=int, default=1 << 20, metavar="BYTES",
                      help="the largest request body accepted (default: 1 MiB)")

    submit = sub.add_parser("submit", help="queue a job for nbflow serve", description=(
        "Queue one job in a service's state dir; the service (running now, or when it next "
        "starts) runs it. Parameters are checked against the served workflow first."))
    submit.add_argument("--state-dir", metavar="DIR", default=None, help=_STATE_DIR_HELP)
    submit.add_argument("-p", "--param", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="a parameter of the job (repeatable)")
    submit.add_argument("-f", "--params-file", action="append", default=[],
                        metavar="PARAMS.yaml", help="parameters from a YAML/JSON mapping")

    jobs = sub.add_parser("jobs", help="list, show, cancel or retry a service's jobs",
                          description=(
        "nbflow jobs: a table of the newest jobs. nbflow jobs show ID: one job as JSON. "
        "nbflow jobs cancel ID: cancel a queued job, or stop a running one. nbflow jobs retry "
        "ID: queue a failed or cancelled job again (it resumes from its cache)."))
    jobs.add_argument("action", nargs="?", choices=("list", "show", "cancel", "retry"),
                      default="list", metavar="ACTION",
                      help="list (default), show, cancel or retry")
    jobs.add_argument("job_id", nargs="?", metavar="ID", help="the job (for show/cancel/retry)")
    jobs.add_argument("--state-dir", metavar="DIR", default=None, help=_STATE_DIR_HELP)
    jobs.add_argument("--state", choices=JOB_STATES, default=None, help="only jobs in STATE")
    jobs.add_argument("--limit", type=int, default=50, metavar="N",
                      help="at most N jobs (default: 50)")
    jobs.add_argument("--json", action="store_true", help="JSON instead of a table")


def handle(args: argparse.Namespace) -> int:
    """Run ``serve``, ``submit`` or ``jobs``."""
    return {"serve": _serve, "submit": _submit, "jobs": _jobs}[args.command](args)


# -- serve --------------------------------------------------------------------------------------


def _report(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} nbflow serve: {message}", file=sys.stderr, flush=True)


def _serve(args: argparse.Namespace) -> int:
    from .service import Service

    service = Service(args.workflow, state_dir=args.state_dir, concurrency=args.concurrency,
                      cluster=args.cluster, shared=args.shared, report=_report)
    if args.watch is not None:
        from .watch import FolderWatch

        service.watch(FolderWatch(args.watch, pattern=args.pattern, recursive=args.recursive,
                                  param=args.param, existing=args.existing, stable=args.stable))
    if args.http is not None:
        host, port = host_port(args.http)
        service.listen(host, port, token=args.token or os.environ.get("NBFLOW_SERVICE_TOKEN"),
                       max_body=args.max_body)
    if args.watch is None and args.http is None:
        _input_triggers(service, args)
    ref = service.workflow.ref
    service.store.set_workflow(ref if service.workflow.kind == "module"
                               else str(Path(ref).resolve()))
    asyncio.run(_serve_until_signal(service))
    return EXIT_OK


def _input_triggers(service: Any, args: argparse.Namespace) -> None:
    """A workflow whose input nodes watch a folder or a port (CryoCloud's ``dirwatcher``,
    ``netwatcher``) gets those triggers when none is given on the command line."""
    from ..batch.workflow_options import input_triggers

    found = input_triggers(args.workflow)
    for trigger in found:
        if trigger["kind"] == "folder":
            from .watch import FolderWatch

            service.watch(FolderWatch(trigger["path"], recursive=trigger["recursive"],
                                      param=trigger["parameter"], stable=args.stable))
            _report(f"{trigger['node']}: its dirwatcher is the watched folder {trigger['path']}")
        else:
            service.listen("127.0.0.1", int(trigger["port"]),
                           token=args.token or os.environ.get("NBFLOW_SERVICE_TOKEN"),
                           max_body=args.max_body)
            _report(f"{trigger['node']}: its netwatcher is POST /jobs "
                    f"{{\"{trigger['parameter']}\": ...}} on 127.0.0.1:{trigger['port']}")
    if not found:
        _report("no --watch or --http: taking jobs from nbflow submit only")


async def _serve_until_signal(service: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await service.start()
    _report(f"serving {service.workflow.ref} ({service.workflow.kind}); state dir "
            f"{service.state_dir}; concurrency {service.concurrency}")
    try:
        await stop.wait()
        _report("stopping")
    finally:
        await service.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
    _report("stopped")


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``--http``) as a host and a port number."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ServiceError(f"--http {text!r}: give HOST:PORT, like 127.0.0.1:8765")
    return host.strip("[]") or "127.0.0.1", int(port)


# -- submit and jobs -----------------------------------------------------------------------------


def _state_dir(value: str | None) -> Path:
    path = Path(value or os.environ.get("NBFLOW_STATE_DIR") or ".nbflow")
    if not (path / "jobs.db").is_file():
        raise ServiceError(f"no service state in {path} (no jobs.db); start nbflow serve "
                           "there first, or pass --state-dir")
    return path


def _submit(args: argparse.Namespace) -> int:
    from ..batch.params import resolve
    from .service import open_store
    from .workflow import load_workflow

    store = open_store(_state_dir(args.state_dir))
    ref = store.workflow()
    if ref is None:
        raise ServiceError(f"{store.path}: no nbflow serve has run here yet, so the workflow "
                           "to check the parameters against is unknown")
    workflow = load_workflow(ref)
    try:
        values = resolve(workflow.cell, workflow.ref, [tuple(p) for p in args.param],
                         args.params_file)
    except BatchInputError as exc:
        raise ServiceError(str(exc)) from None
    job = store.submit(workflow.check(values), "submit", source=f"pid {os.getpid()}")
    assert job is not None
    print(job.id)
    return EXIT_OK


def _jobs(args: argparse.Namespace) -> int:
    from .service import open_store

    store = open_store(_state_dir(args.state_dir))
    if args.action != "list" and not args.job_id:
        raise ServiceError(f"nbflow jobs {args.action} needs a job ID (see nbflow jobs)")
    if args.action == "list":
        jobs = store.jobs(args.state, args.limit)
        if args.json:
            print(json.dumps([j.to_dict() for j in jobs], indent=2))
        else:
            print(jobs_table(jobs))
        return EXIT_OK
    if args.action == "show":
        from .runner import JobFiles, live_tasks

        job = store.get(args.job_id)
        data = job.to_dict()
        if job.state == "running":
            data["tasks"] = live_tasks(JobFiles(store.path.parent, job.id))
        print(json.dumps(data, indent=2))
        return EXIT_OK
    job = store.cancel(args.job_id) if args.action == "cancel" else store.retry(args.job_id)
    what = ("cancel asked (the service stops it)" if job.state == "running" else job.state)
    print(f"job {job.id}: {what}")
    return EXIT_OK


def jobs_table(jobs: list[Job]) -> str:
    """A text table of jobs, newest first: id, state, trigger, times, error."""
    if not jobs:
        return "no jobs"
    rows = [("ID", "STATE", "TRIGGER", "CREATED", "DURATION", "DETAIL")]
    for j in jobs:
        duration = "" if j.duration is None else f"{j.duration:.1f}s"
        detail = j.error or j.source or json.dumps(j.params)
        rows.append((j.id, j.state, j.trigger, time.strftime("%Y-%m-%d %H:%M:%S",
                     time.localtime(j.created)), duration, detail[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5]
                     for r in rows)
