"""Parameters cells -> JSON Schema / YAML form / checked values; grid files. No kernels."""

from __future__ import annotations

import re

import jsonschema
import pytest

from nbflow.batch import params as P
from nbflow.batch.sweep import load_grid
from nbflow.errors import BatchInputError

from .conftest import EXAMPLE

SOURCE = '''import os
# how many samples
n = 5
rate: float = 1  # annotated: a number even though 1 is an int
name = "x"
flags = [True, False]
opts = {"a": 1}
nothing = None
home = os.environ.get("HOME")  # computed by the notebook
a, b = 1, 2
'''


def cell() -> P.ParametersCell:
    return P.ParametersCell("nb.ipynb", 1, P.parse_parameters(SOURCE))


def test_types_defaults_and_help_come_from_the_source():
    ps = cell().parameters
    assert list(ps) == ["n", "rate", "name", "flags", "opts", "nothing", "home"]
    assert (ps["n"].type, ps["n"].default, ps["n"].help) == ("integer", 5, "how many samples")
    assert ps["rate"].type == "number" and ps["rate"].help.startswith("annotated")
    assert ps["flags"].type == "array" and ps["opts"].type == "object"
    assert ps["nothing"].type is None and ps["nothing"].has_default
    assert not ps["home"].has_default and ps["home"].source == "os.environ.get('HOME')"


def test_the_schema_is_valid_and_accepts_the_defaults_only_with_known_names():
    schema = P.to_schema(cell())
    jsonschema.Draft202012Validator.check_schema(schema)
    defaults = {n: p.default for n, p in cell().parameters.items() if p.has_default}
    jsonschema.validate(defaults, schema)
    assert schema["properties"]["flags"]["items"] == {"type": "boolean"}
    assert schema["properties"]["home"]["x-nbflow-expression"] == "os.environ.get('HOME')"
    for bad in ({"n": "five"}, {"rate": "x"}, {"nn": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_the_yaml_form_reads_back_as_the_defaults(tmp_path):
    form = tmp_path / "form.yaml"
    form.write_text(P.to_yaml_form(cell()))
    values = P.resolve(cell(), "nb.ipynb", files=[form])
    assert values == {"n": 5, "rate": 1.0, "name": "x", "flags": [True, False],
                      "opts": {"a": 1}, "nothing": None}
    assert "# home: ...   (the notebook computes it" in form.read_text()


@pytest.mark.parametrize(("name", "text", "value"), [
    ("n", "7", 7), ("rate", "2", 2.0), ("name", "7", "7"), ("flags", "[1, 2]", [1, 2]),
    ("opts", "{b: 2}", {"b": 2}), ("nothing", "3.5", 3.5), ("nothing", "hi", "hi"),
])
def test_p_values_parse_to_the_parameter_type(name, text, value):
    assert P.resolve(cell(), "nb.ipynb", [(name, text)]) == {name: value}
    assert type(P.resolve(cell(), "nb.ipynb", [(name, text)])[name]) is type(value)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("n", "five", "parameter 'n' is an integer (default 5 in the parameters cell), and 'five' is not an integer"),
    ("n", "1.5", "is not an integer"),
    ("rate", "fast", "is not a number"),
    ("flags", "{a: 1}", "is not an array"),
    ("nn", "1", "nb.ipynb has no parameter 'nn'. Did you mean 'n'?"),
])
def test_bad_p_values_are_one_clear_error(name, text, message):
    with pytest.raises(BatchInputError, match=re.escape(message)):
        P.resolve(cell(), "nb.ipynb", [(name, text)])


def test_file_values_are_checked_against_the_types(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("n: 1.5\n")
    with pytest.raises(BatchInputError, match=r"parameter 'n' is an integer .* and 1\.5 is a number"):
        P.resolve(cell(), "nb.ipynb", files=[f])
    f.write_text("- 1\n")
    with pytest.raises(BatchInputError, match="must hold a mapping"):
        P.resolve(cell(), "nb.ipynb", files=[f])


def test_no_parameters_cell():
    with pytest.raises(BatchInputError, match="has no cell tagged 'parameters'"):
        P.resolve(None, "x.ipynb", [("n", "1")])
    assert P.resolve(None, "x.ipynb") == {}


def test_the_example_notebook_declares_its_parameters():
    nb = P.read_notebook(EXAMPLE)
    c = P.parameters_cell(nb, str(EXAMPLE))
    assert c is not None
    assert {n: p.type for n, p in c.parameters.items()} == {
        "seed": "integer", "n": "integer", "noise": "number", "holdout": "number",
        "min_r2": "number"}


def test_grid_product_list_and_shared_values(tmp_path):
    g = tmp_path / "g.yaml"
    g.write_text("grid:\n  a: [1, 2]\n  b: [x, y, z]\nparams:\n  c: 0\n")
    sets = load_grid(g)
    assert len(sets) == 6 and sets[0] == {"c": 0, "a": 1, "b": "x"} and sets[-1]["b"] == "z"
    g.write_text('{"jobs": [{"a": 1}, {"a": 5, "c": 2}]}')
    assert load_grid(g) == [{"a": 1}, {"a": 5, "c": 2}]


@pytest.mark.parametrize(("text", "message"), [
    ("grid: [1, 2]", "must be a non-empty mapping"),
    ("grid:\n  a: 1", "grid.a must be a non-empty list"),
    ("jobs: [1]", r"jobs\[0\] must be a mapping"),
    ("a: [1]", "must be a mapping with a 'grid:'"),
    ("grid: {a: [1]}\njobs: [{a: 1}]", "not both"),
    ("grid: {a: [1}", "is not valid YAML/JSON"),
])
def test_bad_grid_files(tmp_path, text, message):
    g = tmp_path / "g.yaml"
    g.write_text(text)
    with pytest.raises(BatchInputError, match=message):
        load_grid(g)
    with pytest.raises(BatchInputError, match="cannot read grid file"):
        load_grid(tmp_path / "missing.yaml")
