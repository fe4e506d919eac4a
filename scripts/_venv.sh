# Shared by scripts/demo.sh and scripts/test.sh: make .venv and install nbflow with EXTRAS.
# Usage: source scripts/_venv.sh EXTRAS
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "nbflow needs Python >= 3.10 (set PYTHON=/path/to/python3.x)" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$python" -m venv .venv
fi
# pip_install ARGS...: quiet, but show pip's whole log and stop when it fails
pip_install() {
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" > .venv/pip.log 2>&1 \
        || { cat .venv/pip.log >&2; echo "pip install $* failed" >&2; exit 1; }
}
echo "==> installing nbflow[$1] into .venv"
pip_install --upgrade pip
pip_install -e ".[$1]"
# An editable install leaves out the data files a wheel installs: the config that
# enables nbflow's Jupyter server extension (DAG pictures once a kernel is gone).
mkdir -p .venv/etc/jupyter/jupyter_server_config.d
cp jupyter-config/jupyter_server_config.d/nbflow.json .venv/etc/jupyter/jupyter_server_config.d/
