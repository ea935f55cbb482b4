"""One source of truth for the deployment topology.

``docker-compose.yaml`` (checked by ``tests/unit/test_compose.py``) and the process harness in
``tests/e2e/harness.py`` both follow this module: the same Airflow components with the same CLI
commands, the same executor and auth manager, the same environment variable names, the same mounts.
A component or variable added to one of them and not the other fails the compose test.

This module must stay import-light (no Airflow import): the unit test reads it.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
INIT_SCRIPT = REPO / "deploy" / "airflow-init.sh"

AIRFLOW_VERSION = "3.3.2"
PYTHON_VERSION = "3.11"
BASE_IMAGE = f"apache/airflow:{AIRFLOW_VERSION}-python{PYTHON_VERSION}"

EXECUTOR = "CeleryExecutor"
AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"

# Long-running Airflow components: compose service name -> `airflow ...` sub-command.
AIRFLOW_COMPONENTS: dict[str, tuple[str, ...]] = {
    "airflow-apiserver": ("api-server",),
    "airflow-scheduler": ("scheduler",),
    "airflow-dag-processor": ("dag-processor",),
    "airflow-triggerer": ("triggerer",),
    "airflow-worker": ("celery", "worker"),
}
# One-shot initialisation (db migrate, admin password file, directories): runs deploy/airflow-init.sh.
INIT_SERVICE = "airflow-init"

# Backing services. In compose they are containers; the harness uses the loopback servers.
METADATA_DB_SERVICE = "postgres"
BROKER_SERVICE = "redis"
ERP_DB_SERVICE = "erp-db"
STANDIN_SERVICE = "crm-standin"
STANDIN_COMMAND = "conduit-crm-standin"
SUPPORT_SERVICES = (METADATA_DB_SERVICE, BROKER_SERVICE, ERP_DB_SERVICE, STANDIN_SERVICE)

# Container paths (the official image's AIRFLOW_HOME is /opt/airflow).
AIRFLOW_HOME_IN_IMAGE = "/opt/airflow"
MOUNTS: dict[str, str] = {  # repository folder -> container path
    "dags": "/opt/airflow/dags",
    "plugins": "/opt/airflow/plugins",
    "include": "/opt/airflow/include",
    "logs": "/opt/airflow/logs",
    "config": "/opt/airflow/config",
}
STAGING_VOLUME = "conduit-staging"
STAGING_DIR_IN_IMAGE = "/opt/airflow/staging"

# Environment every Airflow component gets (compose: x-airflow-common.environment).
AIRFLOW_ENV: tuple[str, ...] = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK",
    "AIRFLOW__OPENLINEAGE__NAMESPACE",
    "AIRFLOW__OPENLINEAGE__TRANSPORT",
)
CONNECTION_ENV: tuple[str, ...] = ("AIRFLOW_CONN_HUBSPOT_DEFAULT", "AIRFLOW_CONN_ERP_DEFAULT")
CONDUIT_ENV: tuple[str, ...] = (
    "CONDUIT_INCLUDE_DIR",
    "CONDUIT_STAGING_DIR",
    "CONDUIT_REDIS_URL",
    "CONDUIT_HUBSPOT_WEBHOOK_SECRET",
)
REQUIRED_ENV: tuple[str, ...] = AIRFLOW_ENV + CONNECTION_ENV + CONDUIT_ENV

# Values that must be identical in compose and in the harness.
FIXED_ENV: dict[str, str] = {
    "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
    "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGER,
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
    "AIRFLOW__OPENLINEAGE__NAMESPACE": "conduit",
}

# Connections: conn_type of each (JSON form in the AIRFLOW_CONN_* variables).
CONNECTION_TYPES = {"AIRFLOW_CONN_HUBSPOT_DEFAULT": "hubspot", "AIRFLOW_CONN_ERP_DEFAULT": "postgres"}
HUBSPOT_API_VERSION = "2026-09"

SYNC_DAG_ID = "crm_to_erp_customer_sync"
ERP_TABLE = "erp_customers"
