#!/usr/bin/env bash
# The reliability soak (not CI): the crash matrix at random points and recoveries, random CRM fault
# storms, and PostgreSQL really restarted mid-load on a throwaway cluster, for --minutes N; prints
# the same tables as the CI run. See tests/reliability/README.md.
#   bash scripts/soak.sh [--minutes N] [--seed S] [--shared-pg] [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=4 seed="" shared=""
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --shared-pg) shared=1; shift ;;
    -h|--help) sed -n 2,5p "$0"; exit 0 ;;
    *) break ;;
  esac
done
seed="${seed:-$(( RANDOM * 32768 + RANDOM ))}"
echo "soak: ${minutes} minutes, seed ${seed}${shared:+, on the shared PostgreSQL}"
export CONDUIT_SOAK_MINUTES="$minutes" CONDUIT_SOAK_SEED="$seed" CONDUIT_SOAK_SHARED_PG="$shared"
# bounded: the soak's own time, plus setup and the last case
limit=$(( ${minutes%.*} * 60 + 600 ))
py=.venv/bin/python
[ -x "$py" ] || py=python
exec timeout -s KILL "$limit" "$py" -m pytest tests/reliability/soak.py -q -p no:cacheprovider \
  -o timeout="$limit" "$@"
