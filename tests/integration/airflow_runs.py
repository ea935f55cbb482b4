"""Runs that ``dag.test()`` cannot make: asset-triggered ones, created by the scheduler's own code
from the metadata DB and executed in process like ``dag.test()`` executes its own.

The chain, with real Airflow code at every link that decides something:

1. the DAGs folder is parsed and written to the metadata DB as the dag-processor does it
   (serialized DAGs, asset references, the triggers of asset watchers of unpaused DAGs);
2. an asset event is registered (by a task's outlet through ``AssetManager``, or by a watcher's
   trigger through ``Trigger.submit_event``, what the triggerer calls), which queues an
   ``AssetDagRunQueue`` row for every unpaused DAG scheduled on the asset;
3. the scheduler's dag-run creation step (``SchedulerJobRunner._create_dagruns_for_dags``, what
   each scheduler loop runs) turns that queue row into an ``asset_triggered`` run that consumed
   the event, and ``_start_queued_dagruns`` starts it;
4. that very run executes like ``dag.test()`` runs tasks (``run_task_in_process`` over the
   in-process execution API), so the tasks' ``triggering_asset_events`` come from the run's
   consumed events, as on a worker.
"""

from __future__ import annotations

import time

from airflow.sdk import DagRunState, TaskInstanceState


def register_dags() -> None:
    """What the dag-processor does with the DAGs folder: serialized DAGs, asset references and
    the asset watchers' triggers (those only for unpaused DAGs: register again after unpausing)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        assert bag.import_errors == {}
        sync_bag_to_db(bag, bundle.name, bundle.version)


def set_paused(dag_id: str, paused: bool) -> None:
    """What the pause toggle in the UI does (paused DAGs are not queued by asset events)."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        updated = session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(is_paused=paused))
        assert updated.rowcount == 1, f"{dag_id} was not registered"


def register_dags_and_unpause(dag_id: str) -> None:
    register_dags()
    set_paused(dag_id, False)


def forget_asset_events(asset) -> None:
    """Earlier tests' runs (same DAG, same asset) left events on the asset."""
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


def forget_dag_runs(dag_id: str) -> None:
    """Delete every run of a DAG from the session's metadata DB (other tests' ``dag.test()`` runs
    share it): for tests that assert what a DAG's run history shows."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        for run in session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)):
            session.delete(run)


def dag_runs(dag_id: str, **where) -> list[dict]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(DagRun).where(DagRun.dag_id == dag_id).filter_by(**where).order_by(DagRun.id)
        return [
            {"run_id": dr.run_id, "run_type": dr.run_type, "triggered_by": dr.triggered_by.value,
             "state": dr.state, "run_after": dr.run_after, "consumed": [e.id for e in dr.consumed_asset_events]}
            for dr in session.scalars(query)
        ]


def run_existing_dagrun(dag, run_id: str, timeout: float = 300, *, before=None, after=None):
    """Run the tasks of an existing run the way ``dag.test()`` runs its own (same loop, same
    in-process task runner), since ``dag.test()`` only runs a new manual run. ``before(ti)`` and
    ``after(ti)`` are called around each try: what happens to a task's worker or the services at
    that moment. Retry delays are waited out without spinning."""
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.sdk import timezone
    from airflow.sdk.definitions.dag import _run_task
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
            scheduled = [ti for ti in dr.get_task_instances(session=session) if ti.state == TaskInstanceState.SCHEDULED]
            for ti in scheduled:
                if before:
                    before(ti)
                _run_task(ti=ti, task=dag.task_dict[ti.task_id])
                if after:
                    after(ti)
            if not scheduled:
                time.sleep(0.5)  # a retry delay
        return dr.state, {ti.task_id: ti.state for ti in dr.get_task_instances(session=session)}


def stored_xcom(dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
    """A task's XCom (its return value unless ``key`` says otherwise) as stored in the metadata DB."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key).one()
        return XComModel.deserialize_value(row)
