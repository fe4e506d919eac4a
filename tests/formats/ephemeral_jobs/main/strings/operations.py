"""Namespace ``main.strings.operations``: upper-case words, count letters, join words."""

from __future__ import annotations

import queue
from typing import Any

#: tests listen here: every dict combine_words returns is put on each of these queues
LISTENERS: list[queue.Queue[dict[str, Any]]] = []


async def capitalize_words(data: dict[str, Any]) -> dict[str, Any]:
    """The words of ``data["strings"]`` in upper case."""
    return {"strings": [word.upper() for word in data["strings"]]}


def char_count(data: dict[str, Any]) -> dict[str, Any]:
    """The length of each word of ``data["strings"]`` under ``lengths``."""
    return {"lengths": [len(word) for word in data["strings"]]}


async def combine_words(data: dict[str, Any], *, dict_keys: list[str],
                        final_key: str) -> dict[str, Any]:
    """The values of ``dict_keys`` joined into one string under ``final_key``."""
    out = {final_key: "".join(str(data[key]) for key in dict_keys)}
    for listener in LISTENERS:
        listener.put(out)
    return out
