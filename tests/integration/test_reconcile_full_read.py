"""Reconciliation after a full read: the ERP's active rows must equal the staged ones, by count and
key checksum; a record quarantined in a full read keeps its last good version (it is not a delete).
Real stand-in over HTTP, real PostgreSQL, the operators' step functions and the real DAG."""

from __future__ import annotations

import os

import psycopg
import pytest
from sync_helpers import crm_hook, crm_ids, crm_source, extract_and_transform, run_ok, staging_dir, xcom

from conduit.exceptions import ReconciliationError
from conduit.pipeline import steps

pytestmark = pytest.mark.postgres


def erp_sql(env, sql: str, params=()) -> int:
    with psycopg.connect(os.environ["AIRFLOW_CONN_ERP_DEFAULT"], autocommit=True) as conn:
        return conn.execute(sql.format(table=f'"{env.schema}".erp_customers'), params).rowcount


def full_sync(env, tmp_path, name: str):
    """One full read (extract, transform, gate, load) by the steps; returns its staging and summary."""
    spec, target, hook = env.spec(), env.target(), crm_hook()
    staging = staging_dir(tmp_path, name)
    summary = extract_and_transform(hook, target, spec, staging, full=True)
    steps.load(target, spec, staging, run_id=name, watermark_ms=summary["watermark_ms"], full_refresh=True)
    return staging, summary


def test_a_clean_full_read_reconciles_by_key_checksum(sync_env, tmp_path):
    staging, summary = full_sync(sync_env, tmp_path, "full-1")

    result = steps.reconcile(crm_source(sync_env.spec()), sync_env.target(), sync_env.spec(), staging,
                             upper_ms=summary["watermark_ms"], full_read=True)

    assert result["key_checksum_match"] is True
    assert result["key_checksum_staged"] == result["key_checksum_erp"]
    assert result["key_checksum_staged"].startswith("600:")
    assert result["staged_checked"] == 600 and result["staged_mismatched"] == 0


def test_an_extra_active_row_after_a_full_read_fails(sync_env, tmp_path):
    staging, summary = full_sync(sync_env, tmp_path, "full-1")
    erp_sql(sync_env, "INSERT INTO {table} (customer_number, crm_id, row_hash, source_modified_at, active, "
                      "created_at, updated_at, last_run_id) "
                      "VALUES ('HS-C-999', 999, 'ff', now(), true, now(), now(), 'someone')")

    with pytest.raises(ReconciliationError, match=r"holds 601 active customers outside quarantine but the run "
                                                  r"staged 600: 1 written behind the sync's back"):
        steps.reconcile(crm_source(sync_env.spec()), sync_env.target(), sync_env.spec(), staging,
                        upper_ms=summary["watermark_ms"], full_read=True)


def test_a_row_changed_behind_the_syncs_back_is_named(sync_env, tmp_path):
    staging, summary = full_sync(sync_env, tmp_path, "full-1")
    key = f"HS-C-{crm_ids(sync_env.spec())[7]}"
    assert erp_sql(sync_env, "UPDATE {table} SET row_hash = 'tampered' WHERE customer_number = %s", (key,)) == 1

    with pytest.raises(ReconciliationError, match=rf"1 of 600 loaded rows differ in the ERP \(customer_number: {key}\)"):
        steps.reconcile(crm_source(sync_env.spec()), sync_env.target(), sync_env.spec(), staging,
                        upper_ms=summary["watermark_ms"], full_read=True)


def test_a_record_that_appears_twice_in_one_full_read_counts_once(sync_env, tmp_path):
    """A webhook-named record is read by id beside the full read: the newest version counts."""
    spec, target, hook = sync_env.spec(), sync_env.target(), crm_hook()
    staging, summary = full_sync(sync_env, tmp_path, "full-1")
    first = crm_ids(spec)[0]
    webhook = {"kind": "ids", "ids": [first], "mode": "full", "watermark_ms": summary["watermark_ms"]}
    steps.extract_item(crm_source(spec, hook), staging, webhook)
    assert steps.transform(spec, staging)["superseded_reads"] == 1  # staged once (issue 16)
    assert staging.count("mapped") == 600

    result = steps.reconcile(crm_source(spec, hook), target, spec, staging, upper_ms=summary["watermark_ms"],
                             full_read=True)

    assert result["key_checksum_match"] is True and result["key_checksum_staged"].startswith("600:")


def test_a_full_read_keeps_the_last_good_version_of_a_quarantined_record(sync_env):
    """Under ``quarantine`` a record that turned bad is parked, not deleted, and reconcile agrees.
    (An unparseable email rejects here: the flagship's ``on_invalid: null`` would load it as a defect.)"""
    sync_env.edit_spec(mapping__email__transforms=[{"type": "email"}])
    spec, target, crm = sync_env.spec(), sync_env.target(), sync_env.crm
    run_ok(sync_env)
    bad_id = crm_ids(spec)[3]
    before = target.fetch_rows(spec, keys=[f"HS-C-{bad_id}"]).iloc[0]
    crm.admin.modify(bad_id, {"email": "no.at.sign.example.com"})

    dag_run = run_ok(sync_env, conf={"full_refresh": True})

    assert xcom(dag_run, "quality_gate")["rejected"] == 1
    assert xcom(dag_run, "load")["deleted"] == 0
    after = target.fetch_rows(spec, keys=[f"HS-C-{bad_id}"]).iloc[0]
    assert bool(after["active"]) and after["email"] == before["email"] and after["row_hash"] == before["row_hash"]
    reconciled = xcom(dag_run, "reconcile")
    assert reconciled["key_checksum_match"] is True and reconciled["key_checksum_staged"].startswith("599:")
    assert target.count(spec) == 600
