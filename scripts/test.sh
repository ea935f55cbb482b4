#!/usr/bin/env bash
# Everything CI runs: unit, integration (PostgreSQL, Redis, the stand-in CRM over HTTP), DAG and
# end-to-end tests (real Airflow processes, Chromium). Extra arguments go to pytest (to both
# processes when the run is split, see below).
source "$(dirname "$0")/bootstrap.sh"

# System packages the e2e and compose tests need (Debian): installed when missing and we may.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (apt)"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Local services the tests use for real; start them if this machine has them but they are down.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && command -v pg_ctlcluster >/dev/null 2>&1; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi

# The end-to-end suite (real Airflow processes, Chromium) mostly waits on its deployment: run it
# beside the rest, in its own pytest process (own AIRFLOW_HOME, own databases, queue and Redis DB),
# so the whole run takes about as long as the longer half. The heaviest modules of the rest go to
# the e2e process, after it, so that the halves end together (2026-12-07, 2 cores: e2e 458 s, the
# rest 1,110 s, of which these four 338 s). A run that names tests (a path or a node id) or sets
# CONDUIT_TEST_SERIAL=1 is one plain pytest process.
names_tests=false
for arg in "$@"; do
  case "$arg" in -*) continue ;; esac
  [ -e "${arg%%::*}" ] && names_tests=true
done
if [ "$names_tests" = true ] || [ "${CONDUIT_TEST_SERIAL:-0}" = 1 ]; then
  exec pytest "$@"
fi

set +e  # bootstrap.sh set -e: both halves must finish and report
e2e_log="$(mktemp -t conduit-e2e-XXXXXX.log)"
# a background job of a script ignores SIGINT; `trap -` gives it back, so an interrupt (Ctrl-C, or
# the TERM below) still runs its teardown, which stops the Airflow processes it started
heavy=(tests/integration/test_order_batch.py tests/integration/test_demo_tryton.py
       tests/integration/test_bench_dag_run.py tests/integration/tryton/test_tryton_sync.py)
( trap - INT; exec pytest tests/e2e "${heavy[@]}" "$@" ) >"$e2e_log" 2>&1 &
e2e_pid=$!
trap 'wait "$e2e_pid"; exit 130' INT
trap 'kill -INT "$e2e_pid" 2>/dev/null; wait "$e2e_pid"; exit 143' TERM
pytest --ignore=tests/e2e "${heavy[@]/#/--ignore=}" "$@"
rest=$?
wait "$e2e_pid"
e2e=$?
echo
echo "========= the end-to-end suite and the heaviest modules (ran beside the rest; its output) ========="
cat "$e2e_log"
rm -f "$e2e_log"
echo "pytest exit codes: the rest $rest, e2e and the heaviest modules $e2e"
# 5 is "no tests collected": fine for one half (a -k filter may select only the other), not both
if [ "$rest" -eq 5 ] && [ "$e2e" -eq 5 ]; then exit 5; fi
[ "$rest" -eq 5 ] && rest=0
[ "$e2e" -eq 5 ] && e2e=0
[ "$rest" -ne 0 ] && exit "$rest"
exit "$e2e"
