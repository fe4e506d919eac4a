"""Typed parameters: Annotated[..., Field(...)] on Python tasks, in a notebook's parameters
cell and as JSON Schema keywords in a spec, checked by pydantic wherever values come in."""

from __future__ import annotations

import textwrap
import warnings
from typing import Annotated

import jsonschema
import pytest
from pydantic import Field

import nbflow as nf
from nbflow.batch.params import (
    ParametersCell,
    check_value,
    parse_parameters,
    resolve,
    to_schema,
    to_yaml_form,
)
from nbflow.batch.spec_job import spec_parameters
from nbflow.errors import BatchInputError, InvalidParameterError, SpecError
from nbflow.service.workflow import of_flow
from nbflow.spec import load_spec

Days = Annotated[int, Field(ge=1, le=365, description="days of history")]


def _flow() -> nf.Flow:
    flow = nf.Flow("typed")

    @flow.task
    def history(days: Days = 30, label: Annotated[str, Field(pattern=r"^[a-z]+$")] = "x"):
        return [label] * days

    @flow.task
    def total(history: list[str]) -> int:
        return len(history)

    return flow


def test_a_python_flow_checks_and_coerces_its_typed_parameters():
    flow = _flow()
    assert flow.run(params={"days": "3"}).results["total"] == 3  # coerced by pydantic
    with pytest.raises(InvalidParameterError, match=(
            r"parameter 'days' = 0: Input should be greater than or equal to 1 \(ge=1\)")):
        flow.run(params={"days": 0})
    with pytest.raises(InvalidParameterError, match=r"'label' = 'X1'.*pattern"):
        flow.run(params={"label": "X1"})
    schema = of_flow(flow).schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["days"] == {"type": "integer", "minimum": 1, "maximum": 365,
                                            "description": "days of history", "default": 30}
    assert schema["properties"]["label"]["pattern"] == "^[a-z]+$"


def test_a_default_that_breaks_its_constraint_is_refused_at_declaration():
    flow = nf.Flow("bad")
    with pytest.raises(InvalidParameterError, match=r"'days' = 0: .*greater than or equal "
                       r"to 1 .*\(the default at .*broken\(\)\)"):
        @flow.task
        def broken(days: Days = 0):
            return days


class Window:
    """A type JSON Schema cannot describe."""


def test_a_type_json_schema_cannot_describe_warns_and_accepts_anything():
    flow = nf.Flow("opaque")

    @flow.task
    def use(window: Window | None = None):
        return window

    with pytest.warns(UserWarning, match="parameter 'window'.*cannot be described in JSON "
                      "Schema"):
        schema = of_flow(flow).schema()
    assert schema["properties"]["window"] == {"default": None}


CELL = textwrap.dedent('''\
    from typing import Annotated
    from pydantic import Field

    days: Annotated[int, Field(ge=1, description="days of history")] = 30
    mode: Literal["fast", "exact"] = "fast"  # how to fit
    ratio: float = 0.5
    ''')


def test_a_notebook_parameters_cell_with_annotations():
    cell = ParametersCell("nb.ipynb", 1, parse_parameters(CELL, "nb.ipynb", 1))
    schema = to_schema(cell)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["days"] == {"type": "integer", "minimum": 1,
                                            "description": "days of history", "default": 30}
    assert schema["properties"]["mode"] == {"enum": ["fast", "exact"], "type": "string",
                                            "description": "how to fit", "default": "fast"}
    assert resolve(cell, "nb.ipynb", [("days", "7")]) == {"days": 7}
    with pytest.raises(BatchInputError, match=r"-p days '0': parameter 'days' = 0: Input "
                       r"should be greater than or equal to 1 \(ge=1\)"):
        resolve(cell, "nb.ipynb", [("days", "0")])
    with pytest.raises(BatchInputError, match=r"grid.yaml job 2: mode: parameter 'mode' = "
                       r"'slow': Input should be 'fast' or 'exact'"):
        resolve(cell, "nb.ipynb", values={"mode": "slow"}, where="grid.yaml job 2")


def test_a_notebook_default_breaking_its_annotation_names_the_cell_and_line():
    with pytest.raises(BatchInputError, match=r"nb.ipynb cell 3, line 1: parameter 'days' = "
                       r"0: .*greater than or equal to 1"):
        parse_parameters("days: Annotated[int, Field(ge=1)] = 0\n", "nb.ipynb", 3)


def test_an_annotation_that_is_code_is_not_run():
    with pytest.warns(UserWarning, match="cannot be read without running the notebook"):
        params = parse_parameters("n: open('/etc/passwd') = 3\n", "nb.ipynb", 1)
    assert params["n"].typed is None and params["n"].type == "integer"


SPEC = textwrap.dedent('''\
    nbflow: 1
    name: typed-spec
    parameters:
      days: {type: integer, default: 30, minimum: 1, maximum: 365, description: days back}
      city: {type: string, pattern: "^[A-Z][a-z]+$"}
      mode: {type: string, enum: [fast, exact], default: fast}
    tasks:
      span:
        use: typed_helpers:span
        args: {days: {$param: days}, city: {$param: city}, mode: {$param: mode}}
    ''')


def _helpers(tmp_path):
    (tmp_path / "typed_helpers.py").write_text(
        "def span(days: int, city: str, mode: str) -> str:\n"
        "    return f'{city}:{days}:{mode}'\n")


def test_a_spec_parameters_block_with_constraints(tmp_path):
    _helpers(tmp_path)
    path = tmp_path / "typed.yaml"
    path.write_text(SPEC)
    cell = spec_parameters(load_spec(path))
    schema = to_schema(cell)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["city"]
    assert schema["properties"]["days"] == {"type": "integer", "minimum": 1, "maximum": 365,
                                            "description": "days back", "default": 30}
    assert schema["properties"]["city"] == {"type": "string", "pattern": "^[A-Z][a-z]+$"}
    assert "x-nbflow-expression" not in str(schema)
    form = to_yaml_form(cell, "spec")
    assert "city:   # required: it has no default" in form
    assert "notebook computes" not in form
    with pytest.raises(BatchInputError, match=r"city: parameter 'city' = 'oslo': String "
                       "should match pattern"):
        check_value(cell.parameters["city"], "oslo", "city")
    flow = nf.Flow.from_spec(path)
    assert flow.run(params={"days": 3, "city": "Oslo"}).results["span"] == "Oslo:3:fast"
    with pytest.raises(InvalidParameterError, match="'days' = 400"):
        flow.run(params={"days": 400, "city": "Oslo"})


def test_a_spec_default_breaking_its_constraint_points_at_the_key(tmp_path):
    _helpers(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(SPEC.replace("default: 30", "default: 0"))
    with pytest.raises(SpecError, match=r"bad.yaml:4 at parameters.days.default: Input should "
                       r"be greater than or equal to 1 \(ge=1\): the default 0 breaks it"):
        nf.Flow.from_spec(path)


def test_plain_hints_are_types_too():
    flow = nf.Flow("hinted")

    @flow.task
    def scaled(factor: float = 1.0) -> float:
        return factor * 2

    assert flow.run(params={"factor": 2}).results["scaled"] == 4.0
    with pytest.raises(InvalidParameterError, match="'factor' = 'lots': Input should be a "
                       "valid number"):
        flow.run(params={"factor": "lots"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert of_flow(flow).schema()["properties"]["factor"] == {"type": "number",
                                                                  "default": 1.0}
