#!/usr/bin/env bash
# Set up a fresh machine and run the main example notebook as a batch job (papermill).
# Usage: bash scripts/demo.sh [-p NAME VALUE ...]
source "$(dirname "$0")/_venv.sh" batch
out="build/demo/01-quickstart.ipynb"
mkdir -p "$(dirname "$out")"
echo "==> running notebooks/01-quickstart.ipynb with papermill"
.venv/bin/python -m papermill --log-level WARNING notebooks/01-quickstart.ipynb "$out" "$@"
echo "==> the workflow's report:"
.venv/bin/python - "$out" <<'PY'
import json, sys
nb = json.load(open(sys.argv[1]))
for cell in nb["cells"]:
    if cell["cell_type"] == "code" and "for line in report" in "".join(cell["source"]):
        for output in cell.get("outputs", []):
            print("".join(output.get("text", "")), end="")
PY
echo "==> output notebook: $(pwd)/$out"
