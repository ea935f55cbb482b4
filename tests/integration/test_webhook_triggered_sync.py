"""A webhook-started sync run, end to end in one process: a signed HubSpot webhook -> the real
receiver -> Redis -> the sync's AssetWatcher trigger (the Trigger row the dag-processor made,
fired through ``Trigger.submit_event`` as the triggerer does) -> the asset-triggered run the
scheduler's code creates -> that run executed against the stand-in CRM and PostgreSQL.

Issue 16: a record changed longer than the lag ago is in the incremental window *and* named by
the event; both reads used to reach the gate and fail it as a duplicate ERP key."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis
from airflow.sdk import DagRunState
from airflow_runs import (
    dag_runs,
    register_dags,
    run_existing_dagrun,
    scheduler_creates_and_starts_runs,
    set_paused,
    stored_xcom,
)
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sync_helpers import DAG_ID, active_rows, crm_ids, crm_source, extract_summary, run_ok, staging_dir, xcom

from conduit.triggers.redis_events import crm_changes_asset_name
from conduit.webhooks.app import SECRET_ENV, webhook_app
from conduit.webhooks.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_v3
from conduit.webhooks.stream import REDIS_URL_ENV, stream_key

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SECRET = "webhook-s3cret"
PUBLIC = "https://airflow.example.com"


def forget_stream(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as store:
        store.delete(stream_key(DAG_ID))


def nightly_run_not_due(dag_id: str) -> None:
    """The cron half of the schedule is not due (its 02:00 run would otherwise be created beside
    the webhook's and, with max_active_runs=1, start first)."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagModel).where(DagModel.dag_id == dag_id).values(next_dagrun_create_after=None))


@pytest.fixture
def webhook_env(sync_env, redis_url, monkeypatch):
    """The sync deployed with webhooks on: DAGs registered, the sync unpaused (so its watcher's
    trigger exists), the receiver's secret and Redis configured."""
    monkeypatch.setenv(REDIS_URL_ENV, redis_url)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    forget_stream(redis_url)
    register_dags()
    set_paused(DAG_ID, False)
    register_dags()  # the dag-processor creates watcher triggers for unpaused DAGs only
    nightly_run_not_due(DAG_ID)
    yield sync_env
    set_paused(DAG_ID, True)
    forget_stream(redis_url)


def post_webhook(object_ids: list[str]) -> None:
    """What HubSpot sends: a v3-signed batch of property-change events."""
    api = FastAPI()
    api.mount("/conduit", webhook_app)
    path = f"/conduit/webhooks/hubspot/{DAG_ID}"
    body = json.dumps([{"eventId": n, "objectId": int(oid), "subscriptionType": "contact.propertyChange",
                        "occurredAt": int(time.time() * 1000)} for n, oid in enumerate(object_ids)]).encode()
    ts = int(time.time() * 1000)
    headers = {SIGNATURE_HEADER: sign_v3(SECRET, "POST", f"{PUBLIC}{path}", body, ts), TIMESTAMP_HEADER: str(ts)}
    with TestClient(api, base_url=PUBLIC) as client:
        response = client.post(path, content=body, headers=headers)
    assert response.status_code == 202, response.text


def watcher_fires_once() -> dict:
    """The triggerer's part: run the watcher trigger stored for the asset until it fires, hand the
    event to ``Trigger.submit_event`` (which registers the asset event), let the trigger ack."""
    from airflow._shared.module_loading import import_string
    from airflow.models.asset import AssetModel
    from airflow.models.trigger import Trigger
    from airflow.serialization.decoders import smart_decode_trigger_kwargs
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.name == crm_changes_asset_name(DAG_ID)))
        (trigger,) = asset.triggers
        trigger_id, classpath, kwargs = trigger.id, trigger.classpath, trigger.kwargs
    watcher = import_string(classpath)(**{k: smart_decode_trigger_kwargs(v) for k, v in kwargs.items()})

    async def fire():
        events = watcher.run()
        event = await asyncio.wait_for(anext(events), 30)
        Trigger.submit_event(trigger_id, event)
        with pytest.raises(TimeoutError):  # asked for more: acks the batch, nothing else fires
            await asyncio.wait_for(anext(events), 1.0)
        return event.payload

    return asyncio.run(fire())


