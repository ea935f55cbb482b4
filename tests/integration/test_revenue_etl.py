"""The revenue ETL is triggered by the sync's asset event and reads the metadata it carries.

The chain, with real Airflow code at every link that decides something:

1. the DAGs folder is parsed and written to the metadata DB as the dag-processor does it, and
   the ETL DAG is unpaused (paused DAGs are not queued by asset events);
2. the sync DAG runs with ``dag.test()`` (stand-in CRM -> PostgreSQL): its load task adds an
   asset event for the ERP table through the alias; Airflow's ``AssetManager`` stores the
   ``AssetEvent`` and, because the ETL DAG is scheduled on that asset, an ``AssetDagRunQueue``
   row for the ETL DAG;
3. the scheduler's own dag-run creation step (``SchedulerJobRunner._create_dagruns_for_dags``,
   what each scheduler loop runs) turns that queue row into an ``asset_triggered`` run that
   consumed the event, and ``_start_queued_dagruns`` starts it;
4. that very run executes like ``dag.test()`` runs tasks (``run_task_in_process`` over the
   in-process execution API), so the task's ``triggering_asset_events`` come from the run's
   consumed events, as on a worker.

``dag.test()`` itself cannot do 3-4: it always creates a new *manual* run with no consumed events.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from airflow.sdk import DagRunState, TaskInstanceState

pytestmark = pytest.mark.postgres

ETL_DAG_ID = "erp_customer_revenue_etl"
DAGS = Path(__file__).resolve().parents[2] / "dags"


def register_dags_and_unpause(dag_id: str) -> None:
    """What the dag-processor does with the DAGs folder (serialized DAGs, asset references),
    then what "unpause" in the UI does."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        assert bag.import_errors == {}
        sync_bag_to_db(bag, bundle.name, bundle.version)
    with create_session() as session:
        updated = session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(is_paused=False))
        assert updated.rowcount == 1, f"{dag_id} was not registered"


def forget_asset_events(asset) -> None:
    """Earlier tests' sync runs (same sync, same ERP schema) left events on the asset."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import delete, select

    with create_session() as session:
        ids = select(AssetModel.id).where(AssetModel.name == asset.name, AssetModel.uri == asset.uri)
        session.execute(delete(AssetEvent).where(AssetEvent.asset_id.in_(ids)))


def asset_events(asset):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == asset.name, AssetModel.uri == asset.uri).order_by(AssetEvent.id)
        ).all()
        return [(e.id, e.source_dag_id, e.source_task_id, e.source_run_id, dict(e.extra)) for e in rows]


def queued_for(dag_id: str) -> list[tuple[int, str]]:
    from airflow.models.asset import AssetDagRunQueue, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return list(session.execute(
            select(AssetModel.name, AssetDagRunQueue.target_dag_id)
            .join(AssetModel, AssetDagRunQueue.asset_id == AssetModel.id)
            .where(AssetDagRunQueue.target_dag_id == dag_id)
        ).all())


def scheduler_creates_and_starts_runs() -> None:
    """One scheduler loop's dag-run steps: create due runs (asset-triggered ones from the queue),
    then move queued runs to running."""
    from airflow.executors.local_executor import LocalExecutor
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.utils.session import create_session
    from airflow.utils.sqlalchemy import prohibit_commit

    runner = SchedulerJobRunner(job=Job(), executors=[LocalExecutor()])  # not started: nothing is sent to it
    with create_session() as session, prohibit_commit(session) as guard:
        runner._create_dagruns_for_dags(guard, session)
    # Queued runs start once ``run_after <= now()``, and SQLite's now() has whole seconds: a run
    # created in this second would wait for the scheduler's next loop, so step to the next second.
    time.sleep(1.05 - time.time() % 1)
    with create_session() as session:
        runner._start_queued_dagruns(session)


def etl_runs():
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return [
            {"run_id": dr.run_id, "run_type": dr.run_type, "triggered_by": dr.triggered_by.value,
             "state": dr.state, "run_after": dr.run_after, "consumed": [e.id for e in dr.consumed_asset_events]}
            for dr in session.scalars(select(DagRun).where(DagRun.dag_id == ETL_DAG_ID))
        ]


def run_existing_dagrun(dag, run_id: str, timeout: float = 300):
    """Run the tasks of an existing run the way ``dag.test()`` runs its own (same loop, same
    in-process task runner), since ``dag.test()`` only runs a new manual run."""
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from sqlalchemy import select

    deadline = time.monotonic() + timeout
    with create_session() as session:
        dr = session.scalar(select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run_id))
        dr.dag = DBDagBag().get_dag_for_run(dr, session)
        while dr.state == DagRunState.RUNNING:
            assert time.monotonic() < deadline, f"{run_id} still running"
            session.expire_all()
            schedulable, _ = dr.update_state(session=session)
            for ti in schedulable:
                ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
                ti.scheduled_dttm = timezone.utcnow()
            session.commit()
            for ti in dr.get_task_instances(session=session):
                if ti.state == TaskInstanceState.SCHEDULED:
                    _run_task(ti=ti, task=dag.task_dict[ti.task_id])
        return dr.state, {ti.task_id: ti.state for ti in dr.get_task_instances(session=session)}


def xcom(dag_id, run_id, task_id):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id,
                                                 key="return_value").one()
        return XComModel.deserialize_value(row)


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
    load = xcom(sync_run.dag_id, sync_run.run_id, "load")
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
    summary = xcom(ETL_DAG_ID, etl_run["run_id"], "customer_revenue")
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
    assert xcom(again.dag_id, again.run_id, "load")["inserted"] == 0
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
    seeded = xcom(ETL_DAG_ID, dag_run.run_id, "seed_orders")
    assert seeded["seeded"] and seeded["customers"] == 50 and seeded["inserted"] > 50
    summary = xcom(ETL_DAG_ID, dag_run.run_id, "customer_revenue")
    assert summary["source"]["events"] == 0 and summary["customers"] == 49

    store = RevenueStore(sqlite_engine(str(erp)), schema="public")
    report = store.read_report()
    assert len(report) == 49 and "HS-C-3" not in set(report["customer_number"])
    assert report["source_sync_run_id"].isna().all() and set(report["etl_run_id"]) == {dag_run.run_id}
    assert store.read_run(dag_run.run_id)["source_events"] == 0
