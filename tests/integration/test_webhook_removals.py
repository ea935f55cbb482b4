"""Records the CRM no longer has, named by webhooks: a GDPR erasure (``contact.privacyDeletion``)
and the records a merge took away (``contact.merge``'s ``mergedObjectIds``) leave the ERP in the
run the events start, per the spec's ``delete_mode``, as a full read would remove them; a record an
event names that the CRM still has (a merge's survivor, a changed record) stays, and an archived
one is deleted once, by the archived listing.

Found: such a run only read the named ids; the erased and merged-away customers stayed active in the
ERP until the weekly full read (and the merge's merged ids never even reached the stream)."""

from __future__ import annotations

import json
import time

import pytest
from airflow.sdk import DagRunState
from airflow_runs import (
    dag_runs,
    forget_asset_events,
    forget_dag_runs,
    run_existing_dagrun,
    scheduler_creates_and_starts_runs,
    stored_xcom,
)
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sync_helpers import (
    DAG_ID,
    active_rows,
    crm_ids,
    crm_source,
    extract_and_map,
    extract_summary,
    run_ok,
    xcom,
)
from test_webhook_triggered_sync import PUBLIC, SECRET, watcher_fires_once, webhook_env  # noqa: F401

from conduit.triggers.redis_events import crm_changes_asset
from conduit.webhooks.app import webhook_app
from conduit.webhooks.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_v3

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def removal_env(webhook_env):  # noqa: F811
    """``webhook_env`` without other tests' runs of the sync and events of its webhook asset: the
    session's metadata DB is shared, and each webhook test expects the one asset-triggered run it
    started, triggered by its own event."""
    def forget():
        forget_dag_runs(DAG_ID)
        forget_asset_events(crm_changes_asset(DAG_ID))

    forget()
    yield webhook_env
    forget()


def event(n: int, kind: str, object_id: str, **extra) -> dict:
    return {"eventId": n, "objectId": int(object_id), "subscriptionType": f"contact.{kind}",
            "occurredAt": int(time.time() * 1000), "portalId": 62515, "subscriptionId": 1, "appId": 1,
            "attemptNumber": 0, **extra}


def merge_event(n: int, primary: str, merged: str) -> dict:
    """HubSpot's merge event: the survivor in objectId/primaryObjectId/newObjectId, the others in mergedObjectIds."""
    return event(n, "merge", primary, primaryObjectId=int(primary), mergedObjectIds=[int(merged)],
                 newObjectId=int(primary), numberOfPropertiesMoved=1)


def post_events(events: list[dict]) -> None:
    """A v3-signed batch as HubSpot sends it, through the real receiver."""
    api = FastAPI()
    api.mount("/conduit", webhook_app)
    path = f"/conduit/webhooks/hubspot/{DAG_ID}"
    body = json.dumps(events).encode()
    ts = int(time.time() * 1000)
    headers = {SIGNATURE_HEADER: sign_v3(SECRET, "POST", f"{PUBLIC}{path}", body, ts), TIMESTAMP_HEADER: str(ts)}
    with TestClient(api, base_url=PUBLIC) as client:
        response = client.post(path, content=body, headers=headers)
    assert response.status_code == 202, response.text


def erp_row(target, spec, crm_id: str):
    rows = target.fetch_rows(spec)
    (row,) = rows[rows["crm_id"].astype(str) == crm_id].to_dict("records")
    return row


