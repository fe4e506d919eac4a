"""Small tasks for the registry and spec tests."""

from __future__ import annotations


def numbers(n: int = 3) -> list[int]:
    """The numbers 0 .. n-1."""
    return list(range(n))


def square(x: int) -> int:
    """x squared."""
    return x * x


def total(values: list[int], offset: int = 0) -> int:
    """The sum of the values, plus an offset."""
    return sum(values) + offset


def is_big(value: int) -> bool:
    """True when the value is over 10 (a run_if predicate)."""
    return value > 10


def fail(message: str) -> None:
    """Always raises ValueError(message)."""
    raise ValueError(message)


def _private() -> None:
    """Not a task: its name starts with an underscore."""