def test_a_webhook_run_reading_a_record_twice_loads_it_once(webhook_env):
    from airflow.models.dagrun import DagRun

    env = webhook_env
    spec, crm = env.spec(), env.crm
    run_ok(env)  # the full sync: the ERP holds every contact, the watermark is set
    a, b = crm_ids(spec)[3:5]
    now = crm.admin.clock_ms()
    crm.admin.modify(a, {"firstname": "Alice-new"}, lastmodifieddate_ms=now - 90_000)  # older than the lag
    crm.admin.modify(b, {"firstname": "Bob-new"})  # just now: above the window's upper bound

    post_webhook([a, b])
    payload = watcher_fires_once()
    assert payload["object_ids"] == [a, b]
    scheduler_creates_and_starts_runs()
    (run,) = dag_runs(DAG_ID, run_type="asset_triggered")
    state, states = run_existing_dagrun(env.dag(), run["run_id"])

    assert state == DagRunState.SUCCESS, states
    plan = stored_xcom(DAG_ID, run["run_id"], "plan_extract")
    (changed,) = [i for i in plan if i["kind"] == "changed"]
    assert changed["window"][0] <= now - 90_000 < changed["window"][1] <= now  # A is in the window, B not
    assert [i["ids"] for i in plan if i["kind"] == "ids"] == [[a, b]]

    (dag_run,) = DagRun.find(dag_id=DAG_ID, run_id=run["run_id"])
    extract, transform = extract_summary(dag_run), xcom(dag_run, "transform")
    window_rows = extract["rows"] - extract["webhook_records"]
    assert extract["webhook_records"] == 2 and window_rows >= 1
    assert transform["superseded_reads"] == 1  # A: read by the window and by id, staged once
    assert transform["mapped"] == window_rows + 1 == xcom(dag_run, "quality_gate")["checked"]
    load = xcom(dag_run, "load")
    assert (load["inserted"], load["updated"]) == (0, 2)

    rows = env.target().fetch_rows(spec)
    assert not rows["customer_number"].duplicated().any()
    changed_rows = active_rows(env.target(), spec).set_index("crm_id").loc[[int(a), int(b)], "first_name"]
    assert changed_rows.tolist() == ["Alice-new", "Bob-new"]


def test_two_crm_records_with_one_erp_key_still_block_when_both_are_read_twice(sync_env, tmp_path):
    """Staging a record once must not hide a real clash: two CRM records whose mapped key is the
    same (here the key is built from the email), each read by the window and by id."""
    from conduit.pipeline import steps
    from conduit.pipeline.cursor import Window
    from conduit.pipeline.run_plan import RunPlan

    sync_env.edit_spec(mapping__customer_number__transforms=[{"type": "template", "template": "E-{email}"}])
    spec, crm, target = sync_env.spec(), sync_env.crm, sync_env.target()
    target.ensure_ready(spec)
    a, b = crm_ids(spec)[3:5]
    now = crm.admin.clock_ms()
    for oid in (a, b):
        crm.admin.modify(oid, {"email": "shared@example.com"}, lastmodifieddate_ms=now - 90_000)
    staging = staging_dir(tmp_path, "clash")
    items = steps.plan_extract(crm_source(spec), RunPlan(Window(now - 600_000, now - 60_000), now),
                               object_ids=[a, b])
    for item in items:
        steps.extract_item(crm_source(spec), staging, item)

    assert steps.transform(spec, staging)["superseded_reads"] == 2
    suite = sync_env.include / "expectations" / spec.quality.suite
    report, decision, summary = steps.gate(target, spec, staging, suite, run_id="clash",
                                           full_extract=False)

    assert not decision.load and summary["passed"] is False
    assert "expect_column_values_to_be_unique(customer_number)" in summary["failed_expectations"]
    (unique,) = [r for r in report.table_results if r.name == "expect_column_values_to_be_unique(customer_number)"]
    clashes = sorted((f.key, str(f.crm_id)) for f in unique.row_failures())
    assert clashes == sorted([("E-shared@example.com", a), ("E-shared@example.com", b)])  # each record once
    assert target.count(spec, active_only=False) == 0 and target.open_quarantine(spec) == []
