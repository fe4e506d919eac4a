#!/usr/bin/env bash
# Set up a fresh machine and run the main example notebook as a batch job (papermill).
# Usage: bash scripts/demo.sh [-p NAME VALUE ...] (any other nbflow run option too)
source "$(dirname "$0")/_venv.sh" batch
out="build/demo/01-quickstart.ipynb"
mkdir -p "$(dirname "$out")"
echo "==> nbflow run notebooks/01-quickstart.ipynb (papermill, this environment's kernel)"
.venv/bin/nbflow run notebooks/01-quickstart.ipynb -o "$out" "$@"
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
