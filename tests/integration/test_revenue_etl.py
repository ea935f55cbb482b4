"""The revenue ETL is triggered by the sync's asset event and reads the metadata it carries.

The sync DAG runs with ``dag.test()`` (stand-in CRM -> PostgreSQL): its load task adds an asset
event for the ERP table through the alias; the ETL run that event queues is created, started and
run by Airflow's own code (``airflow_runs``: ``dag.test()`` cannot make asset-triggered runs).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from airflow.sdk import DagRunState
from airflow_runs import (
    asset_events,
    dag_runs,
    forget_asset_events,
    queued_for,
    register_dags_and_unpause,
    run_existing_dagrun,
    scheduler_creates_and_starts_runs,
    stored_xcom,
)

pytestmark = pytest.mark.postgres

ETL_DAG_ID = "erp_customer_revenue_etl"
DAGS = Path(__file__).resolve().parents[2] / "dags"


def etl_runs():
    return dag_runs(ETL_DAG_ID)


def test_sync_asset_event_triggers_the_etl_which_reads_its_metadata(sync_env):
    from airflow.dag_processing.dagbag import DagBag

    from conduit.etl.hooks import ErpReportingHook
    from conduit.etl.revenue import customer_revenue
    from conduit.lineage.assets import erp_table_asset

    spec = sync_env.spec()
    table_asset = erp_table_asset(spec)
    register_dags_and_unpause(ETL_DAG_ID)
    forget_asset_events(table_asset)  # as in a fresh deployment: the first ETL run consumes them all
    assert queued_for(ETL_DAG_ID) == [] and etl_runs() == []

    # 2. the sync changes the ERP: one asset event with the load summary, one queued ETL run
    sync_run = sync_env.dag().test(run_conf={"full_refresh": False, "dry_run": False})
    assert sync_run.state == DagRunState.SUCCESS
    load = stored_xcom(sync_run.dag_id, sync_run.run_id, "load")
    ((event_id, source_dag, source_task, source_run, extra),) = asset_events(table_asset)
    assert (source_dag, source_task, source_run) == (spec.name, "load", sync_run.run_id)
    assert extra == {**load, "sync": spec.name, "run_id": sync_run.run_id} and extra["inserted"] == 600
    assert queued_for(ETL_DAG_ID) == [(table_asset.name, ETL_DAG_ID)]

    # the orders the ETL joins (tests seed explicitly; the DAG's seed_orders param does the same)
    store = ErpReportingHook(erp_conn_id=spec.target.conn_id).get_store(
        schema=spec.target.db_schema, customers_table=spec.target.table)
    seeded = store.seed_orders(seed=7, as_of=sync_run.end_date)
    assert seeded["customers"] == 600 and seeded["inserted"] > 1000

    # 3. the scheduler turns the queue row into an asset-triggered run that consumed the event
    scheduler_creates_and_starts_runs()
    (etl_run,) = etl_runs()
    assert (etl_run["run_type"], etl_run["triggered_by"], etl_run["state"]) == ("asset_triggered", "asset", "running")
    assert etl_run["consumed"] == [event_id]
    assert queued_for(ETL_DAG_ID) == []

    # 4. the run executes; its task reads triggering_asset_events -> the sync's metadata
    etl_dag = DagBag(dag_folder=str(DAGS)).dags[ETL_DAG_ID]
    state, states = run_existing_dagrun(etl_dag, etl_run["run_id"])
    assert state == DagRunState.SUCCESS, states
    summary = stored_xcom(ETL_DAG_ID, etl_run["run_id"], "customer_revenue")
    assert summary["source"] == {
        "events": 1, "sync": spec.name, "sync_run_id": sync_run.run_id, "sync_run_ids": [sync_run.run_id],
        "inserted": load["inserted"], "updated": load["updated"], "deleted": load["deleted"],
        "watermark_ms": load["watermark_ms"],
    }

    # the report: what the pure function computes from the ERP's customers and orders, as of the run
    customers, orders = store.read_inputs()
    want = customer_revenue(customers, orders, as_of=etl_run["run_after"])
    got = store.read_report()
    assert len(got) == len(want) == summary["customers"] == summary["written"] == 600
    assert got["customer_number"].tolist() == want["customer_number"].tolist()
    assert got["segment"].tolist() == want["segment"].tolist()
    assert got["order_count"].tolist() == want["order_count"].tolist()
    assert got["revenue"].astype(float).round(2).tolist() == want["revenue"].round(2).tolist()
    assert pd.to_datetime(got["last_order_date"]).tolist() == want["last_order_date"].tolist()
    assert set(got["etl_run_id"]) == {etl_run["run_id"]} and set(got["source_sync_run_id"]) == {sync_run.run_id}
    recorded = store.read_run(etl_run["run_id"])
    assert (recorded["source_sync_run_id"], recorded["source_events"], recorded["source_inserted"],
            recorded["source_watermark_ms"]) == (sync_run.run_id, 1, 600, load["watermark_ms"])

    # a sync run that changes nothing emits no event: nothing is queued, no ETL run is created
    again = sync_env.dag().test(run_conf={"full_refresh": False, "dry_run": False})
    assert again.state == DagRunState.SUCCESS
    assert stored_xcom(again.dag_id, again.run_id, "load")["inserted"] == 0
    assert len(asset_events(table_asset)) == 1 and queued_for(ETL_DAG_ID) == []
    scheduler_creates_and_starts_runs()
    assert len(etl_runs()) == 1


def test_manual_run_seeds_orders_and_reports_without_a_sync(airflow_db, tmp_path, monkeypatch):
    """Through ``dag.test()`` on a SQLite ERP: the seed_orders param seeds, the report is written,
    and with no triggering event the run records no source sync."""
    import sqlite3

    from conduit.etl.store import RevenueStore, sqlite_engine

    erp = tmp_path / "erp.db"
    with sqlite3.connect(erp) as conn:
        conn.execute("CREATE TABLE erp_customers (customer_number TEXT PRIMARY KEY, active BOOLEAN NOT NULL)")
        conn.executemany("INSERT INTO erp_customers VALUES (?, ?)", [(f"HS-C-{i}", i != 3) for i in range(1, 51)])
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", f'{{"conn_type": "sqlite", "host": "{erp}"}}')
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS)).dags[ETL_DAG_ID]
    dag_run = dag.test(run_conf={"seed_orders": True, "seed": 3})
    assert dag_run.state == DagRunState.SUCCESS
    seeded = stored_xcom(ETL_DAG_ID, dag_run.run_id, "seed_orders")
    assert seeded["seeded"] and seeded["customers"] == 50 and seeded["inserted"] > 50
    summary = stored_xcom(ETL_DAG_ID, dag_run.run_id, "customer_revenue")
    assert summary["source"]["events"] == 0 and summary["customers"] == 49

    store = RevenueStore(sqlite_engine(str(erp)), schema="public")
    report = store.read_report()
    assert len(report) == 49 and "HS-C-3" not in set(report["customer_number"])
    assert report["source_sync_run_id"].isna().all() and set(report["etl_run_id"]) == {dag_run.run_id}
    assert store.read_run(dag_run.run_id)["source_events"] == 0


@pytest.mark.parametrize("erp", ["postgres", "sqlite"])
def test_a_rerun_of_an_older_run_does_not_roll_the_report_back(erp, request, tmp_path):
    """Run A reports as of T1, run B as of T2 (a customer ordered again in between). Clearing and
    rerunning A afterwards (e.g. once the data that failed its gate is fixed) must not put the
    T1 report back over B's: that customer's later revenue would vanish from the report."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert, text

    from conduit.etl.steps import run_revenue_etl
    from conduit.etl.store import RevenueStore, engine_for

    suite = DAGS.parent / "include" / "expectations" / "customer_revenue.yaml"
    if erp == "postgres":
        engine, schema = engine_for(request.getfixturevalue("pg_server_dsn")), request.getfixturevalue("pg_schema")
    else:  # SQLite hands the stored as_of back naive
        engine, schema = engine_for(str(tmp_path / "erp.db")), None
    customers = f'"{schema}".erp_customers' if schema else "erp_customers"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {customers} (customer_number text PRIMARY KEY, active boolean NOT NULL)"))
        conn.execute(text(f"INSERT INTO {customers} VALUES ('HS-C-1', true), ('HS-C-2', true)"))
    store = RevenueStore(engine, schema=schema or "public")
    store.ensure_tables()
    t1 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    t2 = t1 + timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(insert(store.tables.orders), [
            {"order_id": "SO-1", "customer_number": "HS-C-1", "ordered_at": t1 - timedelta(days=3),
             "status": "completed", "amount": 100, "currency": "EUR"},
            {"order_id": "SO-2", "customer_number": "HS-C-1", "ordered_at": t1 + timedelta(hours=5),
             "status": "completed", "amount": 250, "currency": "EUR"},
        ])

    def revenue_of(number: str) -> float:
        report = store.read_report().set_index("customer_number")
        return float(report.loc[number, "revenue"])

    run_revenue_etl(store, suite, run_id="run-A", as_of=t1)
    assert revenue_of("HS-C-1") == 100.0
    run_revenue_etl(store, suite, run_id="run-B", as_of=t2)
    assert revenue_of("HS-C-1") == 350.0

    rerun = run_revenue_etl(store, suite, run_id="run-A", as_of=t1)  # run A cleared and rerun
    report = store.read_report()
    assert set(report["etl_run_id"]) == {"run-B"}, rerun
    assert revenue_of("HS-C-1") == 350.0 and (rerun["written"], rerun["superseded_by"]) == (0, "run-B")
    assert store.read_run("run-B")["revenue_total"] == 350


