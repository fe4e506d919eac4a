"""Namespace ``main.parsing.split``: one dict per item of a list (a vector return)."""

from __future__ import annotations

import threading
from typing import Any

#: tests gate a season here: ``GATES["spring"]`` holds split_list for that season
#: until the test sets it (used only when the test installs a gate)
GATES: dict[str, threading.Event] = {}


def split_list(data: dict[str, Any], *, list_key: str, key_name: str) -> list[dict[str, Any]]:
    """One dict per item of ``data[list_key]``: the item under ``key_name``, and the
    other keys of ``data`` copied."""
    rest = {k: v for k, v in data.items() if k != list_key}
    gate = GATES.get(str(data.get("season")))
    if gate is not None and list_key != "seasons":
        gate.wait(60)
    return [{key_name: item, **rest} for item in data[list_key]]


split_list.consumes = ("list", "map", "split-map")  # type: ignore[attr-defined]
split_list.produces = "split-map"  # type: ignore[attr-defined]
