#!/usr/bin/env bash
# Make (once) the virtual environment that checks nbflow's Airflow target with Airflow itself,
# and print its path. It is separate from .venv so Airflow never pins nbflow's dependencies.
#   ${NBFLOW_AIRFLOW_VENV:-${XDG_CACHE_HOME:-~/.cache}/nbflow/airflow-venv-<version>}
# holds apache-airflow and the docker provider (DockerOperator, imported by DAGs with a container
# command; no Docker daemon is needed to import them), both pinned, and not nbflow: a generated
# DAG needs only Airflow and the workflow's own modules. A venv whose recorded requirements match
# is reused as it is (milliseconds); a fresh one takes about a minute.
# The tests (tests/convert/test_airflow.py) call this script.
# Usage: bash scripts/airflow-venv.sh [--rebuild]
set -euo pipefail
AIRFLOW_VERSION=3.3.2
REQUIREMENTS="apache-airflow==$AIRFLOW_VERSION apache-airflow-providers-docker==4.6.1"
venv="${NBFLOW_AIRFLOW_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/nbflow/airflow-venv-$AIRFLOW_VERSION}"
python="${PYTHON:-python3}"

if [ "${1:-}" = "--rebuild" ]; then
    rm -rf "$venv"
elif [ -n "${1:-}" ]; then
    echo "airflow-venv.sh: unknown argument $1 (usage: airflow-venv.sh [--rebuild])" >&2
    exit 2
fi
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/nbflow-requirements" 2>/dev/null)" = "$REQUIREMENTS" ]; then
    echo "$venv"
    exit 0
fi
echo "==> making the Airflow venv $venv (about a minute)" >&2
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv" || { echo "airflow-venv.sh: $python -m venv $venv failed" >&2; exit 1; }
# shellcheck disable=SC2086  # the requirements are separate words
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $REQUIREMENTS \
        > "$venv/pip.log" 2>&1; then
    cat "$venv/pip.log" >&2
    echo "airflow-venv.sh: pip install $REQUIREMENTS failed" >&2
    rm -rf "$venv"
    exit 1
fi
echo "$REQUIREMENTS" > "$venv/nbflow-requirements"  # written last: a venv without it is incomplete
echo "$venv"