def test_orders_placed_after_as_of_do_not_break_a_rerun(pg_server_dsn, pg_schema):
    """Only orders placed by as_of count, "so a rerun of a run gives the same numbers whatever was
    ordered since" (conduit.etl.revenue): an order placed since, in a status or currency the
    report cannot use, must not fail the rerun either."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert, text

    from conduit.etl.steps import run_revenue_etl
    from conduit.etl.store import RevenueStore, engine_for

    suite = DAGS.parent / "include" / "expectations" / "customer_revenue.yaml"
    engine = engine_for(pg_server_dsn)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE TABLE "{pg_schema}".erp_customers '
                          "(customer_number text PRIMARY KEY, active boolean NOT NULL)"))
        conn.execute(text(f"INSERT INTO \"{pg_schema}\".erp_customers VALUES ('HS-C-1', true)"))
    store = RevenueStore(engine, schema=pg_schema)
    store.ensure_tables()
    as_of = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    order = {"customer_number": "HS-C-1", "status": "completed", "amount": 100, "currency": "EUR"}
    with engine.begin() as conn:
        conn.execute(insert(store.tables.orders), [{**order, "order_id": "SO-1", "ordered_at": as_of - timedelta(days=1)}])
    first = run_revenue_etl(store, suite, run_id="run-A", as_of=as_of)
    report = store.read_report()

    with engine.begin() as conn:  # ordered since: a status and a currency the report does not know
        conn.execute(insert(store.tables.orders), [
            {**order, "order_id": "SO-2", "ordered_at": as_of + timedelta(minutes=5), "status": "on_hold"},
            {**order, "order_id": "SO-3", "ordered_at": as_of + timedelta(hours=1), "currency": "USD"},
        ])
    rerun = run_revenue_etl(store, suite, run_id="run-A", as_of=as_of)
    assert rerun["revenue_total"] == first["revenue_total"] == 100.0 and rerun["segments"] == first["segments"]
    pd.testing.assert_frame_equal(store.read_report(), report)
