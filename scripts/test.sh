#!/usr/bin/env bash
# Set up a fresh machine and run every test: unit and real-kernel tests, then the example
# notebooks under nbval. Usage: bash scripts/test.sh [extra pytest args]
source "$(dirname "$0")/_venv.sh" test
echo "==> installing the extension package and the registry test package"
pip_install -e extensions/nbflow-xarray -e tests/spec/pkgs/nbflow-testtasks
if [ ! -x /usr/bin/chromium ]; then
    # The browser test drives Debian's chromium (never a browser downloaded by playwright).
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing chromium (apt) for the browser test"
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else
        echo "==> /usr/bin/chromium is missing and this is not root: the browser test will be skipped" >&2
    fi
fi
# Podman and the container tests' two local images (no registry): a failure is an error on CI
bash scripts/containers.sh ${CI:+--require}
# Airflow 3 in a venv of its own (cached), which checks the Airflow target with Airflow itself
echo "==> the Airflow venv"
bash scripts/airflow-venv.sh >/dev/null
export PYTHONDONTWRITEBYTECODE=1
echo "==> ruff, mypy"
.venv/bin/ruff check nbflow tests benchmarks extensions
.venv/bin/mypy
echo "==> pytest tests/"
.venv/bin/python -m pytest -p no:cacheprovider tests "$@"
echo "==> extensions/nbflow-xarray tests"
(cd extensions/nbflow-xarray && ../../.venv/bin/python -m pytest -p no:cacheprovider tests)
echo "==> nbval notebooks/"
.venv/bin/python -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env notebooks
