"""``python -m nbflow``: the ``nbflow`` command."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from nbflow.cli import main

    sys.exit(main())
