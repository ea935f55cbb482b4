"""The revenue ETL's OpenLineage events, as the provider's listener emits them (file transport):
each task's START and COMPLETE name the same datasets, and no event carries the ERP
connection's credentials (in its URI and its extra).

The DAG runs with ``dag.test()`` in a fresh process, OpenLineage switched on through the
environment before Airflow loads (as in a deployment), against the session's metadata DB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN_ETL = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["erp_customer_revenue_etl"]
run = dag.test(run_conf={"seed_orders": sys.argv[2] == "true", "seed": 3})
print("RESULT " + json.dumps({"state": str(run.state)}))
"""


def run_etl_with_lineage(tmp_path: Path, erp_connection: str, *, seed_orders: bool) -> list[dict]:
    events = tmp_path / "openlineage.jsonl"
    env = {**os.environ, "AIRFLOW_CONN_ERP_DEFAULT": erp_connection,
           "AIRFLOW__OPENLINEAGE__DISABLED": "False", "AIRFLOW__OPENLINEAGE__NAMESPACE": "conduit-etl-test",
           "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events),
                                                           "append": True})}
    done = subprocess.run([sys.executable, "-c", RUN_ETL, str(REPO / "dags"), str(seed_orders).lower()],
                          env=env, capture_output=True, text=True, timeout=300)
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert result and json.loads(result[-1][7:])["state"] == "success", done.stderr[-3000:]
    return [json.loads(line) for line in events.read_text().splitlines() if line.strip()]


def datasets_by_task(events: list[dict]) -> dict[tuple[str, str], tuple[set, set]]:
    """(task, eventType) -> (input, output) (namespace, name) pairs; task events only."""
    found = {}
    for event in events:
        job = event["job"]["name"]
        if "." not in job:
            continue
        found[(job.split(".", 1)[1], event["eventType"])] = (
            {(d["namespace"], d["name"]) for d in event.get("inputs", [])},
            {(d["namespace"], d["name"]) for d in event.get("outputs", [])},
        )
    return found


@pytest.mark.parametrize("seed_orders", [False, True])
def test_start_and_complete_name_the_same_datasets(airflow_db, tmp_path, seed_orders):
    import sqlite3

    erp = tmp_path / "erp.db"
    with sqlite3.connect(erp) as conn:
        conn.execute("CREATE TABLE erp_customers (customer_number TEXT PRIMARY KEY, active BOOLEAN NOT NULL)")
        conn.executemany("INSERT INTO erp_customers VALUES (?, ?)", [(f"HS-C-{i}", 1) for i in range(1, 21)])
    events = run_etl_with_lineage(tmp_path, json.dumps({"conn_type": "sqlite", "host": str(erp)}),
                                  seed_orders=seed_orders)

    found = datasets_by_task(events)
    assert set(found) == {(task, kind) for task in ("seed_orders", "customer_revenue")
                          for kind in ("START", "COMPLETE")}, sorted(found)
    for task in ("seed_orders", "customer_revenue"):
        assert found[(task, "START")] == found[(task, "COMPLETE")], task
    namespace = f"sqlite://{erp}"
    assert found[("customer_revenue", "COMPLETE")] == (
        {(namespace, "erp_customers"), (namespace, "erp_orders")}, {(namespace, "erp_customer_revenue")})
    seeded = ({(namespace, "erp_customers")}, {(namespace, "erp_orders")})
    assert found[("seed_orders", "COMPLETE")] == (seeded if seed_orders else (set(), set()))


@pytest.mark.postgres
def test_no_event_carries_the_erp_credentials(airflow_db, pg_server_dsn, tmp_path):
    """The ERP connection as a URI with a password (trust auth: accepted, and still sent) and a
    libpq option in its extra that carries a second secret."""
    import psycopg

    database = f"conduit_etl_ol_{uuid.uuid4().hex[:8]}"
    password, app_secret = f"LEAKPW{uuid.uuid4().hex}+/=", f"LEAKAPP{uuid.uuid4().hex}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        with psycopg.connect(pg_server_dsn.rsplit("/", 1)[0] + f"/{database}", autocommit=True) as conn:
            conn.execute("CREATE TABLE erp_customers (customer_number text PRIMARY KEY, active boolean NOT NULL)")
            conn.execute("INSERT INTO erp_customers SELECT 'HS-C-' || i, true FROM generate_series(1, 20) i")
        uri = (f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:5432/{database}"
               f"?application_name={app_secret}")
        events = run_etl_with_lineage(tmp_path, uri, seed_orders=True)
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    text = json.dumps(events)
    assert len(events) >= 4
    for secret in (password, quote(password, safe=""), password[6:38], app_secret):
        assert secret not in text
    found = datasets_by_task(events)
    assert ("postgres://127.0.0.1:5432", f"{database}.public.erp_customer_revenue") in found[
        ("customer_revenue", "COMPLETE")][1]
