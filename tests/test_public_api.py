from __future__ import annotations

import subprocess
import sys

import nbflow


def test_all_is_sorted_and_honest():
    assert isinstance(nbflow.__all__, tuple)
    assert list(nbflow.__all__) == sorted(nbflow.__all__)
    public = {n for n in dir(nbflow) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(nbflow, n)).__name__ == "module"}
    # everything public is exported, except submodules and the extension hook
    hidden = {"load_ipython_extension", "annotations"}  # the hook; the __future__ import
    assert public - modules - hidden == set(nbflow.__all__) - {"config"}
    for name in nbflow.__all__:
        assert hasattr(nbflow, name), name


def test_public_classes_report_the_package_as_module():
    assert nbflow.Flow.__module__ == "nbflow"
    assert repr(nbflow.Flow("x")) == "Flow('x', 0 tasks)"


def test_core_imports_without_ipython_widgets_or_papermill():
    code = (
        "import sys, nbflow\n"
        "f = nbflow.Flow('x')\n"
        "f.task(name='a')(lambda: 1)\n"
        "assert f.run().results['a'] == 1\n"
        "bad = [m for m in ('IPython', 'ipywidgets', 'papermill', 'ipykernel') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_benchmark_quick_mode_runs():
    """The scheduler benchmark stays runnable (its targets are checked by running it in full)."""
    out = subprocess.run([sys.executable, "benchmarks/scheduler.py", "--quick"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "µs/task" in out.stdout or "us/task" in out.stdout
