"""The quality gate with real data through the real sync DAG (dag.test(), the stand-in CRM over HTTP,
a per-test PostgreSQL schema): every policy, the rejected-ratio edge, table-level failures,
reconciliation of rows deleted behind the sync's back, and Data Docs."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import psycopg
import pytest
from airflow.sdk import TaskInstanceState
from sync_helpers import CONTACTS, SEED, bad_email_ids, quarantine_table, seeded_mapped, xcom

from conduit.standin.data import generate, iter_records

pytestmark = pytest.mark.postgres

EMAIL_CHECK = "expect_column_values_to_match_regex(email)"


def run(env, **conf):
    dag_run = env.dag().test(run_conf={"full_refresh": False, "dry_run": False, **conf})
    return dag_run, {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def reject_bad_emails(env) -> None:
    """The flagship loads a customer whose address does not parse, with the email empty and a
    defect recorded (tests/integration/test_defects.py). These tests exercise the policies with
    rows that reject: without ``on_invalid: null`` the address reaches the suite's email check as
    the CRM wrote it, and that check rejects."""
    env.edit_spec(mapping__email__transforms=[{"type": "email"}])








def active_rows(env) -> pd.DataFrame:
    rows = env.target().fetch_rows(env.spec())
    return rows[rows["active"].astype(bool)].reset_index(drop=True)


def task_error(capsys, error: str) -> str:
    """The text of the ``error`` a task failed with: dag.test() runs tasks in this process and
    their logs (with the traceback) go to stdout."""
    out = capsys.readouterr().out
    assert "Task failed with exception" in out
    start = out.index(f"conduit.exceptions.{error}: ")
    return out[start:start + 4000]


def test_block_policy_fails_the_run_naming_expectation_and_record(sync_env, capsys):
    sync_env.crm.admin.reset(bad_emails=1)
    reject_bad_emails(sync_env)
    sync_env.edit_spec(quality__policy="block")
    (bad_id,) = bad_email_ids(sync_env.spec(), 1)

    dag_run, states = run(sync_env)

    assert dag_run.state == "failed", states
    assert states["quality_gate"] == TaskInstanceState.FAILED
    assert dag_run.get_task_instance("quality_gate").try_number == 1  # QualityGateFailed: no retry
    assert states["load"] == TaskInstanceState.UPSTREAM_FAILED
    assert sync_env.target().count(sync_env.spec(), active_only=False) == 0
    assert sync_env.target().read_watermark(sync_env.spec()) is None
    assert quarantine_table(sync_env).empty  # block parks nothing: nothing was accepted either
    text = task_error(capsys, "QualityGateFailed")
    assert text.startswith(f"conduit.exceptions.QualityGateFailed: policy block: {EMAIL_CHECK} 1 rows")
    assert f"FAIL {EMAIL_CHECK} [critical]: 1 failed (e.g. HS-C-{bad_id})" in text


def test_quarantine_policy_parks_bad_rows_and_loads_the_rest_with_data_docs(sync_env):
    sync_env.crm.admin.reset(bad_emails=3)
    reject_bad_emails(sync_env)
    spec = sync_env.spec()
    bad = bad_email_ids(spec, 3)
    dirty = seeded_mapped(spec, bad_emails=3)

    dag_run, states = run(sync_env)

    assert dag_run.state == "success", states
    gate = xcom(dag_run, "quality_gate")
    assert (gate["checked"], gate["rejected"], gate["passed"], gate["policy"]) == (600, 3, True, "quarantine")
    assert gate["failed_expectations"] == [EMAIL_CHECK]
    assert xcom(dag_run, "load")["inserted"] == 597
    loaded = active_rows(sync_env)
    want = dirty[~dirty["crm_id_text"].isin(bad)].sort_values("customer_number")
    assert loaded["customer_number"].tolist() == want["customer_number"].tolist()
    assert loaded["row_hash"].tolist() == want["row_hash"].tolist()

    parked = quarantine_table(sync_env)
    assert sorted(parked["crm_id"]) == sorted(bad)
    assert sorted(parked["record_key"]) == sorted(f"HS-C-{i}" for i in bad)
    assert set(parked["expectation"]) == {"expect_column_values_to_match_regex"}
    assert set(parked["column_name"]) == {"email"}
    assert parked["replayed_at"].isna().all()
    assert (parked["run_id"] == dag_run.run_id).all()
    raw_emails = {str(r["id"]): r["properties"]["email"]
                  for r in iter_records(generate(seed=SEED, contacts=CONTACTS, bad_emails=3).contacts)}
    for entry in parked.itertuples():
        assert entry.raw_record["id"] == entry.crm_id
        assert entry.raw_record["email"] == raw_emails[entry.crm_id]  # the record as the CRM sent it
        assert entry.reason.startswith("email ") and " does not match " in entry.reason
    reconcile = xcom(dag_run, "reconcile")
    assert reconcile["quarantined_unloaded"] == 3 and reconcile["missing_in_erp"] == 0

    docs = xcom(dag_run, "data_docs")
    assert docs["success"] is False and docs["rows_validated"] > 0
    index = Path(docs["data_docs"])
    assert index.is_file()
    site = "\n".join(p.read_text(errors="replace") for p in index.parent.rglob("*.html"))
    assert "expect_column_values_to_match_regex" in site
    assert "email" in site


def test_warn_policy_loads_everything_and_reports(sync_env):
    sync_env.crm.admin.reset(bad_emails=3)
    reject_bad_emails(sync_env)
    sync_env.edit_spec(quality__policy="warn")

    dag_run, states = run(sync_env)

    assert dag_run.state == "success", states
    gate = xcom(dag_run, "quality_gate")
    assert gate["passed"] is True and gate["rejected"] == 0
    assert gate["failed_expectations"] == [EMAIL_CHECK]
    assert gate["reason"].startswith(f"policy warn, loading all rows despite: {EMAIL_CHECK} 3 rows")
    assert xcom(dag_run, "load")["inserted"] == 600
    assert sync_env.target().count(sync_env.spec()) == 600
    assert quarantine_table(sync_env).empty


def test_rejected_ratio_just_above_fails_and_exactly_at_passes(sync_env):
    reject_bad_emails(sync_env)
    spec = sync_env.spec()
    assert spec.quality.max_rejected_ratio == 0.01  # 6 of 600 is exactly it, 7 is above
    sync_env.crm.admin.reset(bad_emails=7)

    dag_run, states = run(sync_env)

    assert dag_run.state == "failed", states
    assert states["quality_gate"] == TaskInstanceState.FAILED
    assert sync_env.target().count(spec, active_only=False) == 0
    assert quarantine_table(sync_env).empty  # a failed gate loads nothing and parks nothing

    sync_env.crm.admin.reset(bad_emails=6)
    dag_run, states = run(sync_env)

    assert dag_run.state == "success", states
    gate = xcom(dag_run, "quality_gate")
    assert (gate["checked"], gate["rejected"], gate["passed"]) == (600, 6, True)
    assert sync_env.target().count(spec) == 594
    assert sorted(quarantine_table(sync_env)["crm_id"]) == sorted(bad_email_ids(spec, 6))


def test_table_level_failure_blocks_even_under_quarantine(sync_env, capsys):
    # a mapping mistake: the key built from the country is shared by many contacts
    sync_env.edit_spec(mapping__customer_number__transforms=[{"type": "template", "template": "HS-C-{country}"}])
    assert sync_env.spec().quality.policy == "quarantine"

    dag_run, states = run(sync_env)

    assert dag_run.state == "failed", states
    assert states["quality_gate"] == TaskInstanceState.FAILED
    assert states["load"] == TaskInstanceState.UPSTREAM_FAILED
    assert sync_env.target().count(sync_env.spec(), active_only=False) == 0
    assert quarantine_table(sync_env).empty
    assert task_error(capsys, "QualityGateFailed").startswith(
        "conduit.exceptions.QualityGateFailed: table-level expectation failed: "
        "expect_column_values_to_be_unique(customer_number) observed")


def test_reconcile_catches_a_row_deleted_behind_the_syncs_back(sync_env, capsys):
    assert run(sync_env)[0].state == "success"
    spec = sync_env.spec()
    ids = seeded_mapped(spec)["crm_id_text"].tolist()
    with psycopg.connect(os.environ["AIRFLOW_CONN_ERP_DEFAULT"], autocommit=True) as conn:
        deleted = conn.execute(f'DELETE FROM "{sync_env.schema}".erp_customers WHERE customer_number = %s',
                               (f"HS-C-{ids[5]}",)).rowcount
    assert deleted == 1
    crm = sync_env.crm
    crm.admin.modify(ids[0], {"firstname": "Changed"}, lastmodifieddate_ms=crm.admin.clock_ms() - 120_000)

    dag_run, states = run(sync_env)

    assert dag_run.state == "failed", states
    assert states["load"] == TaskInstanceState.SUCCESS
    assert states["reconcile"] == TaskInstanceState.FAILED
    assert dag_run.get_task_instance("reconcile").try_number == 1  # ReconciliationError: no retry
    assert xcom(dag_run, "load")["updated"] == 1
    text = task_error(capsys, "ReconciliationError")
    assert "the ERP holds 599 active customers but the CRM has 600 created before the run" in text
    assert "1 missing" in text
