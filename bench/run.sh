#!/usr/bin/env bash
# The benchmark, in one command: Conduit vs dlt vs naive pandas, stand-in CRM -> PostgreSQL.
#   bash bench/run.sh [--sizes 100000,1000000] [--only conduit,dlt,pandas] [--pandas-max N] ...
# (bash bench/run.sh --help lists every option). Needs PostgreSQL (BENCH_PG_DSN or --dsn; default
# host=127.0.0.1 port=5432 user=postgres dbname=test) and the project venv (.venv, from uv.lock).
# dlt lives in its own venv, bench/.venv-dlt, created here on first use from bench/requirements-dlt.txt.
#   bash bench/run.sh --dag [--contacts 100000] [--per-task]: the flagship DAG as users run it
# (`airflow dags test`, embedded defaults; bench/dag_run.py --help), a full and a no-change run.
#   bash bench/run.sh --real-limits [--sizes 100000] [--conn-extra JSON] [--conduit-via dag|stack|script]
# [--no-limits]: Conduit (the DAG; stack: on a scheduler + Celery worker) and dlt against the stand-in
# with HubSpot's Professional limits and 150 ms latency, or without limits (bench/real_limits.py --help).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[[ -x $PY ]] || { echo "no .venv: run 'uv sync' first" >&2; exit 2; }
if [[ ${1:-} == --dag ]]; then
  shift
  "$PY" -m compileall -q -j 0 .venv/lib/python3.11/site-packages plugins >/dev/null
  exec "$PY" bench/dag_run.py "$@"
fi
script=bench/run.py
if [[ ${1:-} == --real-limits ]]; then  # HubSpot's limits and latency enforced: bench/real_limits.py
  shift
  script=bench/real_limits.py
fi
needs_dlt=1
for ((i = 1; i <= $#; i++)); do
  if [[ ${!i} == --only ]]; then j=$((i + 1)); [[ ${!j:-} == *dlt* ]] || needs_dlt=0; fi
  if [[ ${!i} == --only=* ]]; then [[ ${!i} == *dlt* ]] || needs_dlt=0; fi
done
if [[ $needs_dlt == 1 ]] && ! bench/.venv-dlt/bin/python -c "import dlt, psycopg2" 2>/dev/null; then
  echo "creating bench/.venv-dlt (dlt, pinned in bench/requirements-dlt.txt)" >&2
  uv venv --quiet --allow-existing bench/.venv-dlt --python 3.11
  uv pip install --quiet --python bench/.venv-dlt/bin/python -r bench/requirements-dlt.txt
fi
# Every contender runs from compiled bytecode (as installed packages do), so nobody's wall time
# includes compiling its libraries: with PYTHONDONTWRITEBYTECODE set that would happen every run.
"$PY" -m compileall -q -j 0 .venv/lib/python3.11/site-packages plugins >/dev/null
if [[ -x bench/.venv-dlt/bin/python ]]; then
  bench/.venv-dlt/bin/python -m compileall -q -j 0 bench/.venv-dlt/lib/python3.11/site-packages >/dev/null
fi
exec "$PY" "$script" "$@"
