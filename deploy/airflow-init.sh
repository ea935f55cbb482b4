#!/usr/bin/env bash
# One-shot initialisation of a Conduit deployment; the `airflow-init` service of docker-compose.yaml
# runs it, and so does the end-to-end test harness (tests/e2e/harness.py) on a bare machine.
#
#  1. creates the folders Airflow and Conduit write to (logs, staging);
#  2. writes the SimpleAuthManager password file for the admin user
#     (_AIRFLOW_WWW_USER_USERNAME / _AIRFLOW_WWW_USER_PASSWORD), so the password is known instead of
#     generated at random by the API server;
#  3. migrates the metadata database (`airflow db migrate`);
#  4. when run as root with AIRFLOW_UID set (compose), hands the shared folders to that user.
set -euo pipefail

AIRFLOW_HOME="${AIRFLOW_HOME:-/opt/airflow}"
STAGING_DIR="${CONDUIT_STAGING_DIR:-${AIRFLOW_HOME}/staging}"
USERNAME="${_AIRFLOW_WWW_USER_USERNAME:-airflow}"
PASSWORD="${_AIRFLOW_WWW_USER_PASSWORD:-airflow}"
PASSWORDS_FILE="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-${AIRFLOW_HOME}/simple_auth_manager_passwords.json}"

echo "Conduit init: AIRFLOW_HOME=${AIRFLOW_HOME} staging=${STAGING_DIR}"
mkdir -p "${AIRFLOW_HOME}/logs" "${STAGING_DIR}" "$(dirname "${PASSWORDS_FILE}")"

# Quote-safe JSON via Python (always present where Airflow is).
USERNAME="${USERNAME}" PASSWORD="${PASSWORD}" PASSWORDS_FILE="${PASSWORDS_FILE}" python - <<'PY'
import json, os
path = os.environ["PASSWORDS_FILE"]
try:
    with open(path) as fh:
        users = json.load(fh)
except (FileNotFoundError, ValueError):
    users = {}
users[os.environ["USERNAME"]] = os.environ["PASSWORD"]
with open(path, "w") as fh:
    json.dump(users, fh)
os.chmod(path, 0o660)
print(f"Conduit init: password file {path} holds user(s) {sorted(users)}")
PY

echo "Conduit init: migrating the metadata database"
airflow db migrate

if [[ "$(id -u)" == "0" && -n "${AIRFLOW_UID:-}" ]]; then
  echo "Conduit init: handing ${AIRFLOW_HOME}/{logs,config,staging} to ${AIRFLOW_UID}:0"
  chown -R "${AIRFLOW_UID}:0" "${AIRFLOW_HOME}/logs" "${STAGING_DIR}" "$(dirname "${PASSWORDS_FILE}")"
fi
echo "Conduit init: done"
