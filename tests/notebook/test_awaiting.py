"""Which lines the awaited-run transform rewrites (the kernel behaviour is in test_kernel)."""

from __future__ import annotations

from types import SimpleNamespace

from IPython.core.async_helpers import _asyncio_runner
from IPython.core.inputtransformer2 import TransformerManager

from nbflow.notebook.awaiting import AwaitBlockingRuns, install


def kernel_shell(**kwargs):
    values = {"autoawait": True, "loop_runner": _asyncio_runner, "kernel": object(),
              "input_transformers_post": []}
    values.update(kwargs)
    return SimpleNamespace(**values)


def transform(source: str, shell=None) -> str:
    lines = TransformerManager().transform_cell(source).splitlines(keepends=True)
    return "".join(AwaitBlockingRuns(shell or kernel_shell())(lines))


def test_top_level_run_and_wait_lines_are_awaited():
    out = transform("x = 1\n%nbflow run a --param k=\"it's\"\n%nbflow wait\n")
    assert out == ("x = 1\n"
                   "await get_ipython().find_line_magic('nbflow').__self__"
                   ".awaitable('run a --param k=\"it\\'s\"')\n"
                   "await get_ipython().find_line_magic('nbflow').__self__.awaitable('wait')\n")


def test_other_lines_are_left_as_they_are():
    for source in ("%nbflow status\n", "%nbflow show\n", "%timeit run\n",
                   "for i in range(2):\n    %nbflow run\n", "r = %nbflow run\n",
                   "%%nbflow task a\n1\n"):
        expected = TransformerManager().transform_cell(source)
        assert transform(source) == expected, source


def test_only_kernels_that_await_on_asyncio_are_rewritten():
    source = "%nbflow run\n"
    plain = TransformerManager().transform_cell(source)
    for shell in (kernel_shell(autoawait=False), kernel_shell(kernel=None),
                  kernel_shell(loop_runner=lambda coro: None)):
        assert transform(source, shell) == plain


def test_install_adds_the_transform_once():
    shell = kernel_shell()
    install(shell)
    install(shell)
    assert len(shell.input_transformers_post) == 1
