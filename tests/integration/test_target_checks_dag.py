"""The common-sql column and table checks on the ERP table after each load, through the real DAG:
they pass on a clean sync, fail without retry naming the check when the table is wrong, and are
skipped on the embedded SQLite target."""

from __future__ import annotations

import os
from urllib.parse import quote

import psycopg
import pytest
from airflow.sdk import TaskInstanceState
from sync_helpers import crm_ids, run_dag, run_ok

pytestmark = pytest.mark.postgres

CHECKS = ("target_checks.columns", "target_checks.table")


def states_of(dag_run) -> dict[str, TaskInstanceState]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances() if ti.task_id in CHECKS}


def test_checks_pass_on_a_clean_sync_and_fail_naming_the_check_when_the_table_is_wrong(sync_env, capsys):
    dag_run = run_ok(sync_env)
    assert states_of(dag_run) == dict.fromkeys(CHECKS, TaskInstanceState.SUCCESS)
    capsys.readouterr()

    first, second = (f"HS-C-{i}" for i in crm_ids(sync_env.spec())[:2])
    with psycopg.connect(os.environ["AIRFLOW_CONN_ERP_DEFAULT"], autocommit=True) as conn:
        table = f'"{sync_env.schema}".erp_customers'
        conn.execute(f"UPDATE {table} SET deleted_at = now() WHERE customer_number = %s", (first,))
        conn.execute(f"UPDATE {table} SET lifecycle_stage = NULL WHERE customer_number = %s", (second,))

    dag_run, states = run_dag(sync_env)

    assert dag_run.state == "failed", states
    assert states["load"] == states["reconcile"] == TaskInstanceState.SUCCESS
    assert states_of(dag_run) == dict.fromkeys(CHECKS, TaskInstanceState.FAILED)
    for task_id in CHECKS:
        assert dag_run.get_task_instance(task_id).try_number == 1  # AirflowFailException: no retry
    out = capsys.readouterr().out
    assert "Check: active_rows_are_not_dated_deleted" in out
    assert "Column: lifecycle_stage\n\tCheck: null_check" in out
    assert "Check: deleted_rows_are_dated" not in out


def test_checks_are_skipped_on_a_sqlite_erp(sync_env, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", f"sqlite://{quote(str(tmp_path / 'erp.db'), safe='')}")

    dag_run = run_ok(sync_env)

    assert states_of(dag_run) == dict.fromkeys(CHECKS, TaskInstanceState.SKIPPED)
    assert sync_env.target().count(sync_env.spec()) == 600
