"""The ``nbflow`` command: parse, make one call into :mod:`nbflow.batch`, map the outcome
to an exit code.

Exit codes: 0 success; 1 a task or a cell failed (for a sweep: a job failed);
2 bad input (reported in one line before any kernel starts); 3 the kernel
died; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import config
from .cli_parser import build_parser
from .errors import BatchInputError, ServiceError
from .jsonvalues import dumps

if TYPE_CHECKING:
    from .batch.results_dir import ResultsDir

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nbflow`` command; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"] and {"-h", "--help"} & set(argv):
        from .batch.workflow_options import options_help

        text = options_help(argv)  # a workflow with options of its own lists them
        if text is not None:
            print(text)
            return EXIT_OK
    args, extra = parser.parse_known_args(argv)
    if extra and (args.command != "run" or not _has_options(args.notebook)):
        parser.parse_args(argv)  # exits with argparse's message for the unknown ones
    args.workflow_argv = extra
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "cache" and args.action is None:
        parser.exit(EXIT_USAGE, "nbflow cache: error: missing ACTION: info or clear "
                    "(see nbflow cache --help)\n")
    handler = {"run": _run, "sweep": _sweep, "params": _params, "cache": _cache,
               "validate": _validate, "tasks": _tasks, "export": _export, "convert": _convert,
               "serve": _service, "submit": _service, "jobs": _service,
               "runs": _history, "why": _why}[args.command]
    previous = signal.signal(signal.SIGTERM, _terminate)
    formats = {"spec_format": getattr(args, "spec_format", "auto"),
               "allow_unsupported": getattr(args, "allow_unsupported", False)}
    try:
        with config.set(**formats):
            return handler(args)
    except (BatchInputError, ServiceError) as exc:
        print(f"nbflow {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"nbflow {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


def _has_options(path: str) -> bool:
    """True for a workflow file with command-line options of its own (CryoCloud's)."""
    from .batch.workflow_options import has_options

    return has_options(path)


def _service(args: argparse.Namespace) -> int:
    from .service.commands import handle

    return handle(args)


def _history(args: argparse.Namespace) -> int:
    from .history.commands import handle

    return handle(args)


def _why(args: argparse.Namespace) -> int:
    from .history.commands import handle_why

    return handle_why(args)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so papermill shuts the kernel down and saves the output.
    raise KeyboardInterrupt


def _cache_dir(value: str | None) -> str | None:
    return value or os.environ.get("NBFLOW_CACHE_DIR") or None


def _log_file(value: str | None) -> str | None:
    """The ``--log-events`` file, checked before anything runs: not a directory, writable."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        raise BatchInputError(f"--log-events {value!r} is a directory; give a file, such as "
                              f"{str(path / 'events.jsonl')!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise BatchInputError(f"--log-events {value!r}: cannot write it: "
                              f"{exc.strerror or exc}") from None
    return str(path)


def _run(args: argparse.Namespace) -> int:
    from .batch import params as P
    from .batch.spec_job import is_spec

    if is_spec(args.notebook):
        return _run_spec(args)

    nb = P.read_notebook(args.notebook)
    cell = P.parameters_cell(nb, args.notebook)
    from .batch import task_params as T

    plain, dotted = T.split_pairs(args.param)
    values = P.resolve(cell, args.notebook, plain, args.params_file)
    task_values = T.task_config(cell, args.config, dotted)
    T.check_task_names(nb, args.notebook, task_values)
    output = args.output or f"{Path(args.notebook).stem}-output.ipynb"
    if Path(output).resolve() == Path(args.notebook).resolve():
        raise BatchInputError(f"-o {output!r} would overwrite the input notebook; choose "
                              "another output path")
    if Path(output).is_dir():
        raise BatchInputError(f"-o {output!r} is a directory; give the output notebook's path")

    from .batch.execute import format_summary, run_notebook

    result = run_notebook(args.notebook, output, values, cache_dir=_cache_dir(args.cache_dir),
                          events_log=_log_file(args.log_events), cluster=args.cluster,
                          progress=args.progress, config=task_values)
    if not args.quiet or not result.ok:
        print(format_summary(result), file=sys.stdout if result.ok else sys.stderr)
    if not result.ok:
        print(f"nbflow run: {result.status}: {result.error}", file=sys.stderr)
    unused = sorted({k.partition(".")[0] for k in task_values} - {t.task for t in result.tasks})
    if unused and result.ok:
        print(f"nbflow run: warning: -c/-p name task(s) {', '.join(unused)}, which no "
              "%nbflow run of the notebook ran", file=sys.stderr)
    return result.exit_code


def _run_spec(args: argparse.Namespace) -> int:
    from .batch.spec_job import run_spec

    summary_file, results = args.output, None
    if args.output and not (args.output.lower().endswith(".json")
                            and not Path(args.output).is_dir()):
        summary_file, results = None, _results_dir(args.output, args.notebook)
    observers: list[Any] = [] if results is None else [results]
    progress = None
    if not args.quiet and sys.stderr.isatty():  # streaming tasks' items and rates, live
        from .batch.progress import StreamProgress

        progress = StreamProgress(sys.stderr)
        observers.append(progress)
    try:
        from .batch.workflow_options import workflow_options

        result = run_spec(args.notebook, [tuple(p) for p in args.param], args.params_file,
                          values=workflow_options(args.notebook, args.workflow_argv),
                          cache_dir=_cache_dir(args.cache_dir),
                          events_log=_log_file(args.log_events), cluster=args.cluster,
                          options=args.config, observers=observers)
    except BaseException as exc:  # Ctrl-C, SIGTERM: keep what finished, and say so
        if progress is not None:
            progress.close()
        if results is not None and results.run is not None:
            results.close(interrupted=isinstance(exc, KeyboardInterrupt))
            print(f"results: {len(results.files)} file(s) kept in {results.path} "
                  "(manifest.json)", file=sys.stderr)
        raise
    if progress is not None:  # its last events may have come before it was bound
        progress.close()
    written = results is None or results.close()
    if not args.quiet or not result.ok:
        print(result.summary, file=sys.stdout if result.ok else sys.stderr)
        if results is not None:
            print(f"results: {len(results.files)} file(s) in {results.path} (manifest.json)")
    if not result.ok:
        print(f"nbflow run: {args.notebook}: {result.status}", file=sys.stderr)
    if results is not None and (results.errors or not written):
        print(f"nbflow run: -o {args.output!r}: {len(results.errors)} result(s) could not be "
              "written" + ("" if written else ", and the writer did not finish"), file=sys.stderr)
        return EXIT_FAILED
    if summary_file:
        try:  # after the summary is printed, so a failed write loses nothing
            Path(summary_file).parent.mkdir(parents=True, exist_ok=True)
            Path(summary_file).write_text(dumps(result.to_dict(), indent=2) + "\n")
        except OSError as exc:
            print(f"nbflow run: cannot write -o {args.output!r}: {exc.strerror or exc}",
                  file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK if result.ok else EXIT_FAILED


def _results_dir(value: str, spec: str) -> ResultsDir:
    """The ``-o DIR`` of a spec run, checked before anything runs."""
    from .batch.results_dir import ResultsDir

    try:
        return ResultsDir(Path(value).expanduser(), spec=spec)
    except OSError as exc:
        raise BatchInputError(f"-o {value!r}: cannot make the results directory there: "
                              f"{exc.strerror or exc}") from None


def _validate(args: argparse.Namespace) -> int:
    from .batch.spec_job import validate

    print(validate(args.spec))
    return EXIT_OK


def _tasks(args: argparse.Namespace) -> int:
    import inspect

    from .registry import registry

    names = list(registry)
    for name in names:
        task = registry.get(name)
        params = ", ".join(
            p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
            for p in task.parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
        print(f"{name}({params})" + (f"  {task.doc}" if task.doc else ""))
    if not names:
        print("no installed package registers nbflow tasks (entry point group nbflow.tasks)")
    for problem in registry.errors.values():
        print(f"nbflow tasks: broken package {problem}", file=sys.stderr)
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from .errors import ExportError
    from .notebook.export import export_notebook

    try:
        written = export_notebook(args.notebook, args.output)
    except ExportError as exc:
        raise BatchInputError(str(exc)) from None
    for path in written:
        print(f"nbflow export: wrote {path}")
    return EXIT_OK


def _convert(args: argparse.Namespace) -> int:
    from .convert.targets import convert
    from .errors import ExportError

    try:
        written = convert(args.notebook, args.to, args.output)
    except ExportError as exc:
        raise BatchInputError(str(exc)) from None
    for path in written:
        print(f"nbflow convert: wrote {path}")
    return EXIT_OK


def _sweep(args: argparse.Namespace) -> int:
    from .batch.sweep import plan_jobs, run_sweep
    from .batch.sweep_summary import summary_text

    if args.parallel < 1:
        raise BatchInputError(f"--parallel must be at least 1, got {args.parallel}")
    jobs = plan_jobs(args.notebook, args.grid, args.out_dir,
                     cache_dir=_cache_dir(args.cache_dir), cluster=None)
    results = run_sweep(jobs, args.out_dir, parallel=args.parallel, cluster=args.cluster,
                        progress=not args.no_progress, rerun=args.rerun)
    print(summary_text(results, Path(args.out_dir), len(jobs)))
    return EXIT_OK if all(r.ok for r in results.values()) else EXIT_FAILED


def _params(args: argparse.Namespace) -> int:
    from .batch import params as P
    from .batch.spec_job import is_spec, load, spec_parameters

    if is_spec(args.notebook):
        cell: P.ParametersCell | None = spec_parameters(load(args.notebook))
    else:
        cell = P.parameters_cell(P.read_notebook(args.notebook), args.notebook)
    if cell is None:
        raise BatchInputError(f"{args.notebook} has no cell tagged 'parameters'")
    if args.format == "json":
        text = dumps(P.to_schema(cell), indent=2) + "\n"
    else:
        text = P.to_yaml_form(cell, "spec" if is_spec(args.notebook) else "notebook")
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _cache(args: argparse.Namespace) -> int:
    from .cache import entry_files, remove_entries

    path = _cache_dir(args.cache_dir)
    if path is None:
        raise BatchInputError("no cache directory: pass --cache-dir DIR or set NBFLOW_CACHE_DIR")
    where = Path(path).expanduser().resolve()
    if not where.is_dir():  # a mistyped path: say so, and create nothing
        if args.action == "clear" and not where.exists():
            print(f"nbflow cache: {where} does not exist; nothing to clear")
            return EXIT_OK
        what = "is not a directory" if where.exists() else "does not exist"
        raise BatchInputError(f"no cache directory at {where}: it {what} (check --cache-dir "
                              "or NBFLOW_CACHE_DIR)")
    files = entry_files(where)
    size = sum(f.stat().st_size for f in files)
    if args.action == "info":
        print(f"nbflow cache {where}: {len(files)} results, {_bytes(size)}{_foreign(files)}")
    else:
        remove_entries(where)
        print(f"nbflow cache {where}: deleted {len(files)} results ({_bytes(size)})")
    return EXIT_OK


def _foreign(files: list[Path]) -> str:
    """``"; N of them signed with another key ..."``: the entries a run would refuse."""
    from .cache_auth import HEADER_MAX, load_key, parse_header
    from .errors import CacheKeyError

    try:
        key = load_key(create=False)
    except CacheKeyError as exc:
        return f"; the signing key cannot be used: {exc}"
    n = 0
    for f in files:
        try:
            with f.open("rb") as fh:
                header = parse_header(fh.read(HEADER_MAX))
        except OSError:  # deleted meanwhile
            continue
        n += key is None or header is None or header.key_id != key.id
    if not n:
        return ""
    return (f"; {n} of them signed with another key or by an older nbflow (refused and "
            "recomputed when a run needs them)")


def _bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"

