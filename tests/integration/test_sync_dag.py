"""The flagship DAG end to end with dag.test(): stand-in CRM over HTTP -> real PostgreSQL ERP."""

from __future__ import annotations

import pandas as pd
import pytest
from airflow.sdk import TaskInstanceState

from conduit.pipeline.steps import raw_properties, records_to_table
from conduit.standin.data import generate, iter_records
from conduit.transforms.mapping import map_frame

pytestmark = pytest.mark.postgres


def run(env, **conf):
    dag_run = env.dag().test(run_conf={"full_refresh": False, "dry_run": False, **conf})
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    return dag_run, states


def xcom(dag_run, task_id):
    from conduit.demo import task_summaries

    return task_summaries(dag_run)[task_id]


def extract_kinds(dag_run) -> list[str]:
    tis = sorted((ti for ti in dag_run.get_task_instances() if ti.task_id == "extract"), key=lambda t: t.map_index)
    assert all(ti.state == TaskInstanceState.SUCCESS for ti in tis)
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id="extract",
                                                  key="return_value").order_by(XComModel.map_index)
        kinds = [XComModel.deserialize_value(r)["kind"] for r in rows]
    assert len(kinds) == len(tis)
    return kinds


def expected_erp(spec, *, seed=11, contacts=600, bad_emails=0) -> pd.DataFrame:
    """The CRM's seeded contacts mapped by the spec: what the ERP must hold."""
    data = generate(seed=seed, contacts=contacts, bad_emails=bad_emails)
    records = list(iter_records(data.contacts))
    raw = records_to_table(records, raw_properties(spec)).to_pandas()
    return map_frame(raw, spec).sort_values(spec.target.key).reset_index(drop=True)


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Values as Python objects with None for missing, whatever dtype each side chose."""
    return frame.astype(object).where(frame.notna(), None)


def stored(env) -> pd.DataFrame:
    spec = env.spec()
    rows = env.target().fetch_rows(spec)
    return rows[rows["active"].astype(bool)][[*spec.columns, "row_hash"]].sort_values(spec.target.key) \
        .reset_index(drop=True)


def test_sync_loads_the_crm_exactly_and_a_second_run_changes_nothing(sync_env):
    spec = sync_env.spec()
    dag_run, states = run(sync_env)
    assert dag_run.state == "success", states
    assert set(states.values()) == {TaskInstanceState.SUCCESS}

    want = expected_erp(spec)
    got = stored(sync_env)
    assert len(got) == len(want) == 600
    pd.testing.assert_frame_equal(plain(got[spec.columns]), plain(want[spec.columns]))
    assert got["row_hash"].tolist() == want["row_hash"].tolist()
    load = xcom(dag_run, "load")
    assert load["inserted"] == 600 and load["updated"] == 0
    assert extract_kinds(dag_run) == ["range"] * 4 + ["archived"]  # parallel id ranges + archived listing
    before = sync_env.target().fetch_rows(spec)[["customer_number", "updated_at"]]

    dag_run, states = run(sync_env)
    assert dag_run.state == "success", states
    load = xcom(dag_run, "load")
    assert (load["inserted"], load["updated"], load["deleted"]) == (0, 0, 0)
    after = sync_env.target().fetch_rows(spec)[["customer_number", "updated_at"]]
    pd.testing.assert_frame_equal(before, after)  # nothing rewritten: audit columns stay still
    assert xcom(dag_run, "extract")["mode"] == "incremental"
    assert extract_kinds(dag_run) == ["changed", "archived"]


def test_incremental_run_picks_up_changes_and_archives(sync_env):
    assert run(sync_env)[0].state == "success"
    crm = sync_env.crm
    ids = [str(r["id"]) for r in iter_records(generate(seed=11, contacts=600).contacts)]
    now = crm.admin.clock_ms()
    crm.admin.modify(ids[0], {"firstname": "Renamed"}, lastmodifieddate_ms=now - 120_000)
    crm.admin.archive(ids[1])

    dag_run, states = run(sync_env)
    assert dag_run.state == "success", states
    load = xcom(dag_run, "load")
    assert load["updated"] == 1 and load["inserted"] == 0 and load["deleted"] == 1
    rows = sync_env.target().fetch_rows(sync_env.spec(), keys=[f"HS-C-{ids[0]}", f"HS-C-{ids[1]}"])
    by_key = rows.set_index("customer_number")
    assert by_key.loc[f"HS-C-{ids[0]}", "first_name"] == "Renamed"
    assert not bool(by_key.loc[f"HS-C-{ids[1]}", "active"])
    assert by_key.loc[f"HS-C-{ids[1]}", "deleted_at"] is not None


def test_bad_token_fails_without_retry(sync_env, monkeypatch):
    import json

    monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", json.dumps(
        {"conn_type": "hubspot", "host": sync_env.crm.base_url, "password": "not-the-token"}))
    dag_run, states = run(sync_env)
    assert dag_run.state == "failed"
    first = dag_run.get_task_instance("plan_extract")  # the first CRM call: the id range of a full read
    assert first.state == TaskInstanceState.FAILED and first.try_number == 1
    assert sync_env.target().count(sync_env.spec()) == 0


def test_dry_run_leaves_the_erp_untouched(sync_env):
    dag_run, states = run(sync_env, dry_run=True)
    assert dag_run.state == "success", states
    assert xcom(dag_run, "load")["inserted"] == 600
    assert sync_env.target().count(sync_env.spec()) == 0
    assert sync_env.target().read_watermark(sync_env.spec()) is None


def test_full_refresh_repairs_what_the_incremental_path_cannot_see(sync_env):
    """A GDPR delete leaves no archive trace and a row removed from the ERP behind the sync's back
    is invisible to the incremental path; the full read (full_refresh, or the periodic full read
    day) finds both: the vanished id is deleted, the missing row comes back."""
    import psycopg

    assert run(sync_env)[0].state == "success"
    spec = sync_env.spec()
    ids = [str(r["id"]) for r in iter_records(generate(seed=11, contacts=600).contacts)]
    sync_env.crm.admin.delete(ids[3])  # GDPR: gone, not archived
    with psycopg.connect(sync_env.target()._dsn, autocommit=True) as conn:
        conn.execute(f'DELETE FROM "{spec.target.db_schema}".erp_customers WHERE customer_number = %s',
                     (f"HS-C-{ids[4]}",))

    dag_run, states = run(sync_env, full_refresh=True)
    assert dag_run.state == "success", states
    load = xcom(dag_run, "load")
    assert (load["inserted"], load["deleted"]) == (1, 1)
    rows = sync_env.target().fetch_rows(spec, keys=[f"HS-C-{ids[3]}", f"HS-C-{ids[4]}"]).set_index("customer_number")
    assert not bool(rows.loc[f"HS-C-{ids[3]}", "active"]) and bool(rows.loc[f"HS-C-{ids[4]}", "active"])
