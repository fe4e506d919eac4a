"""Every ```ipython block of docs/magics.md runs as a cell in an in-process IPython shell."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "magics.md"
BLOCK = re.compile(r"^```ipython\n(.*?)^```", re.S | re.M)


def test_magics_doc_cells_run_in_order(ip):
    cells = BLOCK.findall(DOC.read_text())
    assert len(cells) >= 5
    for source in cells:
        if source.strip() == "%load_ext nbflow":
            continue  # the fixture loaded it
        ip(source)
    assert ip.ns["squares"] == [0, 1, 4, 9, 16, 25]
