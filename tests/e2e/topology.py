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
# The stand-in order services (inventory, payment, fraud, shipping) the order_fulfilment saga calls.
# The command is the console script of ``conduit.orders_standin.server:main`` (pyproject.toml); the
# harness runs that module with ``python -m`` when an older editable install lacks the script.
ORDER_SERVICES_SERVICE = "order-services"
ORDER_SERVICES_COMMAND = "conduit-order-services"
ORDER_SERVICES_MODULE = "conduit.orders_standin.server"
ORDER_SERVICES_PORT = 8710
SUPPORT_SERVICES = (METADATA_DB_SERVICE, BROKER_SERVICE, ERP_DB_SERVICE, STANDIN_SERVICE, ORDER_SERVICES_SERVICE)

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
# The order services' connections (one per service, all on the order-services stand-in) and the
# saga log's (the ERP database: its tables are conduit_saga, conduit_saga_step, conduit_saga_event).
ORDER_SERVICE_CONNECTIONS: dict[str, str] = {  # variable -> the service (its path prefix on the stand-in)
    "AIRFLOW_CONN_INVENTORY_DEFAULT": "inventory",
    "AIRFLOW_CONN_PAYMENT_DEFAULT": "payment",
    "AIRFLOW_CONN_FRAUD_DEFAULT": "fraud",
    "AIRFLOW_CONN_SHIPPING_DEFAULT": "shipping",
}
ORDER_SERVICE_EXTRA: dict[str, float] = {"timeout": 10, "max_retries": 5, "backoff_max": 10}
SAGA_CONNECTION_ENV = "AIRFLOW_CONN_CONDUIT_SAGA_DEFAULT"
CONNECTION_ENV: tuple[str, ...] = (
    "AIRFLOW_CONN_HUBSPOT_DEFAULT",
    "AIRFLOW_CONN_ERP_DEFAULT",
    *ORDER_SERVICE_CONNECTIONS,
    SAGA_CONNECTION_ENV,
)
ORDER_REVIEW_TIMEOUT_ENV = "CONDUIT_ORDER_REVIEW_TIMEOUT_S"  # read by dags/order_fulfilment.py at parse time
ORDER_REVIEW_TIMEOUT_DEFAULT_S = 4 * 3600
CONDUIT_ENV: tuple[str, ...] = (
    "CONDUIT_INCLUDE_DIR",
    "CONDUIT_STAGING_DIR",
    "CONDUIT_REDIS_URL",
    "CONDUIT_HUBSPOT_WEBHOOK_SECRET",
    ORDER_REVIEW_TIMEOUT_ENV,
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
CONNECTION_TYPES = {
    "AIRFLOW_CONN_HUBSPOT_DEFAULT": "hubspot",
    "AIRFLOW_CONN_ERP_DEFAULT": "postgres",
    **dict.fromkeys(ORDER_SERVICE_CONNECTIONS, "http"),
    SAGA_CONNECTION_ENV: "postgres",
}
HUBSPOT_API_VERSION = "2026-09"

SYNC_DAG_ID = "crm_to_erp_customer_sync"
ERP_TABLE = "erp_customers"
ORDER_DAG_ID = "order_fulfilment"
SAGA_TABLE = "conduit_saga"
SAGA_STEP_TABLE = "conduit_saga_step"
