"""What correct cache keys cost: hashing code, helpers, local modules and package versions.

A notebook-like flow: 50 task cells (compiled as ``%%nbflow task`` cells are, by
``nbflow.notebook.compiler``, over one namespace) and a local helper module of
2,000 lines (``bench_helpers.py`` in a temporary folder on ``sys.path``). Each task
calls two functions of the module and a notebook helper, reads a notebook global
through that helper, and uses numpy (a package: its version is a key part) when it
is installed. Measured, per task (code key + ``key_extra()``, as ``Flow.plan`` asks):

1. **first time**: a fresh process state (memos cleared, new tasks): every source is
   parsed and hashed;
2. **unchanged**: the same tasks again, nothing edited: files are remembered by
   ``(path, mtime_ns, size)``, functions by their code object (target: at most
   ``TARGET_MS`` per task);
3. **one edit**: the helper module saved again with one function changed: one file
   is parsed again, the rest is remembered.

Run ``python benchmarks/cache_keys.py`` (a few seconds) or ``--quick``.
"""

from __future__ import annotations

import argparse
import importlib
import linecache
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

# Run as a script, this file's folder comes first on sys.path, where the sibling
# benchmarks/dask.py would shadow the real dask package: take the folder off.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import nbflow as nf  # noqa: E402
from nbflow import code_sources  # noqa: E402
from nbflow.notebook.compiler import cell_task, parse_cell  # noqa: E402

TASKS = 50
MODULE_LINES = 2_000
TARGET_MS = 3.0


def helper_module(lines: int, variant: int = 0) -> str:
    """A module of about ``lines`` lines: constants and 10-line functions calling each other."""
    out = ['"""Helpers for the benchmark notebook."""', "", "import math", "", "SCALE = 2", ""]
    i = 0
    while len(out) < lines:
        bump = variant if i == 7 else 0
        out += [
            "",
            f"def helper_{i}(rows, limit={i % 5}):",
            f'    """Helper {i}: scale the rows above ``limit``."""',
            "    # keep the rows above the limit",
            "    kept = [r for r in rows if r > limit]",
            f"    scaled = [r * SCALE + {bump} for r in kept]",
            "    total = sum(scaled)",
            "    if total > 1_000:",
            "        return [math.sqrt(r) for r in scaled]",
            f"    return scaled if {i} % 2 else list(reversed(scaled))",
            "",
        ]
        i += 1
    return "\n".join(out) + "\n"


NOTEBOOK = '''\
import bench_helpers as helpers
THRESHOLD = 10
def tidy(rows):
    """A notebook helper that reads a global."""
    return [r for r in rows if r < THRESHOLD * 100]
'''


def notebook(folder: str) -> dict[str, Any]:
    """The notebook's namespace: its helpers defined in a cell registered in linecache."""
    filename = os.path.join(folder, "<notebook cell>")
    linecache.cache[filename] = (len(NOTEBOOK), None, NOTEBOOK.splitlines(True), filename)
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(NOTEBOOK, filename, "exec"), ns)
    try:
        import numpy  # noqa: F401

        ns["np"] = sys.modules["numpy"]
    except ImportError:
        pass
    return ns


def tasks(ns: dict[str, Any]) -> list[nf.Task]:
    """50 task cells over ``ns``: a root and tasks reading it."""
    flow = nf.Flow("bench-keys")
    out = []
    uses_np = "np" in ns
    for t in range(TASKS):
        name = f"t{t}"
        if t == 0:
            body = "t0 = list(range(100))"
        else:
            extra = " + [int(np.sum(t0))]" if uses_np else ""
            body = (f"# step {t}\n{name} = tidy(helpers.helper_{t % 40}(t0)"
                    f" + helpers.helper_{(t * 7) % 40}(t0)){extra}")
        cell = parse_cell(name, body, label=f"cell In[{t + 2}]")
        task = cell_task(cell, flow, ns, {})
        flow.add(task)
        out.append(task)
    return out


def key_time(tasks_: list[nf.Task]) -> float:
    """Seconds to compute every task's code key and extra key."""
    start = time.perf_counter()
    for task in tasks_:
        _ = task.code_key
        assert task.key_extra is not None
        task.key_extra()
    return time.perf_counter() - start


def fresh(ns: dict[str, Any]) -> list[nf.Task]:
    """New tasks over the same namespace, memos cleared: as in a new kernel."""
    code_sources.reset()
    importlib.reload(ns["helpers"])
    return tasks(ns)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per measurement")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target fails")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 7)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bench_helpers.py")
        with open(path, "w") as f:
            f.write(helper_module(MODULE_LINES))
        sys.path.insert(0, folder)
        try:
            ns = notebook(folder)
            first = min(key_time(fresh(ns)) for _ in range(repeats))
            same = fresh(ns)
            key_time(same)
            unchanged = min(key_time(same) for _ in range(repeats))
            edits = []
            for r in range(repeats):
                with open(path, "w") as f:
                    f.write(helper_module(MODULE_LINES, variant=r + 1))
                os.utime(path, ns=(r + 10**18, r + 10**18))
                edits.append(key_time(same))
        finally:
            sys.path.remove(folder)
            sys.modules.pop("bench_helpers", None)
    per = {k: v / TASKS * 1e3 for k, v in
           (("first", first), ("unchanged", unchanged), ("edit", min(edits)))}
    print(f"cache keys of {TASKS} task cells, a {MODULE_LINES:,}-line local module "
          f"(best of {repeats}), ms per task:")
    print(f"   {'first time':<22} {per['first']:>8.3f}")
    print(f"   {'unchanged re-run':<22} {per['unchanged']:>8.3f}   "
          f"({first / unchanged:.0f}x faster than the first time)")
    print(f"   {'after one module edit':<22} {per['edit']:>8.3f}   "
          f"({min(edits) / unchanged:.1f}x the unchanged re-run)")
    ok = per["unchanged"] <= TARGET_MS
    print(f"{'PASS' if ok else 'FAIL'}: unchanged re-run at most {TARGET_MS:g} ms per task "
          f"({per['unchanged']:.3f} ms)")
    return 0 if ok or not args.strict else 1


if __name__ == "__main__":
    sys.exit(main())
