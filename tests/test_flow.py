from __future__ import annotations

import pytest

import nbflow as nf


def make_flow():
    flow = nf.Flow("f")

    @flow.task
    def load(path: str = "data.csv"):
        return path

    @flow.task
    def clean(load, factor):
        return load * factor

    return flow


def test_decorator_returns_the_function_unchanged():
    flow = nf.Flow()

    def f():
        return 1

    assert flow.task(f) is f

    def g():
        return 2

    assert flow.task(retries=1)(g) is g
    assert "f" in flow and "g" in flow and len(flow) == 2
    assert flow.tasks["g"].options.retries == 1


def test_lambda_needs_a_name():
    flow = nf.Flow()
    with pytest.raises(nf.InvalidOptionError, match="identifier"):
        flow.task(lambda: 1)
    flow.task(name="one")(lambda: 1)
    assert flow.run(executor="inline").results["one"] == 1


def test_upstreams_and_parameters_come_from_names():
    flow = make_flow()
    assert flow.upstreams("clean") == ("load",)
    assert flow.parameters() == {"path": "data.csv", "factor": ...}


def test_missing_parameter_is_named_with_its_task():
    flow = make_flow()
    with pytest.raises(nf.MissingParameterError) as info:
        flow.plan()
    msg = str(info.value)
    assert "'factor'" in msg and "'clean'" in msg and "params=" in msg
    assert info.value.missing == {"factor": ["clean"]}


def test_missing_parameter_suggests_a_close_task_name():
    flow = nf.Flow("f")

    @flow.task
    def seasonal():
        return 1

    @flow.task
    def plot(seasonl):
        return seasonl

    with pytest.raises(nf.MissingParameterError, match="Did you mean 'seasonal'"):
        flow.plan()


def test_params_give_values_and_unknown_params_are_errors():
    flow = make_flow()
    plan = flow.plan(params={"factor": 2})
    assert plan.by_name["clean"].params == {"factor": 2}
    with pytest.raises(nf.UnknownParameterError, match="Did you mean 'factor'"):
        flow.plan(params={"factor": 2, "facter": 3})


def test_namespace_supplies_parameters_below_params():
    ns = {"factor": 5, "path": "ns.csv"}
    flow = nf.Flow("f", namespace=ns)

    @flow.task
    def load(path: str = "data.csv"):
        return path

    @flow.task
    def clean(load, factor):
        return load * factor

    plan = flow.plan(params={"factor": 7})
    assert plan.by_name["clean"].params == {"factor": 7}
    assert plan.by_name["load"].params == {"path": "ns.csv"}


def test_duplicate_task_name():
    flow = make_flow()
    with pytest.raises(nf.DuplicateTaskError, match="already has a task named 'load'"):

        @flow.task
        def load():
            return 2


def test_replace_and_drop():
    flow = make_flow()

    def load():
        return "other"

    old = flow.replace(nf.Task.from_function(load))
    assert old is not None and old.inputs == ("path",)
    assert flow.tasks["load"].inputs == ()
    flow.drop("clean")
    assert list(flow.tasks) == ["load"]
    with pytest.raises(nf.UnknownTaskError, match="Did you mean 'load'"):
        flow.drop("lod")


def test_cycle_prints_the_path():
    flow = nf.Flow("loop")

    @flow.task
    def a(c):
        return c

    @flow.task
    def b(a):
        return a

    @flow.task
    def c(b):
        return b

    with pytest.raises(nf.CycleError) as info:
        flow.plan()
    path = info.value.cycle
    assert path[0] == path[-1] and set(path) == {"a", "b", "c"}
    assert " -> ".join(path) in str(info.value)


def test_after_cycle_and_unknown_after():
    flow = nf.Flow("x")

    @flow.task(after=["b"])
    def a():
        return 1

    @flow.task(after=["a"])
    def b():
        return 2

    with pytest.raises(nf.CycleError):
        flow.plan()

    flow2 = nf.Flow("y")

    @flow2.task
    def load():
        return 1

    @flow2.task(after=["lod"])
    def report():
        return 2

    with pytest.raises(nf.UnknownTaskError) as info:
        flow2.plan()
    assert "'report'" in str(info.value) and "Did you mean 'load'" in str(info.value)


def test_unknown_target_suggests():
    flow = make_flow()
    with pytest.raises(nf.UnknownTaskError, match="Did you mean 'clean'"):
        flow.plan("clen", params={"factor": 1})


def test_targets_only_need_their_ancestors():
    flow = make_flow()
    # 'clean' needs 'factor', but running only 'load' does not
    plan = flow.plan("load")
    assert [pt.name for pt in plan.tasks] == ["load"]


def test_map_must_name_an_upstream():
    flow = nf.Flow("m")

    @flow.task
    def items():
        return [1, 2]

    @flow.task(map="itemz")
    def double(items):
        return items * 2

    with pytest.raises(nf.InvalidMapError) as info:
        flow.plan()
    msg = str(info.value)
    assert "'double'" in msg and "'itemz'" in msg and "Did you mean 'items'" in msg


def test_errors_pickle():
    import pickle

    flow = make_flow()
    with pytest.raises(nf.MissingParameterError) as info:
        flow.plan()
    clone = pickle.loads(pickle.dumps(info.value))
    assert str(clone) == str(info.value)
    assert clone.missing == info.value.missing


def test_a_plan_follows_every_change_of_the_flow_after_its_shape_was_kept():
    flow = nf.Flow("shape")

    @flow.task
    def a():
        return 1

    @flow.task
    def b(a):
        return a + 1

    first = flow.plan()
    assert flow.plan().tasks[1].deps == first.tasks[1].deps == (0,)  # the same shape, reused

    def b2():  # redeclared without the upstream
        return 5

    flow.replace(nf.Task.from_function(b2, name="b"))
    assert flow.plan().by_name["b"].deps == ()
    assert flow.plan().by_name["a"].children == []

    def a2(b):  # now a cycle: a -> b is gone, but b -> a, a -> b again below
        return b

    flow.replace(nf.Task.from_function(a2, name="a"))
    flow.replace(nf.Task.from_function(lambda a: a, name="b"))
    with pytest.raises(nf.CycleError):
        flow.plan()
    flow.drop("b")
    with pytest.raises(nf.MissingParameterError):  # `b` is now a parameter nobody gives
        flow.plan()
    assert flow.plan(params={"b": 3}).params == {"b": 3}
