"""A spec change between runs: the sync now writes a new ERP table (a rename, a rebuilt or
restored table). The watermark belongs to the sync, not to the table, so the run after the
change must not read only the changes since it: the new table starts empty and would stay
missing every customer no change touches.

Real sync DAG via ``dag.test()``, the stand-in CRM over HTTP, PostgreSQL."""

from __future__ import annotations

import pytest
from sync_helpers import assert_erp_equals_crm, extract_summary, run_dag, run_ok

pytestmark = pytest.mark.postgres


def test_a_new_target_table_after_a_spec_change_is_filled_with_every_customer(sync_env):
    env = sync_env
    run_ok(env)
    assert env.target().count(env.spec()) == 600 and env.target().read_watermark(env.spec()) is not None

    env.edit_spec(target__table="erp_customers_v2")
    spec = env.spec()
    dag_run, states = run_dag(env)

    assert dag_run.state == "success", states
    assert extract_summary(dag_run)["mode"] == "full"
    assert env.target().count(spec) == 600
    assert_erp_equals_crm(env.target(), spec)


def test_an_emptied_table_is_refilled_by_the_next_run(sync_env):
    """Someone truncates the table (or restores an empty one): the watermark still says "up to
    date", the table has nothing."""
    import psycopg

    env = sync_env
    run_ok(env)
    spec = env.spec()
    with psycopg.connect(env.target()._dsn, autocommit=True) as conn:
        conn.execute(f'TRUNCATE "{env.schema}".erp_customers')

    dag_run, states = run_dag(env)

    assert dag_run.state == "success", states
    assert env.target().count(spec) == 600
    assert_erp_equals_crm(env.target(), spec)
