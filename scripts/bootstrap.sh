# Sourced by demo.sh and test.sh: a fresh machine with Python 3.11 gets uv and the locked environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export UV_PYTHON_DOWNLOADS=never   # use the machine's Python 3.11; never fetch an interpreter
if ! command -v uv >/dev/null 2>&1; then
  python3.11 -m pip install --quiet "uv==0.13.8" 2>/dev/null || python3 -m pip install --quiet "uv==0.13.8"
fi
# Bytecode now, not at every import: this machine (and many CI images) set PYTHONDONTWRITEBYTECODE,
# so without it every Airflow task process would compile Airflow from source (~10 s vs ~3 s here).
uv sync --frozen --python 3.11 --quiet --compile-bytecode
.venv/bin/python -m compileall -q plugins >/dev/null  # the editable package; stale .pyc are ignored
export PATH="$PWD/.venv/bin:$PATH"