@pytest.mark.redis
def test_a_webhook_run_removes_erased_and_merged_away_customers_and_keeps_live_ones(removal_env):
    env = removal_env
    spec, crm, target = env.spec(), env.crm, env.target()
    run_ok(env)  # the full sync: the ERP holds every contact, the watermark is set
    erased, survivor, merged, changed, archived = crm_ids(spec)[10:15]
    watermark_before = target.read_watermark(spec).ts_ms

    crm.admin.delete(erased)  # GDPR: gone for good, never listed as archived
    crm.admin.merge(survivor, merged)  # the survivor keeps its id; the merged record is gone
    crm.admin.modify(changed, {"firstname": "Still-here"})
    crm.admin.archive(archived)  # restorable: the archived listing's business
    post_events([event(1, "privacyDeletion", erased), merge_event(2, survivor, merged),
                 event(3, "propertyChange", changed, propertyName="firstname", propertyValue="Still-here"),
                 event(4, "deletion", archived)])
    payload = watcher_fires_once()
    assert set(payload["object_ids"]) == {erased, survivor, merged, changed, archived}
    scheduler_creates_and_starts_runs()
    (run,) = dag_runs(DAG_ID, run_type="asset_triggered")
    state, states = run_existing_dagrun(env.dag(), run["run_id"])
    assert state == DagRunState.SUCCESS, states

    from airflow.models.dagrun import DagRun

    (dag_run,) = DagRun.find(dag_id=DAG_ID, run_id=run["run_id"])
    plan = stored_xcom(DAG_ID, run["run_id"], "plan", key="plan")
    assert plan["deleted"] == 3, plan  # the erased, the merged-away and the archived customer: in the plan
    assert sorted(row["crm_id"] for row in plan["samples"]["delete"]) == sorted(
        int(i) for i in (erased, merged, archived))
    assert extract_summary(dag_run)["gone_records"] == 2  # erased and merged away: confirmed by the CRM
    load = xcom(dag_run, "load")
    assert load["deleted"] == 3, load

    for gone in (erased, merged, archived):  # soft: deactivated and dated, as a full read would
        row = erp_row(target, spec, gone)
        assert not row["active"] and row["deleted_at"] is not None, (gone, row)
    active = active_rows(target, spec).set_index("crm_id")
    assert active.loc[int(changed), "first_name"] == "Still-here"
    assert int(survivor) in active.index  # the merge's survivor stays (read and updated)
    assert len(active) == len(crm_ids(spec))  # the ERP's active customers are the CRM's live records
    assert target.read_watermark(spec).ts_ms > watermark_before  # the watermark moves as in any run


def run_steps(env, tmp_path, name: str, object_ids: list[str]):
    """One webhook-started run's steps up to the gate (which must pass), as the operators call them."""
    from conduit.pipeline import steps

    run, staging = extract_and_map(env, tmp_path, name, object_ids)
    spec, target = env.spec(), env.target()
    suite = env.include / "expectations" / spec.quality.suite
    _, decision, _ = steps.gate(target, spec, staging, suite, run_id=name, full_extract=False)
    assert decision.load
    return run, staging


def test_an_erasure_is_a_planned_hard_delete_that_waits_for_approval(sync_env, tmp_path):
    """``delete_mode: hard`` removes the erased customer's row; the delete is in the plan, and the
    spec's ``approval.max_delete_ratio`` judges it like any other delete. Named ids the CRM still
    has, or never had, delete nothing."""
    from conduit.pipeline import steps
    from conduit.pipeline.plan import approval_reason

    env = sync_env
    env.edit_spec(target__delete_mode="hard", approval={"max_update_ratio": 0.5, "max_delete_ratio": 0.001})
    spec, crm, target = env.spec(), env.crm, env.target()
    run_ok(env)
    erased, live = crm_ids(spec)[20:22]
    before = target.count(spec)
    crm.admin.delete(erased)

    run, staging = run_steps(env, tmp_path, "erasure", [erased, live, "999999999"])
    plan = steps.plan(target, spec, staging, run_id="erasure")
    assert plan.result.deleted == 1, plan
    assert [row["customer_number"] for row in plan.samples["delete"]] == [f"HS-C-{erased}"]
    assert "would delete (or deactivate) 1 of" in approval_reason(plan, spec.approval)
    assert target.count(spec) == before  # planning changed nothing

    dry = steps.load(target, spec, staging, run_id="erasure-dry", watermark_ms=run.watermark_ms, dry_run=True)
    assert dry.deleted == 1 and target.count(spec) == before  # a dry run rolls the delete back

    result = steps.load(target, spec, staging, run_id="erasure", watermark_ms=run.watermark_ms, expected=plan)
    assert result.deleted == 1
    rows = target.fetch_rows(spec)
    assert erased not in rows["crm_id"].astype(str).tolist()  # hard: the row itself is gone
    assert live in active_rows(target, spec)["crm_id"].astype(str).tolist()
    assert target.count(spec) == before - 1
    assert target.read_watermark(spec).ts_ms == run.watermark_ms


