"""What a sweep leaves in its output directory, written as jobs finish.

- ``NAME-000.result.json`` per finished job: its outcome, the parameters and
  the SHA-256 of the notebook it ran. A later sweep into the same directory
  reuses a job whose record says it succeeded with the same notebook and the
  same parameters and whose output notebook is still there
  (:func:`previous_result`), unless ``--rerun`` is given.
- ``summary.json`` and ``summary.csv``: every finished (or reused) job so far,
  rewritten after each job, so a killed sweep still has the summary of what
  finished.

Every file is written to a temporary name and renamed into place, so a kill
never leaves half a file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..jsonvalues import dumps, jsonable
from .execute import JobResult, TaskOutcome

if TYPE_CHECKING:
    from .sweep import Job

RECORD_VERSION = 1


def notebook_digest(path: str | Path) -> str:
    """SHA-256 of the notebook file (a changed notebook reruns every job)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(job: Job, result: JobResult) -> None:
    """The job's ``.result.json``: its outcome, with what it was computed from."""
    data = {"version": RECORD_VERSION, "notebook_sha256": job.notebook_sha256,
            "params": job.params, "result": result.to_dict()}
    write_atomic(Path(job.record), dumps(data, indent=1) + "\n")


def previous_result(job: Job) -> JobResult | None:
    """The outcome a previous sweep recorded for this job, if it can be reused.

    Only a job that succeeded, with the same notebook content and parameters,
    whose output notebook still exists, is reused.
    """
    try:
        data = json.loads(Path(job.record).read_text(encoding="utf-8"))
        if (data.get("version") != RECORD_VERSION
                or data.get("notebook_sha256") != job.notebook_sha256
                or data.get("params") != jsonable(job.params)):
            return None
        raw = data["result"]
        if raw.get("status") != "succeeded" or not Path(job.output).is_file():
            return None
        tasks = [TaskOutcome(t["task"], t["state"], t["attempts"], t["duration"],
                             tuple(t["branches"]) if t.get("branches") else None,
                             t.get("started"))
                 for t in raw.get("tasks", [])]
        return JobResult(notebook=raw["notebook"], output=raw["output"], params=job.params,
                         status=raw["status"], duration=float(raw["duration"]), tasks=tasks,
                         exports=raw.get("exports") or {}, error=raw.get("error"),
                         reused=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no record, or one from another version: run the job


def rows(results: Mapping[int, JobResult]) -> Iterator[dict[str, Any]]:
    """One flat row per job: parameters, status, duration, output, exported values."""
    for i, r in sorted(results.items()):
        row: dict[str, Any] = {"job": i}
        row.update({f"param.{k}": v for k, v in r.params.items()})
        row.update(status=r.status, duration=round(r.duration, 3), output=r.output,
                   error=r.error or "", reused=r.reused)
        row.update({f"export.{k}": v for k, v in r.exports.items()})
        yield row


def write_summary(results: Mapping[int, JobResult], out_dir: Path) -> None:
    """``summary.json`` (a list of job objects) and ``summary.csv`` (one row per job)."""
    data = [
        {"job": i, "params": r.params, "status": r.status, "duration": round(r.duration, 3),
         "output": r.output, "error": r.error, "exports": r.exports, "reused": r.reused,
         "tasks": {t.task: t.state for t in r.tasks}}
        for i, r in sorted(results.items())
    ]
    write_atomic(out_dir / "summary.json", dumps(data, indent=1) + "\n")
    table = list(rows(results))
    columns: list[str] = []
    for row in table:
        columns += [c for c in row if c not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for row in table:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    write_atomic(out_dir / "summary.csv", text.getvalue())


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return dumps(value)
    return value


def summary_text(results: Mapping[int, JobResult], out_dir: Path, planned: int) -> str:
    """What ``nbflow sweep`` prints at the end."""
    ok = sum(r.ok for r in results.values())
    reused = sum(r.reused for r in results.values())
    again = f" ({reused} reused from a previous sweep; --rerun runs them again)" if reused else ""
    lines = [f"nbflow sweep: {ok} of {planned} jobs succeeded{again}; summary: "
             f"{out_dir / 'summary.csv'}, {out_dir / 'summary.json'}"]
    for i, r in sorted(results.items()):
        params = ", ".join(f"{k}={v!r}" for k, v in r.params.items())
        exports = ", ".join(f"{k}={_short(v)}" for k, v in r.exports.items())
        status = "reused" if r.reused else r.status
        line = f"  job {i}: {status:<9} {r.duration:5.1f}s  {params}"
        if exports:
            line += f"  -> {exports}"
        if r.error:
            line += f"  ({r.error})"
        lines.append(line)
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = f"{value:.4g}" if isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
