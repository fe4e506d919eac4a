"""A failed or skipped branch never reaches a fan-in as data (issue 20).

A mapped task's result is the list of its branch results, so it has one only when
every branch has: a mapped task with a failed, cancelled or skipped branch is not
``succeeded``, and what consumes it with the default ``run_on="success"`` is skipped.
A ``run_on="always"`` consumer gets the list, with a ``Failed``/``Skipped`` in place of
each missing branch result.
"""

from __future__ import annotations

import pytest

import nbflow as nf


def branches_flow(**fan_in_options: object) -> nf.Flow:
    flow = nf.Flow("fan-in")

    @flow.task
    def numbers():
        return list(range(5))

    @flow.task(map="numbers")
    def tens(numbers):
        if numbers == 2:
            raise ValueError("two")
        return numbers * 10

    @flow.task(map="tens")  # element-wise: tens[2] failed, so branch 2 is skipped
    def same(tens):
        return tens

    @flow.task(**fan_in_options)  # type: ignore[call-overload]
    def collect(same):
        return list(same)

    return flow


def test_a_skipped_branch_skips_the_fan_in(executor):
    run = branches_flow().run(executor=executor, raise_on_failure=False)
    assert run.states == {"numbers": "succeeded", "tens": "failed", "same": "skipped",
                          "collect": "skipped"}
    same = run.task("same")
    assert dict(same.counts) == {"succeeded": 4, "skipped": 1}
    assert same.skip_reason == "1 of 5 branches skipped (same[2]: upstream tens[2] failed)"
    assert run.task("collect").skip_reason == "upstream 'same' was skipped"
    with pytest.raises(nf.ResultUnavailableError, match="it is skipped"):
        run.results["same"]
    assert [f.label for f in run.failures] == ["tens[2]"]


def test_run_on_always_gets_the_placeholders(executor):
    run = branches_flow(run_on="always").run(executor=executor, raise_on_failure=False)
    assert run.states["collect"] == "succeeded"
    values = run.results["collect"]
    assert values[:2] == [0, 10] and values[3:] == [30, 40]
    assert isinstance(values[2], nf.Skipped) and values[2].reason == "upstream tens[2] failed"


def test_a_branch_skipped_by_run_if_skips_the_fan_in():
    flow = nf.Flow("filter")

    @flow.task
    def numbers():
        return [1, 2, 3]

    @flow.task(map="numbers", run_if=lambda numbers: numbers != 2)
    def odd(numbers):
        return numbers

    @flow.task
    def total(odd):
        return sum(odd)

    run = flow.run(executor="inline")
    assert run.status == "succeeded"
    assert run.states == {"numbers": "succeeded", "odd": "skipped", "total": "skipped"}
    assert run.task("odd").skip_reason == "1 of 3 branches skipped (odd[1]: run_if returned False)"


def test_a_failed_branch_leaves_the_fan_in_its_own_failure_to_handle():
    flow = branches_flow()

    @flow.task(run_on="failure")
    def alert(tens):
        return [type(v).__name__ for v in tens]

    run = flow.run(executor="inline", raise_on_failure=False)
    assert run.states["tens"] == "failed"
    assert run.results["alert"] == ["int", "int", "Failed", "int", "int"]
