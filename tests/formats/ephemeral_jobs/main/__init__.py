"""The ``main`` namespace of the Ephemeral test jobs: a package beside the job maps."""

from __future__ import annotations

from typing import Any


async def example(data: dict[str, Any], example_property: str) -> dict[str, Any]:
    """Prefix the input string with ``We got:`` and the task's ``example_property``."""
    return {"input": f"We got: {example_property}{data['input']}"}


example.consumes = "string"  # type: ignore[attr-defined]
example.produces = "string"  # type: ignore[attr-defined]