def test_only_records_the_crm_has_neither_live_nor_archived_are_gone(sync_env):
    """What the source answers, over HTTP against the stand-in: erased, merged away and never
    there are gone; live, a merge's survivor, archived, and archived-then-restored are not."""
    env = sync_env
    spec, crm = env.spec(), env.crm
    erased, survivor, merged, live, archived, restored = crm_ids(spec)[30:36]
    crm.admin.delete(erased)
    crm.admin.merge(survivor, merged)
    crm.admin.archive(archived)
    crm.admin.archive(restored)
    crm.admin.restore(restored)

    source = crm_source(spec)
    named = [erased, survivor, merged, live, archived, restored, "999999999"]
    assert source.gone_records(named) == [erased, merged, "999999999"]
    assert source.gone_records([]) == []
    many = [str(900_000_000 + i) for i in range(250)]  # more than one batch read (100 ids each)
    assert source.gone_records([live, *many]) == many


def test_an_erased_record_the_window_still_read_is_deleted_and_reconciles(sync_env, tmp_path):
    """HubSpot's search index lags behind an erasure: the run's window search may still return the
    erased record while its read by id does not. The load upserts that row and then deletes it (the
    record is gone for good); reconcile must not then call the deleted row a lost update."""
    from conduit.pipeline import steps

    env = sync_env
    spec, crm, target = env.spec(), env.crm, env.target()
    run_ok(env)
    erased = crm_ids(spec)[40]
    crm.admin.modify(erased, {"firstname": "Changed"}, lastmodifieddate_ms=crm.admin.clock_ms() - 120_000)
    run, staging = run_steps(env, tmp_path, "search-lag", [])  # the window reads the changed record
    assert erased in [str(i) for f in staging.read_frames("mapped", ["crm_id"]) for i in f["crm_id"]]
    crm.admin.delete(erased)  # erased before the run's read by id, which then finds nothing
    assert steps.stage_gone_records(crm_source(spec), staging, {"kind": "ids", "ids": [erased]}, "ids") == 1

    result = steps.load(target, spec, staging, run_id="search-lag", watermark_ms=run.watermark_ms)
    assert result.deleted == 1
    assert erased not in active_rows(target, spec)["crm_id"].astype(str).tolist()
    summary = steps.reconcile(crm_source(spec), target, spec, staging, upper_ms=run.watermark_ms)
    assert summary["staged_mismatched"] == 0 and summary["missing_in_erp"] == 0, summary


def test_a_merge_survivor_that_takes_the_merged_records_key_keeps_its_row(sync_env, tmp_path):
    """A spec keyed by a CRM property (here the e-mail): the merge's survivor, which had none, takes
    the merged-away record's e-mail and so its ERP key. The merged-away record is gone, but its key
    now belongs to the survivor, which this run loads under it: the load must not delete it."""
    from conduit.pipeline import steps

    env = sync_env
    env.edit_spec(mapping__customer_number__transforms=[{"type": "template", "template": "E-{email}"}],
                  target__checks__table={})  # its key is no longer HS-C-<crm_id>
    spec, crm, target = env.spec(), env.crm, env.target()
    survivor, merged = crm_ids(spec)[50:52]
    run_ok(env)
    merged_email = erp_row(target, spec, merged)["email"]
    crm.admin.modify(survivor, {"email": None}, lastmodifieddate_ms=crm.admin.clock_ms() - 120_000)
    crm.admin.merge(survivor, merged)  # the survivor takes the merged record's e-mail: its key

    run, staging = run_steps(env, tmp_path, "merge-key", [survivor, merged])
    result = steps.load(target, spec, staging, run_id="merge-key", watermark_ms=run.watermark_ms)
    rows = active_rows(target, spec)
    held = rows[rows["customer_number"] == f"E-{merged_email}"]
    assert held["crm_id"].astype(str).tolist() == [survivor], (result, held)
    assert merged not in rows["crm_id"].astype(str).tolist()
