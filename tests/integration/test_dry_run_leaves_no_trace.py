"""A dry run and a plan_only run change nothing: not the ERP rows and watermark, and not the sync's
state beside them, the quarantine and the defects. The quality gate still decides, stages
rejected/ (the plan and the rolled-back load leave those rows out) and reports what a real run
would park and record. Written quarantine entries would be "open": a later
``conduit_quarantine_replay`` would load records into an ERP no real run touched.

Real sync DAG via ``dag.test()``, the stand-in CRM over HTTP, PostgreSQL."""

from __future__ import annotations

import pytest
from airflow_runs import asset_events, stored_xcom
from sync_helpers import quarantine_table, run_dag, run_ok, xcom

from conduit.lineage.assets import erp_table_asset
from conduit.targets.defects import read_defects

pytestmark = pytest.mark.postgres

BAD_EMAILS = 4
JUNK = {"junk_phones": 0.10}  # phone defects: records that load, with a value recorded as a defect
MODES = pytest.mark.parametrize("conf", [{"dry_run": True}, {"plan_only": True}], ids=["dry_run", "plan_only"])


def dirty_crm(env, **junk) -> None:
    env.edit_spec(mapping__email__transforms=[{"type": "email"}])  # keep_raw: the suite rejects a bad email
    env.crm.admin.reset(bad_emails=BAD_EMAILS, **junk)


def events_of(env, dag_run) -> list:
    return [e for e in asset_events(erp_table_asset(env.spec())) if e[3] == dag_run.run_id]


@MODES
def test_a_dry_or_plan_only_run_reports_what_it_would_quarantine_and_writes_nothing(sync_env, conf):
    env = sync_env
    dirty_crm(env, **JUNK)
    spec, target = env.spec(), env.target()

    dry, states = run_dag(env, conf=conf)
    assert dry.state == "success", states

    # nothing persists: rows, watermark, quarantine, defects, asset events
    assert target.count(spec, active_only=False) == 0 and target.read_watermark(spec) is None
    assert quarantine_table(env).empty and target.open_quarantine(spec) == []
    assert read_defects(target, spec) == []
    assert events_of(env, dry) == []
    # ... yet the gate decided and reports what a real run would write
    gate = xcom(dry, "quality_gate")
    assert (gate["checked"], gate["rejected"], gate["passed"]) == (600, BAD_EMAILS, True)
    assert gate["defects_opened"] > 0  # counted in a rolled-back transaction
    assert gate["dry_run"] is True
    # rejected/ was staged: the plan leaves the rejected records out
    assert stored_xcom(dry.dag_id, dry.run_id, "plan", key="plan")["inserted"] == 600 - BAD_EMAILS

    real = run_ok(env)  # the same data for real: parks and records exactly what the dry run reported
    real_gate = xcom(real, "quality_gate")
    assert real_gate["dry_run"] is False
    assert (real_gate["rejected"], real_gate["defects_opened"]) == (gate["rejected"], gate["defects_opened"])
    assert len({e["crm_id"] for e in target.open_quarantine(spec)}) == BAD_EMAILS
    assert len(read_defects(target, spec, open_only=True)) == gate["defects_opened"]
    assert target.count(spec) == 600 - BAD_EMAILS
    assert len(events_of(env, real)) == 1  # the query above is no vacuous check

