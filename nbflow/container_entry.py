"""What runs inside a container for a Python task with ``image=``.

``python3 -m nbflow.container_entry CALL_DIR`` reads the function and its
arguments from ``CALL_DIR/call.pkl``, calls it in the job directory, and writes
``CALL_DIR/result.pkl``: ``(True, value)``, or ``(False, (error, frames))`` where
``frames`` are the traceback's ``(file, line, function)`` entries, so that the
kernel can show them with its own source lines (the container does not have the
user's notebook cells or files).

A function sent by value holds bytecode, which only the same Python version can
run: ``CALL_DIR/python.txt`` says which one sent it, and another one refuses.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

from . import jobdir
from .container_python import VERSION_MISMATCH
from .executors import pickling
from .executors.base import is_one_shot, settle


def main(argv: list[str]) -> int:
    call_dir = Path(argv[1])
    sent = (call_dir / "python.txt").read_text().strip()
    here = "{}.{}".format(*sys.version_info[:2])
    if sent != here:
        print(f"nbflow: the image runs Python {here}, but the task was sent from Python {sent}; "
              "a function travels as bytecode, which needs the same version", file=sys.stderr)
        return VERSION_MISMATCH
    job = os.environ.get("NBFLOW_JOB_DIR")
    if job:
        jobdir.on_worker.set(jobdir.WorkerJob(job))
    name, fn, kwargs = pickling.loads((call_dir / "call.pkl").read_bytes())
    try:
        value = fn(**kwargs)
        if is_one_shot(value):
            value = settle(value, name)
        outcome: tuple[bool, Any] = (True, value)
    except BaseException as exc:  # the task's own error: sent back, never raised here
        frames = [(f.filename, f.lineno, f.name) for f in traceback.extract_tb(exc.__traceback__)]
        outcome = (False, (exc.with_traceback(None), frames[1:]))  # [0] is main's own call
    try:
        data = pickling.dumps(outcome)
    except Exception as exc:
        what = "result" if outcome[0] else "error"
        error = RuntimeError(f"the {what} of task {name!r} cannot be pickled: {exc}")
        data = pickling.dumps((False, (error, [])))
    (call_dir / "result.pkl").write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
