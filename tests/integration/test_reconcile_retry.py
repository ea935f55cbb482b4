"""A reconcile killed after it checked the load and removed the run's staged files (crash point
``reconcile.end``: "no staged files; no XCom") is retried by Airflow. "Removing removed files is
a no-op" (``conduit.crash``): the retry must not fail the run either. After a full read the check
compares the ERP with the staged rows; with those gone it would read "the run staged 0" and call
every customer "written behind the sync's back".

The real DAG runs first (``dag.test()``, stand-in CRM over HTTP, PostgreSQL); the retry is the DAG's
own ``reconcile`` task executed again for that run, with the values Airflow renders into it."""

from __future__ import annotations

import copy

import pytest
from airflow_runs import stored_xcom
from sync_helpers import DAG_ID, run_ok

from conduit.pipeline.staging import RunStaging

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("conf", [{}, {"full_refresh": True}], ids=["first-full-read", "full-refresh"])
def test_a_reconcile_retried_after_it_removed_the_staged_files_passes(sync_env, conf):
    env = sync_env
    if conf:
        run_ok(env)
    dag_run = run_ok(env, conf=conf)
    items = stored_xcom(DAG_ID, dag_run.run_id, "plan_extract")
    assert items[0]["mode"] == "full"
    assert not RunStaging.for_run(DAG_ID, dag_run.run_id).root.exists()  # the first try removed them

    retry = copy.copy(env.dag().task_dict["reconcile"])
    retry.extract_plan, retry.full_refresh, retry.dry_run = items, bool(conf), False
    summary = retry.execute({"run_id": dag_run.run_id})

    assert summary["missing_in_erp"] == 0 and summary["erp_active"] == 600
    assert "only the counts" in summary["staged_files"]


def test_a_load_cleared_after_the_run_finished_says_the_staged_files_are_gone(sync_env):
    """Clearing the load of a finished full refresh: reconcile removed the staged files. It said
    "full refresh read no CRM records; refusing to delete every ERP customer" (the CRM has 600)."""
    from conduit.exceptions import StagedFilesGone

    env = sync_env
    run_ok(env)
    dag_run = run_ok(env, conf={"full_refresh": True})
    items = stored_xcom(DAG_ID, dag_run.run_id, "plan_extract")

    again = copy.copy(env.dag().task_dict["load"])
    again.extract_plan, again.load_plan, again.full_refresh, again.dry_run = items, None, True, False
    with pytest.raises(StagedFilesGone, match="staged files are gone.*trigger a new run"):
        again.execute({"run_id": dag_run.run_id, "ti": None})
    assert env.target().count(env.spec()) == 600
