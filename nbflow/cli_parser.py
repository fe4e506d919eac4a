"""The ``nbflow`` command's argument parser: one subparser per command (see ``cli.py``)."""

from __future__ import annotations

import argparse
from typing import NoReturn

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``nbflow run: error: ... (see nbflow run --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _format_flags(parser: argparse.ArgumentParser, flag: str = "--format") -> None:
    """``--format`` and ``--allow-unsupported``, for the commands that read a workflow file
    (``nbflow params`` says ``--input-format``: its ``--format`` is the output's)."""
    parser.add_argument(flag, dest="spec_format", default="auto",
                        choices=("auto", "nbflow", "ephemeral", "cryocloud", "ecoscope"),
                        help="the workflow file's format (default: told from its top-level "
                        "keys): an nbflow spec, an Ephemeral job map, a CryoCloud workflow or "
                        "an ecoscope-workflows spec")
    parser.add_argument("--allow-unsupported", action="store_true",
                        help="keys of another system's file that nbflow cannot honour on one "
                        "machine (a CryoCloud node's gpu, replicas, ...) are a warning, not an "
                        "error")


def build_parser() -> argparse.ArgumentParser:
    """The ``nbflow`` argument parser with its subcommands."""
    parser = _Parser(prog="nbflow", description=(
        "Run nbflow workflow notebooks as batch jobs: one run, a parameter sweep, the "
        "parameters as a schema, and the disk cache that makes runs resumable."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="execute a workflow notebook (papermill) or spec",
                         description=(
        "Execute NOTEBOOK with papermill in this environment's Python kernel, print each task's "
        "state and duration, and write the output notebook. A workflow spec (.yaml, .yml, "
        ".json) runs in this process instead; -o DIR gets the results of its exported tasks as "
        "they finish (-o FILE.json: a JSON summary instead). Exit code: "
        "0 success, 1 a task or cell failed, 2 bad input, 3 the kernel died."))
    _format_flags(run)
    run.add_argument("notebook", metavar="NOTEBOOK.ipynb|SPEC.yaml",
                     help="the workflow notebook, or a workflow spec")
    run.add_argument("-p", "--param", nargs=2, action="append", default=[],
                     metavar=("NAME", "VALUE"),
                     help="set a parameter of the notebook's parameters cell (repeatable); "
                     "VALUE is parsed to the parameter's type. A dotted NAME, TASK.ARG, gives "
                     "only task TASK that value for its argument ARG")
    run.add_argument("-c", "--config", action="append", default=[],
                     metavar="TASK.OPTION=VALUE",
                     help="set a task option for this run only (repeatable), like -c "
                     "clean.retries=2 or -c fit.timeout=600; VALUE is parsed as YAML")
    run.add_argument("-f", "--params-file", action="append", default=[], metavar="PARAMS.yaml",
                     help="parameters from a YAML/JSON mapping (see nbflow params --format "
                     "yaml); -p wins over it")
    run.add_argument("-o", "--output", metavar="OUT.ipynb|DIR", default=None,
                     help="for a notebook, the executed notebook (default: "
                     "NOTEBOOK-output.ipynb here). For a spec, DIR: a directory that gets the "
                     "results of the exported tasks as they finish (Parquet for DataFrames, "
                     "JSON, else pickle; one file per branch of a mapped task) and "
                     "manifest.json; a path ending in .json is a JSON summary of the run "
                     "(states, exported values) instead")
    run.add_argument("--cluster", metavar="ADDRESS", default=None,
                     help="run the flow's tasks on this dask scheduler (tcp://host:port)")
    run.add_argument("--cache-dir", metavar="DIR", default=None,
                     help="keep every finished task's result in DIR, so a re-run recomputes only "
                     "unfinished tasks (default: $NBFLOW_CACHE_DIR, else no disk cache)")
    run.add_argument("--log-events", metavar="EVENTS.jsonl", default=None,
                     help="write one JSON object per task state change to this file")
    run.add_argument("--progress", action="store_true", help="show papermill's cell progress bar")
    run.add_argument("-q", "--quiet", action="store_true",
                     help="print nothing on success (errors still go to stderr)")

    sweep = sub.add_parser("sweep", help="run a notebook once per parameter set", description=(
        "Run NOTEBOOK once per parameter set of GRID (a cartesian product under 'grid:', or a "
        "list under 'jobs:'; shared values under 'params:'), PARALLEL at a time or on a dask "
        "cluster. Writes one output notebook per job, and DIR/summary.csv and DIR/summary.json "
        "as jobs finish. Run again into the same DIR (after a kill, say), it reuses the jobs "
        "that succeeded there with the same notebook and parameters, and runs the others. "
        "Exit code 0 when every job succeeded, 1 otherwise, 2 for bad input."))
    sweep.add_argument("notebook", metavar="NOTEBOOK.ipynb", help="the workflow notebook")
    sweep.add_argument("--grid", required=True, metavar="GRID.yaml",
                       help="the parameter sets (YAML or JSON)")
    sweep.add_argument("--out-dir", required=True, metavar="DIR",
                       help="where the output notebooks, event logs and summaries go")
    sweep.add_argument("--parallel", type=int, default=2, metavar="N",
                       help="jobs at once on this machine (default: 2)")
    sweep.add_argument("--cluster", metavar="ADDRESS", default=None,
                       help="run the jobs on the workers of this dask scheduler instead (they "
                       "must see NOTEBOOK and DIR)")
    sweep.add_argument("--cache-dir", metavar="DIR", default=None,
                       help="a disk cache shared by the jobs (re-running the sweep recomputes "
                       "only unfinished tasks)")
    sweep.add_argument("--rerun", action="store_true",
                       help="run every job, also those that an earlier sweep into DIR finished "
                       "successfully with the same notebook and parameters (by default they "
                       "are reused)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")

    params = sub.add_parser("params", help="the notebook's parameters as JSON Schema or YAML",
                            description=(
        "Print the parameters of NOTEBOOK's parameters cell (read with ast, never run) with "
        "their types and defaults: as JSON Schema, or as a YAML form that nbflow run -f reads."))
    _format_flags(params, "--input-format")
    params.add_argument("notebook", metavar="NOTEBOOK.ipynb|SPEC.yaml",
                        help="the notebook, or a workflow spec")
    params.add_argument("--format", choices=("json", "yaml"), default="json",
                        help="json: a JSON Schema; yaml: a fillable form (default: json)")
    params.add_argument("-o", "--output", metavar="FILE", default=None,
                        help="write to FILE instead of standard output")

    validate = sub.add_parser("validate", help="check a workflow spec without running it",
                              description=(
        "Load SPEC with the safe YAML loader, check it against the spec schema, resolve every "
        "task function and check the graph, calling no task function. A spec is code: it runs "
        "the functions it names, like a script, so validate prints one line per module the spec "
        "imports (and imports them, as loading the spec does). Problems are printed with the "
        "file, key path and line; exit code 2."))
    validate.add_argument("spec", metavar="SPEC.yaml", help="the workflow spec (YAML or JSON)")
    _format_flags(validate)

    sub.add_parser("tasks", help="the tasks that installed packages register", description=(
        "List the tasks contributed by installed packages (entry point group nbflow.tasks) "
        "with their parameters and one-line docs, and the packages that failed to import."))

    export = sub.add_parser("export", help="a notebook's workflow as a Python module or spec",
                            description=(
        "Write the task cells of NOTEBOOK as a plain Python module that runs the flow without "
        "Jupyter (-o FLOW.py), or as a workflow spec plus that module (-o FLOW.yaml / .json)."))
    export.add_argument("notebook", metavar="NOTEBOOK.ipynb", help="the workflow notebook")
    export.add_argument("-o", "--output", required=True, metavar="FLOW.py|FLOW.yaml",
                        help="where to write; the suffix picks the format")

    convert = sub.add_parser("convert", help="compile a workflow to a spec, a script, a "
                             "jupytext notebook or an Airflow DAG", description=(
        "Write WORKFLOW (a notebook or a spec) as another kind of file: spec (a spec, plus "
        "the module of a notebook's task functions), script (a plain Python script that runs "
        "the tasks in order without nbflow's scheduler; python OUT.py --config params.yaml -p "
        "NAME VALUE), jupytext (a py:percent workflow notebook) or airflow (an Airflow DAG "
        "with the TaskFlow API). A feature the target cannot express is an error naming the "
        "task, never dropped."))
    convert.add_argument("notebook", metavar="WORKFLOW", help="NOTEBOOK.ipynb or SPEC.yaml")
    _format_flags(convert)
    convert.add_argument("--to", required=True, choices=("spec", "script", "jupytext",
                                                         "airflow"), help="what to write")
    convert.add_argument("-o", "--output", required=True, metavar="OUT",
                         help="the file to write (.yaml/.json for spec, .py for the others)")

    cache = sub.add_parser("cache", help="the disk result cache: size, clear", description=(
        "Inspect or empty the disk cache that --cache-dir / NBFLOW_CACHE_DIR points at."))
    cache_sub = cache.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    for action, text in (("info", "how many results and bytes the cache holds"),
                         ("clear", "delete every cached result (only nbflow's own entries)")):
        p = cache_sub.add_parser(action, help=text, description=text.capitalize() + ".")
        p.add_argument("--cache-dir", metavar="DIR", default=None,
                       help="the cache directory (default: $NBFLOW_CACHE_DIR)")

    from .service.commands import add_parsers

    add_parsers(sub)
    from .history.commands import add_parsers as add_history_parsers
    from .history.commands import add_why_parser

    add_history_parsers(sub)
    add_why_parser(sub)
    return parser
