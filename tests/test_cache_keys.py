"""Cache keys are the same in every process: set-valued parameters included (hash seed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from nbflow.cache_keys import canonical, hash_value

#: values whose plain pickle depends on the hash seed, one per kind of container
VALUES = """[
    {"a", "b", "c", "d", "e", "f", "g", "h"},
    frozenset({"x", "y", "z", "w", "v", "u"}),
    {"tags": {"red", "green", "blue", "cyan", "pink"}, "n": 3},
    [{"p", "q", "r", "s", "t"}, ({"k1", "k2", "k3", "k4"},)],
    {frozenset({"m", "n", "o", "p"}): "a frozenset as a key"},
    {("nested", frozenset({"i", "j", "k", "l", "m"})), "flat"},
]"""

SCRIPT = f"""
import hashlib, json, pickle
from nbflow.cache_keys import hash_value
values = {VALUES}
print(json.dumps({{
    "canonical": [hash_value(v) for v in values],
    "plain": [hashlib.blake2b(pickle.dumps(v, protocol=5)).hexdigest() for v in values],
}}))
"""


def _in_process(seed: int, *args: str, cwd: Path | None = None) -> str:
    env = dict(os.environ, PYTHONHASHSEED=str(seed))
    out = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_set_valued_parameters_hash_alike_under_different_hash_seeds():
    one, two = (json.loads(_in_process(seed, "-c", SCRIPT)) for seed in (1, 2))
    # the plain pickles differ (what made the disk cache miss every time) ...
    assert sum(a != b for a, b in zip(one["plain"], two["plain"])) >= 4
    # ... the keys do not
    assert one["canonical"] == two["canonical"]


FLOW = textwrap.dedent("""
    import pickle
    import sys
    import nbflow as nf
    flow = nf.Flow("sets", cache=nf.DiskStore(sys.argv[1]))

    @flow.task
    def count(tags: frozenset = frozenset()):
        return len(tags)

    tags = {"red", "green", "blue", "cyan", "pink", "gold"}
    run = flow.run(params={"tags": tags})
    flow.cache.flush()
    print(run.states["count"], run.results["count"], pickle.dumps(tags).hex())
""")


def test_a_set_parameter_hits_the_disk_cache_from_another_process(tmp_path):
    (tmp_path / "flow.py").write_text(FLOW)
    first = _in_process(11, "flow.py", "cache", cwd=tmp_path).split()
    second = _in_process(12, "flow.py", "cache", cwd=tmp_path).split()
    assert first[2] != second[2]  # the set iterates in another order in the second process
    assert first[:2] == ["succeeded", "6"] and second[:2] == ["cached", "6"]


def test_equal_values_equal_keys_and_order_kept_where_it_is_part_of_the_value():
    assert hash_value({3, 1, 2}) == hash_value({2, 3, 1}) == hash_value({1, 2, 3})
    assert hash_value({1, 2}) != hash_value(frozenset({1, 2})) != hash_value([1, 2])
    assert hash_value([{1}, {2}]) != hash_value([{2}, {1}])
    assert hash_value({"a": 1, "b": 2}) != hash_value({"b": 2, "a": 1})  # list(d) differs
    assert hash_value({frozenset({1}): 1, (1,): 2}) != hash_value({(1,): 1, frozenset({1}): 2})
    big = list(range(100_000))
    assert canonical(big) is big  # nothing to sort: not copied
    loop: list[object] = [{1}]
    loop.append(loop)
    assert hash_value(loop) == hash_value(loop)  # a list that contains itself still hashes
    assert hash_value(lambda x: x) != hash_value(lambda x: x + 1)
