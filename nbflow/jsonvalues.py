"""Any value as valid JSON, for the files nbflow writes: event logs, run and sweep summaries.

``json.dumps`` writes ``NaN``, ``Infinity`` and ``-Infinity`` for non-finite
floats, which is not JSON: strict parsers (JavaScript's ``JSON.parse``, ``jq``,
most languages) refuse the whole file. :func:`jsonable` turns a value into one
that encodes as valid JSON:

- a non-finite float becomes the string ``"NaN"``, ``"Infinity"`` or
  ``"-Infinity"`` (``float()`` reads each back);
- numpy arrays and scalars, and pandas objects, become their ``tolist()`` /
  ``item()``; sets and tuples become lists; mapping keys become strings;
- anything else JSON cannot hold becomes its ``repr``.
"""

from __future__ import annotations

import json
import math
from typing import Any

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def jsonable(value: Any) -> Any:
    """``value`` with everything JSON cannot hold replaced, as the module docstring says."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else _NON_FINITE[value]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else _key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    for attr in ("tolist", "item"):  # numpy arrays and scalars, pandas objects
        method = getattr(value, attr, None)
        if callable(method):
            try:
                converted = method()
            except Exception:
                continue
            if converted is not value:
                return jsonable(converted)
    return repr(value)


def _key(key: Any) -> str:
    encoded = jsonable(key)
    return encoded if isinstance(encoded, str) else json.dumps(encoded)


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`jsonable` ``(value)``: always valid JSON."""
    try:
        data = jsonable(value)
    except RecursionError:  # a value that contains itself
        data = repr(value)
    return json.dumps(data, allow_nan=False, **kwargs)
