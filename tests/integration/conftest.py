"""Fixtures that run the real sync DAG: an Airflow metadata DB, the stand-in CRM, an ERP schema on the
real PostgreSQL, and a private copy of include/ whose spec points at that schema."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sync_helpers import SyncEnv

from conduit.standin.testing import run_standin

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "crm_to_erp_customer_sync"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB in the session's private AIRFLOW_HOME."""
    home = Path(os.environ["AIRFLOW_HOME"])
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env=os.environ.copy(), timeout=300)
    return home


# Fixed for the whole test session (see erp_schema), distinct between concurrent sessions.
ERP_SCHEMA = f"conduit_it_{os.getpid()}"


@pytest.fixture
def erp_schema(pg_server_dsn):
    """One fixed ERP schema, emptied for each test. The sync's asset names contain the schema, and
    all tests share one Airflow metadata DB: a fixed name keeps one asset per sync, as in a real
    deployment, instead of a new asset (and DAG version) per test."""
    import psycopg

    def recreate(drop_only: bool = False):
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ERP_SCHEMA}" CASCADE')
            if not drop_only:
                conn.execute(f'CREATE SCHEMA "{ERP_SCHEMA}"')

    recreate()
    yield ERP_SCHEMA
    recreate(drop_only=True)


@pytest.fixture
def sync_env(airflow_db, pg_server_dsn, erp_schema, tmp_path, monkeypatch):
    pg_schema = erp_schema
    include = tmp_path / "include"
    shutil.copytree(REPO / "include", include)
    spec_path = include / "syncs" / f"{DAG_ID}.yaml"
    data = yaml.safe_load(spec_path.read_text())
    data["target"]["schema"] = pg_schema
    spec_path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("CONDUIT_INCLUDE_DIR", str(include))
    monkeypatch.setenv("CONDUIT_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setenv("CONDUIT_DATA_DOCS_DIR", str(tmp_path / "data_docs"))
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", pg_server_dsn)
    with run_standin(contacts=int(os.environ.get("CONDUIT_TEST_CONTACTS", "600")), seed=11) as crm:
        monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", json.dumps({
            "conn_type": "hubspot", "host": crm.base_url, "password": crm.token,
            "extra": {"api_version": "2026-09", "max_retries": 4, "backoff_max": 0.5},
        }))
        yield SyncEnv(crm=crm, schema=pg_schema, include=include, spec_path=spec_path)


# --- the order saga: the order services stand-in, its connections, a saga log on PostgreSQL ---


@pytest.fixture(scope="session")
def services():
    """One order services stand-in (inventory, payment, fraud, shipping) for the session."""
    from conduit.orders_standin.testing import run_order_services

    with run_order_services(ship_after_s=0.3) as running:
        yield running


@pytest.fixture
def order_env(airflow_db, services, pg_server_dsn, pg_schema, monkeypatch):
    """Connections to the stand-in's four services and a saga log in a fresh PostgreSQL schema;
    the stand-in starts empty (no ledger, no faults)."""
    from urllib.parse import urlsplit

    services.admin.reset()
    pg = urlsplit(pg_server_dsn)
    for name in ("inventory", "payment", "fraud", "shipping"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}_DEFAULT", json.dumps({
            "conn_type": "http", "host": services.base_url,
            "extra": {"timeout": 2, "max_retries": 4, "backoff_max": 0.2}}))
    monkeypatch.setenv("AIRFLOW_CONN_CONDUIT_SAGA_DEFAULT", json.dumps({
        "conn_type": "postgres", "host": pg.hostname, "port": pg.port or 5432, "login": pg.username,
        "password": pg.password or "", "schema": pg.path.lstrip("/"),
        "extra": {"options": f"-csearch_path={pg_schema}"}}))
    return services


