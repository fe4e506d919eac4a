from __future__ import annotations

import pytest

import nbflow as nf
from nbflow.task import Task, code_hash


def test_inputs_and_defaults_come_from_the_signature():
    def f(a, b=2, *, c=3):
        return a

    task = Task.from_function(f)
    assert task.name == "f"
    assert task.inputs == ("a", "b", "c")
    assert task.defaults == {"b": 2, "c": 3}
    assert not task.is_async


def test_async_functions_are_marked():
    async def g():
        return 1

    assert Task.from_function(g).is_async


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"retires": 2}, "Did you mean 'retries'"),
        ({"retries": "2"}, "must be an int"),
        ({"retries": -1}, "0 or more"),
        ({"retries": True}, "must be an int"),
        ({"timeout": 0}, "> 0"),
        ({"timeout": "10"}, "seconds"),
        ({"retry_delay": -1}, ">= 0"),
        ({"max_parallel": 0}, ">= 1"),
        ({"run_on": "sometimes"}, "'success', 'failure', 'always'"),
        ({"run_if": 3}, "callable"),
        ({"map": 3}, "upstream"),
        ({"after": [1]}, "list of task names"),
        ({"resources": {"GPU": "one"}}, "mapping of resource name"),
        ({"cache": "yes"}, "True or False"),
        ({"group": ""}, "non-empty string"),
        ({"group": "   "}, "non-empty string"),
        ({"group": 3}, "non-empty string"),
    ],
)
def test_bad_options_name_task_and_option(options, fragment):
    def f():
        return 1

    with pytest.raises(nf.InvalidOptionError) as info:
        Task.from_function(f, options=options)
    message = str(info.value)
    assert "Task 'f'" in message
    assert repr(next(iter(options))) in message
    assert fragment in message


# Issue 20, item 8: these were accepted, and failed (or hung, or never retried) only at run time
@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"timeout": float("nan")}, "finite number of seconds > 0"),
        ({"timeout": float("inf")}, "finite number of seconds > 0"),
        ({"retry_delay": float("inf")}, "finite number of seconds >= 0"),
        ({"retry_delay": float("nan")}, "finite number of seconds >= 0"),
        ({"retries": -3}, "0 or more"),
        ({"executor": 5}, "an Executor object"),
        ({"executor": "gpu"}, "'threads'"),
        ({"executor": nf.ThreadExecutor}, "an Executor object"),  # the class, not an object
        ({"resources": {"GPU": float("nan")}}, "finite amount >= 0"),
        ({"resources": {"GPU": float("inf")}}, "finite amount >= 0"),
        ({"resources": {"GPU": -1}}, "finite amount >= 0"),
        ({"resources": {"": 1}}, "finite amount >= 0"),
    ],
)
def test_option_values_are_checked(options, fragment):
    flow = nf.Flow()

    def f():
        return 1

    with pytest.raises(nf.InvalidOptionError) as info:
        flow.task(**options)(f)
    assert (info.value.task, info.value.option) == ("f", next(iter(options)))
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
    assert "f" not in flow  # nothing was declared


def test_good_executor_options_are_kept():
    ex = nf.ThreadExecutor()
    for value in (None, "threads", "processes", "inline", "dask", ex):
        assert Task.from_function(lambda: 1, name="t", options={"executor": value}).options.executor is value


@pytest.mark.parametrize("name", ["class", "in", "combined-output", "None"])
def test_names_are_names_not_identifiers(name):
    # Issue 17: a spec's tasks are referred to by name, so `in` or `combined-output` work
    flow = nf.Flow()
    flow.task(name=name)(lambda: 1)
    assert flow.run(executor="inline").results[name] == 1


@pytest.mark.parametrize(("name", "holds"), [("a.b", "'.'"), ("a b", "' '"), ("", None)])
def test_names_without_dots_or_spaces(name, holds):
    flow = nf.Flow()
    with pytest.raises(nf.InvalidOptionError) as info:
        flow.task(name=name)(lambda: 1)
    assert info.value.option == "name"
    assert (f"holds {holds}" if holds else "non-empty") in str(info.value)


def test_var_args_are_rejected():
    def f(*args):
        return args

    with pytest.raises(nf.InvalidOptionError, match=r"\*args"):
        Task.from_function(f)

    def g(**kw):
        return kw

    with pytest.raises(nf.InvalidOptionError, match=r"\*\*kw"):
        Task.from_function(g)


def test_after_accepts_a_single_name():
    def f():
        return 1

    assert Task.from_function(f, options={"after": "x"}).options.after == ("x",)


def test_code_hash_changes_with_code_not_with_decorator_options():
    flow = nf.Flow()

    @flow.task(retries=1)
    def a():
        return 1

    def b():
        return 2

    def c():
        return 2

    assert code_hash(a) != code_hash(b)
    # b and c differ only in their names (the def line), so they differ too
    assert code_hash(b) != code_hash(c)
    assert flow.tasks["a"].code_key == code_hash(a)


def test_code_hash_sees_closure_values():
    def make(k):
        def f():
            return k

        return f

    assert code_hash(make(1)) != code_hash(make(2))
    assert code_hash(make(1)) == code_hash(make(1))


def test_with_options_validates():
    def f():
        return 1

    task = Task.from_function(f)
    assert task.with_options(retries=3).options.retries == 3
    with pytest.raises(nf.InvalidOptionError):
        task.with_options(retries="x")


def test_group_is_a_task_option_with_no_effect_on_the_code_key():
    def clean(x):
        return x

    plain = Task.from_function(clean)
    grouped = Task.from_function(clean, options={"group": "cleaning"})
    assert grouped.options.group == "cleaning" and plain.options.group is None
    assert grouped.code_key == plain.code_key
    assert grouped.with_options(group=None).options.group is None
    with pytest.raises(nf.InvalidOptionError, match="'group' must be a non-empty string"):
        plain.with_options(group="")


def test_flow_task_takes_group():
    flow = nf.Flow("g")

    @flow.task(group="cleaning")
    def clean():
        return 1

    @flow.task
    def use(clean):
        return clean

    assert flow.tasks["clean"].options.group == "cleaning"
    assert flow.tasks["use"].options.group is None
    assert flow.run().results["use"] == 1
