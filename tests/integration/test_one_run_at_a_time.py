"""Runs of one sync queue up instead of racing for the same rows (``max_active_runs=1``): two runs
at once would plan against an ERP the other is changing (stale plans, a second approval request),
and one's reconcile would find rows the other's load rewrote. Airflow 3 counts a backfill's runs
apart from the DAG's own (a backfill has its own ``max_active_runs``, 10 by default), so a
backfill of a sync would start several runs at once: a sync reads the CRM as it is now, whatever
the logical date, so the DAG refuses backfills.

The sync DAG as the DAG processor stores it (SQLite metadata DB), Airflow's own backfill model
and the scheduler's own step that starts queued runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from airflow_runs import register_dags_and_unpause, set_paused
from sync_helpers import DAG_ID

pytestmark = pytest.mark.postgres


def running_runs() -> int:
    from airflow.executors.local_executor import LocalExecutor
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        SchedulerJobRunner(job=Job(), executors=[LocalExecutor()])._start_queued_dagruns(session)
    with create_session() as session:
        return session.query(DagRun).filter_by(dag_id=DAG_ID, state="running").count()


@pytest.fixture
def no_backfills_left():
    """Backfill runs (made on code that allowed them) must not stay for later tests, nor the DAG
    unpaused (as it was registered)."""
    yield
    set_paused(DAG_ID, True)
    from airflow.models.backfill import Backfill, BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(BackfillDagRun).delete()
        session.query(DagRun).filter(DagRun.dag_id == DAG_ID, DagRun.backfill_id.isnot(None)).delete()
        session.query(Backfill).filter_by(dag_id=DAG_ID).delete()


def test_a_backfill_cannot_start_two_runs_of_a_sync_at_once(sync_env, no_backfills_left):
    from airflow.exceptions import DagRunTypeNotAllowed
    from airflow.models.backfill import _create_backfill

    register_dags_and_unpause(DAG_ID)  # what the DAG processor stores, unpaused
    try:
        _create_backfill(dag_id=DAG_ID, from_date=datetime(2026, 11, 1, tzinfo=UTC),
                         to_date=datetime(2026, 11, 3, tzinfo=UTC), max_active_runs=10, reverse=False,
                         dag_run_conf={}, triggering_user_name="test")
    except DagRunTypeNotAllowed as refused:
        assert "does not allow backfill runs" in str(refused)
    running = running_runs()
    assert running <= 1, f"{running} runs of {DAG_ID} running at once"
