"""Widget test helpers: small flows, and SVG parsing through the DOM's view of titles."""

from __future__ import annotations

import random
import threading
import xml.etree.ElementTree as ET

import pytest

import nbflow as nf

SVG = "{http://www.w3.org/2000/svg}"


def node_states(svg: str) -> dict[str, str]:
    """``{title text: data-state}`` of every node group (titles decoded, as the DOM does)."""
    root = ET.fromstring(svg)
    out = {}
    for g in root.iter(f"{SVG}g"):
        if "node" in (g.get("class") or "").split():
            out[g.find(f"{SVG}title").text] = g.get("data-state", "")
    return out


def build_demo() -> nf.Flow:
    """Six tasks: a name with '-', a mapped task, a failure and what it makes skip."""
    flow = nf.Flow("demo")

    @flow.task(name="load_data")
    def load_data():
        return "raw"

    @flow.task(after=["load_data"])
    def numbers():
        return [1, 2, 3]

    @flow.task(map="numbers")
    def square(numbers):
        print(f"squaring {numbers}")
        return numbers * numbers

    @flow.task
    def total(square):
        return sum(square)

    @flow.task
    def fails(total):
        raise ValueError(f"total {total} is no good")

    @flow.task
    def report(fails):
        return fails

    return flow


def gated_flow(name: str) -> tuple[nf.Flow, threading.Event]:
    """``first`` -> ``second``, which runs until the event returned is set (30 s at most)."""
    flow = nf.Flow(name)
    gate = threading.Event()

    @flow.task
    def first() -> int:
        return 1

    @flow.task
    def second(first: int) -> int:
        gate.wait(30)
        return first

    return flow, gate


def random_structure(n: int, seed: int = 1):
    """A DAG of ``n`` nodes, about two parents each among the 50 before it."""
    from nbflow.widget.layout import Structure

    rnd = random.Random(seed)
    edges = {(rnd.randrange(max(0, i - 50), i), i) for i in range(1, n) for _ in range(2)}
    return Structure("random", tuple(f"task_{i}" for i in range(n)), tuple(sorted(edges)),
                     frozenset())


@pytest.fixture
def demo_flow() -> nf.Flow:
    return build_demo()
