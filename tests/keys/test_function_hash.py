"""A function's code key: its normalised AST, closure values and default values."""

from __future__ import annotations

import pytest

from nbflow.task import code_hash

BASE = '''
def clean(rows, limit=3):
    """Drop short rows."""
    out = [r for r in rows if len(r) > limit]
    return out
'''

SAME = {
    "comment": BASE.replace("    out =", "    # keep the long ones\n    out =") + "# the end\n",
    "formatting": BASE.replace("[r for r in rows if len(r) > limit]",
                               "[\n        r   for r in rows\n        if len( r ) > limit\n    ]"),
    "blank lines": "\n\n" + BASE.replace("    return out", "\n    return out"),
    "decorator": BASE.replace("def clean", "import functools\n@functools.lru_cache\ndef clean")
                     .replace("@functools.lru_cache\n", ""),
}
DIFFERENT = {
    "body": BASE.replace("> limit", ">= limit"),
    "docstring": BASE.replace("Drop short rows.", "Drop the short rows."),
    "default": BASE.replace("limit=3", "limit=4"),
    "name of a variable": BASE.replace("out", "kept"),
}


@pytest.mark.parametrize("edit", sorted(SAME))
def test_comment_and_formatting_edits_keep_the_key(load, edit):
    before = code_hash(load("mod_same", BASE).clean)
    assert code_hash(load("mod_same", SAME[edit]).clean) == before


@pytest.mark.parametrize("edit", sorted(DIFFERENT))
def test_real_edits_change_the_key(load, edit):
    before = code_hash(load("mod_diff", BASE).clean)
    assert code_hash(load("mod_diff", DIFFERENT[edit]).clean) != before


def test_closure_values_and_defaults_count():
    def make(k, d):
        def f(x=d):
            return k + x

        return f

    assert code_hash(make(1, 2)) == code_hash(make(1, 2))
    assert code_hash(make(1, 2)) != code_hash(make(5, 2))
    assert code_hash(make(1, 2)) != code_hash(make(1, 7))


def test_a_closure_over_a_function_covers_that_function(load):
    mod = load("mod_closure", "def inner():\n    return 1\n\ndef make(g):\n    def f():\n        return g()\n    return f\n")
    other = load("mod_closure2", "def inner():\n    return 2\n")
    assert code_hash(mod.make(mod.inner)) != code_hash(mod.make(other.inner))
