"""Streams in task cells: a body with ``yield`` streams; ``--buffer`` and ``--batch-size``."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from nbflow.notebook.parser import build_parser, task_options


def test_the_header_options_are_task_options():
    parser = build_parser()
    args = parser.parse_command(["task", "chunk", "--map", "source", "--batch-size", "3"])
    assert task_options(args) == {"map": "source", "batch_size": 3}
    assert task_options(parser.parse_command(["task", "source", "--buffer", "2"])) == {"buffer": 2}
    with pytest.raises(ValueError, match="argument --batch-size: invalid int value"):
        parser.parse_command(["task", "chunk", "--batch-size", "many"])


def test_a_cell_that_yields_streams_and_batch_size_joins_its_items(ip):
    ip("%%nbflow task source --buffer 8\nfor i in range(5):\n    yield [i, i * 10]")
    ip("%%nbflow task chunk --map source --batch-size 2\nchunk = sum(source)")
    ip("%%nbflow task total\ntotal = sum(chunk)")
    source = ip.flow.tasks["source"]
    assert source.is_stream and source.options.buffer == 8
    assert ip.flow.tasks["chunk"].options.batch_size == 2
    ip("%nbflow run")
    assert ip.ns["source"] == [[0, 0], [1, 10], [2, 20], [3, 30], [4, 40]]
    assert ip.ns["chunk"] == [11, 55, 44]  # [0, 0, 1, 10], [2, 20, 3, 30], [4, 40]
    assert ip.ns["total"] == 110
    assert ip.flow.last_run.task("chunk").label == "3/3"


@pytest.mark.parametrize(("source", "message"), [
    ("%%nbflow task plain --buffer 2\nplain = 1", "option 'buffer' is for streaming tasks"),
    ("%%nbflow task source --buffer 0\nfor i in range(3):\n    yield i",
     "option 'buffer' must be a whole number of items >= 1"),
    ("%%nbflow task source --buffer two\nyield 1", "argument --buffer: invalid int value"),
])
def test_mistakes_are_one_line_errors(ip, capsys, source, message):
    result = ip(source, ok=False)
    assert isinstance(result.error_in_exec, UsageError)
    assert message in str(result.error_in_exec)
    assert "Traceback" not in capsys.readouterr().err


def test_batch_size_without_a_stream_is_refused_before_the_run(ip):
    ip("%%nbflow task items\nitems = [1, 2, 3]")
    ip("%%nbflow task chunk --map items --batch-size 2\nchunk = items")
    result = ip("%nbflow run", ok=False)
    assert "batch_size" in str(result.error_in_exec)
    assert "'items', which is not a stream" in str(result.error_in_exec)
