"""The entry-point registry, against a test package installed into the test environment."""

from __future__ import annotations

import pytest

import nbflow as nf
from nbflow.registry import Registry


@pytest.fixture
def reg():
    return Registry()


def test_tasks_of_installed_packages_are_found(reg):
    names = list(reg)
    for name in ("testtasks.numbers", "testtasks.square", "testtasks.total", "testtasks.fail"):
        assert name in names
    assert "testtasks._private" not in names
    task = reg.get("testtasks.total")
    assert task.package == "nbflow-testtasks"
    assert task.module == "nbflow_testtasks.tasks"
    assert task.doc == "The sum of the values, plus an offset."
    assert [p.name for p in task.parameters] == ["values", "offset"]


def test_a_broken_package_is_reported_and_does_not_break_the_others(reg):
    errors = reg.errors
    assert "broken" in errors
    assert "nbflow_testtasks_missing_dependency" in errors["broken"]
    assert "nbflow-testtasks" in errors["broken"]
    assert "testtasks.square" in reg


def test_unknown_name_suggests_and_explains_broken_namespaces(reg):
    with pytest.raises(nf.RegistryError, match=r"Did you mean 'testtasks\.square'\?"):
        reg.get("testtasks.sqare")
    with pytest.raises(nf.RegistryError, match="failed to import"):
        reg.get("broken.anything")


def test_discovery_is_lazy_cached_and_resettable(reg):
    assert repr(reg) == "Registry(not yet discovered)"
    assert len(reg) > 0
    first = reg.get("testtasks.square")
    assert reg.get("testtasks.square") is first
    reg.reset()
    assert repr(reg) == "Registry(not yet discovered)"
    assert reg.get("testtasks.square").fn is first.fn


def test_the_public_registry_is_an_instance():
    assert isinstance(nf.registry, Registry)
    assert "testtasks.numbers" in nf.registry
