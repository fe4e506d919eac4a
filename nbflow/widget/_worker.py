"""The layout process: reads DOT sources, answers with SVG or PNG (``python -m nbflow.widget._worker``).

Protocol, one JSON object per line: ``{"id": 1, "source": "digraph {...}", "prog": "dot",
"format": "svg"}`` in on stdin (or ``"structure"``: a widget's structure,
:meth:`nbflow.widget.layout.Structure.to_wire`, whose DOT source is built here, not in
the kernel's process); ``{"id": 1, "svg": "..."}`` (or ``"png"``: base64, as
Jupyter stores images) or ``{"id": 1, "error": "..."}`` out on stdout.
Graphviz's own messages (the bundled fontconfig's "reset-dirs" warning on the first
render, "graph has 2000 nodes..." on large ones) go to fd 2, which is pointed away
from the parent's stderr (a kernel would show it as red cell output) while drawing.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
from typing import Any


#: The formats a request may ask for.
FORMATS = ("svg", "png")


def _draw(source: str, prog: str, fmt: str = "svg") -> tuple[str, str]:
    """Lay out and render; returns (svg text or base64 png, what Graphviz wrote to stderr)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    import pygraphviz

    saved = os.dup(2)
    with tempfile.TemporaryFile() as err:
        os.dup2(err.fileno(), 2)
        try:
            data = pygraphviz.AGraph(string=source).draw(format=fmt, prog=prog)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        noise = err.read().decode(errors="replace")
    assert isinstance(data, bytes)
    text = base64.b64encode(data).decode("ascii") if fmt == "png" else data.decode()
    return text, noise


def _source(request: dict[str, Any]) -> str:
    """The DOT source of a request: given, or built from the structure it carries."""
    if "structure" in request:
        from nbflow.widget.layout import Structure, to_graphviz

        return str(to_graphviz(Structure.from_wire(request["structure"])).source)
    return str(request["source"])


def main() -> int:
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sys.stdout = sys.stderr  # nothing but the protocol may reach the pipe
    # Warm-up: fontconfig's first-render warning goes nowhere (and the png renderer's
    # fonts are loaded before a kernel waits on the first static image).
    _draw("digraph { a -> b }", "dot")
    _draw("digraph { a -> b }", "dot", "png")
    _source({"structure": {"flow": "warm-up", "names": ["a"], "edges": [], "mapped": [],
                           "groups": [], "folded": [], "commands": []}})  # imports nbflow
    out.write(json.dumps({"ready": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        reply: dict[str, Any] = {"id": request["id"]}
        try:
            fmt = str(request.get("format", "svg"))
            reply[fmt], _ = _draw(_source(request), request.get("prog", "dot"), fmt)
        except Exception as exc:
            reply["error"] = f"{type(exc).__name__}: {exc}"
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
