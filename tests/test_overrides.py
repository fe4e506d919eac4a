"""Per-task configuration at run time: ``flow.run(config={"task.option": ..., "task.arg": ...})``."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

import nbflow as nf
from nbflow.errors import (
    InvalidOptionError,
    MissingParameterError,
    TaskTimeoutError,
    UnknownTaskError,
    ValidationError,
)
from nbflow.overrides import ENV_VAR, from_environ, plan_with_config
from nbflow.task import make_options


def make_flow(calls: list[str] | None = None) -> nf.Flow:
    """data -> rounded(decimals), coarse(decimals=1): two tasks sharing a parameter name."""
    calls = [] if calls is None else calls
    flow = nf.Flow("numbers")

    @flow.task
    def data():
        calls.append("data")
        return [1.23456, 2.34567]

    @flow.task
    def rounded(data, decimals):
        calls.append("rounded")
        return [round(v, decimals) for v in data]

    @flow.task
    def coarse(data, decimals=1):
        calls.append("coarse")
        return [round(v, decimals) for v in data]

    return flow


# -- arguments -------------------------------------------------------------------------------


def test_an_argument_override_applies_only_to_the_named_task():
    flow = make_flow()
    run = flow.run(params={"decimals": 0}, config={"rounded.decimals": 3})
    assert run.results["rounded"] == [1.235, 2.346]
    assert run.results["coarse"] == [1.0, 2.0]  # the run's value, not the override
    assert run.config == {"rounded.decimals": 3}


def test_an_argument_with_a_default_can_be_overridden():
    flow = make_flow()
    run = flow.run(params={"decimals": 2}, config={"coarse.decimals": 0})
    assert run.results["coarse"] == [1.0, 2.0]
    assert run.results["rounded"] == [1.23, 2.35]


def test_a_parameter_only_overridden_tasks_need_needs_no_value():
    flow = make_flow()
    run = flow.run(config={"rounded.decimals": 2})  # nobody gives 'decimals' otherwise
    assert run.results["rounded"] == [1.23, 2.35]
    assert run.results["coarse"] == [1.2, 2.3]  # keeps its own default
    assert run.plan.params == {}


def test_a_parameter_still_missing_for_another_task_is_named():
    flow = make_flow()

    @flow.task
    def scaled(data, decimals):
        return data

    with pytest.raises(MissingParameterError) as info:
        flow.run(config={"rounded.decimals": 2})
    assert info.value.missing == {"decimals": ["scaled"]}


def test_an_upstream_result_cannot_be_overridden():
    flow = make_flow()
    with pytest.raises(InvalidOptionError, match="result of upstream task 'data'"):
        flow.run(params={"decimals": 1}, config={"rounded.data": [1.0]})


def test_an_unknown_argument_gets_a_suggestion_from_the_inputs():
    flow = make_flow()
    with pytest.raises(InvalidOptionError) as info:
        flow.run(params={"decimals": 1}, config={"rounded.decimalz": 2})
    message = str(info.value)
    assert "Did you mean 'decimals'?" in message
    assert "Its arguments: decimals." in message


# -- options ---------------------------------------------------------------------------------


def test_an_option_override_changes_only_that_run():
    attempts: list[int] = []
    flow = nf.Flow("flaky")

    @flow.task(cache=False)
    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("the first try fails")
        return len(attempts)

    run = flow.run(config={"flaky.retries": 1})
    assert run.results["flaky"] == 2
    assert run.tasks["flaky"].attempts == 2
    assert flow.tasks["flaky"].options.retries == 0  # the declaration is unchanged
    attempts.clear()
    run = flow.run(raise_on_failure=False)
    assert run.states["flaky"] == "failed"


def test_a_timeout_override_stops_a_task():
    never = threading.Event()
    flow = nf.Flow("slow")

    @flow.task(cache=False)
    def slow():
        never.wait(30)
        return 1

    run = flow.run(config={"slow.timeout": 0.2}, executor="threads", raise_on_failure=False)
    never.set()
    assert run.states["slow"] == "failed"
    assert isinstance(run.failures[0].error, TaskTimeoutError)


def test_options_are_named_generically():
    flow = make_flow()
    for option in ("priority", "max_parallel", "group", "export"):
        value = {"priority": 5, "max_parallel": 2, "group": "g", "export": True}[option]
        plan = plan_with_config(flow, params={"decimals": 1}, config={f"rounded.{option}": value})
        assert getattr(plan.by_name["rounded"].task.options, option) == value
        assert getattr(plan.by_name["coarse"].task.options, option) != value


def test_a_bad_option_value_is_the_declaration_error():
    flow = make_flow()
    with pytest.raises(InvalidOptionError) as info:
        flow.run(params={"decimals": 1}, config={"rounded.retries": -1})
    with pytest.raises(InvalidOptionError) as declared:
        make_options("rounded", {"retries": -1})
    assert str(info.value) == str(declared.value)


def test_an_option_that_shapes_the_graph_is_refused():
    flow = make_flow()
    with pytest.raises(InvalidOptionError, match="shapes the graph"):
        flow.run(params={"decimals": 1}, config={"rounded.map": "data"})


def test_an_unknown_task_gets_a_suggestion_and_nothing_runs():
    calls: list[str] = []
    flow = make_flow(calls)
    with pytest.raises(UnknownTaskError, match=r"Did you mean 'rounded'\?"):
        flow.run(params={"decimals": 1}, config={"rounde.retries": 1})
    with pytest.raises(InvalidOptionError, match=r"Did you mean 'retries'\?"):
        flow.run(params={"decimals": 1}, config={"rounded.retrys": 1})
    with pytest.raises(ValidationError, match=r"'TASK\.NAME'"):
        flow.run(params={"decimals": 1}, config={"rounded": 1})
    assert calls == []
    assert flow.last_run is None


def test_a_task_the_targets_do_not_need_may_be_configured():
    flow = make_flow()
    run = flow.run("coarse", config={"rounded.decimals": 4})
    assert set(run.states) == {"data", "coarse"}


# -- cache keys ------------------------------------------------------------------------------


def test_a_changed_argument_recomputes_the_task_and_nothing_else():
    calls: list[str] = []
    flow = make_flow(calls)
    flow.run(params={"decimals": 1}, config={"rounded.decimals": 2})
    calls.clear()
    run = flow.run(params={"decimals": 1}, config={"rounded.decimals": 2})
    assert calls == [] and set(run.states.values()) == {"cached"}
    run = flow.run(params={"decimals": 1}, config={"rounded.decimals": 3})
    assert calls == ["rounded"]
    assert run.states == {"data": "cached", "rounded": "succeeded", "coarse": "cached"}
    calls.clear()
    run = flow.run(params={"decimals": 1})  # back to the run's value: a third key
    assert calls == ["rounded"]


def test_an_override_equal_to_the_parameter_shares_its_key():
    flow = make_flow()
    flow.run(params={"decimals": 2})
    run = flow.run(params={"decimals": 2}, config={"rounded.decimals": 2})
    assert run.states["rounded"] == "cached"


def test_options_that_do_not_change_the_result_keep_the_cached_one():
    calls: list[str] = []
    flow = make_flow(calls)
    flow.run(params={"decimals": 1})
    calls.clear()
    run = flow.run(params={"decimals": 1}, config={"rounded.retries": 3, "rounded.timeout": 60})
    assert calls == [] and run.states["rounded"] == "cached"
    run = flow.run(params={"decimals": 1}, config={"rounded.cache": False})
    assert calls == ["rounded"] and run.states["rounded"] == "succeeded"
    plan = plan_with_config(flow, params={"decimals": 1}, config={"rounded.cache": False})
    assert plan.by_name["rounded"].params_key == ""


# -- async and the environment -----------------------------------------------------------------


def test_run_async_takes_config():
    flow = make_flow()
    run = asyncio.run(flow.run_async(params={"decimals": 0}, config={"rounded.decimals": 1}))
    assert run.results["rounded"] == [1.2, 2.3]
    assert run.config == {"rounded.decimals": 1}


def test_from_environ_reads_the_kernel_overrides():
    assert from_environ({}) == {}
    assert from_environ({ENV_VAR: json.dumps({"a.retries": 2})}) == {"a.retries": 2}
    with pytest.raises(ValidationError, match="not JSON"):
        from_environ({ENV_VAR: "{nope"})
    with pytest.raises(ValidationError, match="JSON object"):
        from_environ({ENV_VAR: "[1]"})


def test_stream_takes_config():
    flow = nf.Flow("streamed")

    @flow.task
    def items():
        return [1, 2, 3]

    @flow.task(map="items")
    def scaled(items, factor=1):
        return items * factor

    assert sorted(flow.stream("scaled", config={"scaled.factor": 10})) == [10, 20, 30]
    assert flow.last_run is not None and flow.last_run.config == {"scaled.factor": 10}


def stream_flow() -> nf.Flow:
    flow = nf.Flow("streams")

    @flow.task
    def gen():
        yield from range(6)

    @flow.task(map="gen")
    def batch(gen):
        return gen

    @flow.task
    def items():
        return [1, 2]

    @flow.task(map="items")
    def plain(items):
        return items

    return flow


def test_batch_size_is_set_like_any_option():
    run = stream_flow().run(config={"batch.batch_size": 4})
    assert run.results["batch"] == [[0, 1, 2, 3], [4, 5]]


def test_stream_options_are_checked_as_at_declaration():
    flow = stream_flow()
    with pytest.raises(InvalidOptionError, match="which is not a stream"):
        flow.run(config={"plain.batch_size": 2})
    with pytest.raises(InvalidOptionError, match="not available on a streaming task"):
        flow.run(config={"gen.retries": 1})
    assert flow.last_run is None
