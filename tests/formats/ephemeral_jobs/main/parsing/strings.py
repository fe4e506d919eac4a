"""Namespace ``main.parsing.strings``: split a string, filter words by length."""

from __future__ import annotations

from typing import Any


async def split_string(data: dict[str, Any]) -> dict[str, Any]:
    """The words of ``data["input"]`` under ``strings``."""
    return {"strings": data["input"].split()}


def filter_string_length(data: dict[str, Any], *, word_length: int,
                         comparison: str = "none") -> dict[str, Any]:
    """Keep the words shorter (``less``) or longer (``greater``) than ``word_length``."""
    keep = {
        "less": lambda word: len(word) < word_length,
        "greater": lambda word: len(word) > word_length,
    }.get(comparison, lambda word: True)
    return {"strings": [word for word in data["strings"] if keep(word)]}
