"""The %nbflow command line without IPython: subcommands, usage mistakes, task options."""

from __future__ import annotations

import argparse

import pytest

from nbflow.notebook.parser import build_parser, task_options


class Mistake(Exception):
    """Stands for IPython's UsageError: the parser raises what its caller chose."""


@pytest.fixture
def parser():
    return build_parser(Mistake)


def test_a_task_header_gives_only_the_options_it_sets(parser):
    args = parser.parse_command(["task", "sq", "--map", "items", "--retries", "2", "--after",
                                 "a, b", "--resources", "GPU=1", "--resources", "MEM=2",
                                 "--no-cache", "--executor", "threads"])
    assert (args.command, args.name) == ("task", "sq")
    assert task_options(args) == {"retries": 2, "map": "items", "cache": False,
                                  "after": ["a", "b"], "resources": {"GPU": 1.0, "MEM": 2.0},
                                  "executor": "threads"}
    assert task_options(parser.parse_command(["task", "plain"])) == {}


def test_run_parameters_are_literals_or_words(parser):
    args = parser.parse_command(["run", "total", "-p", "n=6", "-p", "name=alice", "--background"])
    assert (args.command, args.targets, args.background) == ("run", ["total"], True)
    assert dict(args.param) == {"n": 6, "name": "alice"}


@pytest.mark.parametrize(("argv", "message"), [
    (["task", "bad", "--bogus", "3"], "%%nbflow task: unrecognized arguments: --bogus 3 "
                                      "(see %%nbflow task --help)"),
    (["task", "bad", "--resources", "GPU"], "expected NAME=AMOUNT, got 'GPU'"),
    (["run", "-p", "3=x"], "%nbflow run: argument -p/--param: expected name=value"),
    ([], "%nbflow: missing a subcommand: task, run, status"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_mistakes_raise_the_callers_error(parser, argv, message):
    with pytest.raises(Mistake) as info:
        parser.parse_command(argv)
    assert message in str(info.value)


def test_mistakes_are_value_errors_by_default():
    with pytest.raises(ValueError, match="invalid int value"):
        build_parser().parse_command(["task", "bad", "--retries", "many"])


def test_help_is_printed_and_nothing_parsed(parser, capsys):
    assert parser.parse_command(["run", "--help"]) is None
    out = capsys.readouterr().out
    assert "%nbflow run [-h]" in out and "--background" in out
    assert "-p <NAME=VALUE>, --param <NAME=VALUE>" in out  # placeholders read as in IPython
    assert isinstance(parser.parse_command(["status"]), argparse.Namespace)
