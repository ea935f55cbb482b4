"""Issue 15: the HubSpot account's request budget against the stand-in enforcing HubSpot's limits
(shrunk so the tests take seconds): four extract work items in four OS processes share one budget
in the real Redis and stay under the limits; a daily-limit stop loses nothing on the next run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sync_helpers import assert_erp_equals_crm, crm_hook, extract_and_transform, load, staged_ids, staging_dir

from conduit.exceptions import CrmDailyLimitReached
from conduit.standin.testing import run_standin

REPO_SPEC = Path(__file__).resolve().parents[2] / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"
# 8 requests per 1 s window and 3 searches a second: HubSpot's windows, shrunk so that the budget (not
# the CPU of a busy 2-core machine) binds and the test takes seconds
SMALL = {"interval_max": 8, "interval_ms": 1000, "search_per_second": 3}

WORKER = """
import json, sys, time
import pyarrow.parquet  # imported before the start, as a warm worker has it
import redis
from conduit.pipeline.staging import RunStaging
from conduit.pipeline.steps import extract_item
from conduit.sources.hubspot.hook import HubSpotHook
from conduit.sources.hubspot.source import HubSpotSource
from conduit.specs.model import load_spec

spec_path, item, staging, redis_url, barrier, workers = sys.argv[1:]
spec = load_spec(spec_path)
source = HubSpotSource(spec.source, hook=HubSpotHook(hubspot_conn_id=spec.source.conn_id))
source.hook.budget
# start together, once every worker has imported what it needs (imports take seconds on a busy machine)
gate = redis.Redis.from_url(redis_url)
gate.incr(barrier)
gate.expire(barrier, 300)
while int(gate.get(barrier)) < int(workers):
    time.sleep(0.01)
started = time.time()
result = extract_item(source, RunStaging(staging), json.loads(item))
print(json.dumps({**result, "started": started, "ended": time.time(), "waited": source.hook.budget.waited_s}))
"""


def set_limits(crm, **limits) -> dict:
    return crm.admin.enforce_rate_limits(**limits)


def limiter_state(crm) -> dict:
    return crm.admin.rate_limits()


def hubspot_conn(crm, **extra) -> str:
    return json.dumps({"conn_type": "hubspot", "host": crm.base_url, "password": crm.token,
                       "extra": {"api_version": "2026-09", "max_retries": 6, "backoff_max": 2, **extra}})


@pytest.mark.redis
def test_four_extract_processes_share_one_budget_without_a_429_storm(redis_url, tmp_path, monkeypatch):
    from conduit.pipeline.run_plan import RunPlan
    from conduit.pipeline.staging import RunStaging
    from conduit.pipeline.steps import plan_extract
    from conduit.sources.hubspot.budget import RedisBudget, account_key
    from conduit.sources.hubspot.source import HubSpotSource
    from conduit.specs.model import load_spec

    spec = load_spec(REPO_SPEC)
    with run_standin(contacts=3000, seed=5, slow_ms=30, enforce_rate_limits=True) as crm:
        set_limits(crm, interval_max=10_000, daily_max=1_000_000)
        monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", hubspot_conn(crm))
        crm_ids = sorted(r["id"] for page in crm_hook().iter_list_pages("contacts", ["email"]) for r in page)
        assert len(crm_ids) == 3000

        set_limits(crm, **SMALL, daily_max=1_000_000)  # fresh windows, nothing used today
        monkeypatch.setenv("AIRFLOW_CONN_BUDGET_REDIS", redis_url)
        monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", hubspot_conn(
            crm, budget_redis_conn_id="budget_redis", rate_limit_daily_max=1_000_000,
            **{f"rate_limit_{k}": v for k, v in SMALL.items()}))
        import redis

        hook = crm_hook()
        RedisBudget(hook.budget.limits, redis.Redis.from_url(redis_url), account_key(crm.base_url, crm.token)).clear()
        items = plan_extract(HubSpotSource(spec.source, hook=hook), RunPlan(None, 0), parallelism=4)
        extracts = [i for i in items if i["kind"] != "archived"]
        assert [i.get("via") for i in extracts] == ["list", None, None, None]

        staging = tmp_path / "staging"
        barrier = f"conduit-test-barrier-{uuid.uuid4().hex}"
        workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(REPO_SPEC), json.dumps(item), str(staging),
                                     redis_url, barrier, str(len(extracts))],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
                   for item in extracts]
        results = []
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
        state = limiter_state(crm)
    elapsed = max(r["ended"] for r in results) - min(r["started"] for r in results)  # without the imports

    ids = staged_ids(RunStaging(staging))
    assert len(ids) == len(set(ids)) == 3000 and sorted(ids) == crm_ids  # every record staged exactly once
    sent = sum(r["requests"] for r in results) + hook.requests_sent
    refused = sum(state["refused"].values())
    assert refused <= max(2, sent // 100), state  # pacing, not 429s, kept the pace
    # the four processes together kept to the account's pace, waiting for the shared budget
    assert sum(r["waited"] for r in results) > 0
    assert elapsed >= (sent - hook.requests_sent) / SMALL["interval_max"] - 1, (sent, elapsed)
    print(f"\n{sent} requests ({state['daily_used']} counted by the stand-in), {refused} refused, "
          f"{elapsed:.1f}s, per item (rows, requests, retries, start, seconds, waited): "
          f"{[(r['rows'], r['requests'], r['retries'], round(r['started'] % 100, 2), round(r['ended'] - r['started'], 2), round(r['waited'], 2)) for r in results]}")


@pytest.mark.postgres
def test_a_daily_limit_stop_loses_nothing_on_the_next_run(sync_env, tmp_path, monkeypatch):
    """The in-process budget (no Redis) learns from HubSpot's headers that the day's requests are
    used up and stops the incremental run with CrmDailyLimitReached before HubSpot refuses one; the
    watermark stays; after the reset the next run loads everything the stopped one missed."""
    crm, spec = sync_env.crm, sync_env.spec()
    target = sync_env.target()
    set_limits(crm, interval_max=1000, interval_ms=10_000, daily_max=1_000_000)
    monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", hubspot_conn(crm, rate_limit_tier="professional"))

    first_staging = staging_dir(tmp_path, "first")
    before = crm.admin.stats()["requests"]
    first = extract_and_transform(crm_hook(), target, spec, first_staging, full=True)
    after = crm.admin.stats()["requests"]
    # the full read (one task: the spec's parallelism is 1) used both endpoints at once
    assert after["contacts.list"] - before.get("contacts.list", 0) >= 3  # the live ids below the boundary (and archived)
    assert after["contacts.search"] - before.get("contacts.search", 0) >= 4  # the plan's, and the ids above it
    load(target, spec, first_staging, first, run_id="first")
    assert_erp_equals_crm(target, spec, crm_hook())
    watermark = target.read_watermark(spec)
    changed = crm.admin.bulk_modify(count=350, properties={"company": "After The Limit"}, seed=3,
                                    lastmodifieddate_ms=crm.admin.clock_ms() - 120_000)["ids"]

    set_limits(crm, interval_max=1000, interval_ms=10_000, daily_max=1)  # one request left today
    with pytest.raises(CrmDailyLimitReached) as info:
        extract_and_transform(crm_hook(), target, spec, staging_dir(tmp_path, "stopped"))
    assert info.value.remaining == 0 and info.value.limit == 1 and "resets at" in str(info.value)
    assert target.read_watermark(spec) == watermark  # nothing loaded, the watermark did not move
    assert limiter_state(crm)["refused"] == {}  # the budget stopped it, from the headers: HubSpot refused nothing
    # a hook without a budget stops at HubSpot's daily 429 at once, without retrying for hours
    monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_PLAIN", hubspot_conn(crm))
    plain = crm_hook("hubspot_plain")
    with pytest.raises(CrmDailyLimitReached):
        plain.request("GET", plain.objects_path("contacts"), params={"limit": 1})
    assert plain.retries == 0

    set_limits(crm, interval_max=1000, interval_ms=10_000, daily_max=1_000_000)  # the next day
    staging = staging_dir(tmp_path, "next")
    summary = extract_and_transform(crm_hook(), target, spec, staging)
    assert summary["mode"] == "incremental" and set(changed) <= set(staged_ids(staging))
    load(target, spec, staging, summary, run_id="next")
    got = assert_erp_equals_crm(target, spec, crm_hook())
    assert (got["company_name"] == "After The Limit").sum() == len(changed)


@pytest.mark.postgres
def test_the_dag_stops_at_the_daily_limit_without_retrying_and_the_next_run_resumes(sync_env, monkeypatch):
    """The same through the DAG (dag.test()): the run that meets the day's limit fails at once with
    the limit's message (no retry: a retry before the reset would fail alike), loads nothing and
    leaves the watermark; the first run after the reset loads what it missed, nothing twice."""
    from airflow.sdk import TaskInstanceState
    from sync_helpers import run_dag, run_ok, xcom

    crm, spec, target = sync_env.crm, sync_env.spec(), sync_env.target()
    set_limits(crm, interval_max=1000, interval_ms=10_000, daily_max=1_000_000)
    monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", hubspot_conn(crm, rate_limit_tier="professional"))
    run_ok(sync_env)
    assert_erp_equals_crm(target, spec, crm_hook())
    watermark, rows = target.read_watermark(spec), target.count(spec)
    changed = crm.admin.bulk_modify(count=120, properties={"company": "After The Limit"}, seed=4,
                                    lastmodifieddate_ms=crm.admin.clock_ms() - 120_000)["ids"]

    set_limits(crm, interval_max=1000, interval_ms=10_000, daily_max=1)  # one request left today
    stopped, states = run_dag(sync_env)
    assert stopped.state == "failed", states
    failed = [ti for ti in stopped.get_task_instances() if ti.state == TaskInstanceState.FAILED]
    assert failed and all(ti.try_number == 1 for ti in failed), [(ti.task_id, ti.try_number) for ti in failed]
    assert {ti.task_id for ti in failed} <= {"plan_extract", "extract"}, states  # it stopped at the CRM
    assert states.get("load") != TaskInstanceState.SUCCESS
    # An in-process budget lives as long as its task process: the task after the one that learned "0
    # left" from the headers may ask once; HubSpot's DAILY 429 then stops it at once, never a retry loop
    refused = limiter_state(crm)["refused"]
    assert set(refused) <= {"DAILY"} and sum(refused.values()) <= 1, refused
    assert target.read_watermark(spec) == watermark and target.count(spec) == rows

    set_limits(crm, interval_max=1000, interval_ms=10_000, daily_max=1_000_000)  # the next day
    resumed = run_ok(sync_env)
    assert xcom(resumed, "extract")["mode"] == "incremental"
    got = assert_erp_equals_crm(target, spec, crm_hook())
    assert (got["company_name"] == "After The Limit").sum() == len(changed)


def test_redis_out_of_reach_paces_the_extract_in_process_instead_of_failing_it(tmp_path, monkeypatch):
    """The budget's Redis down (nothing listens at its address): the extract still reads every
    record, paced by the process alone (what a connection without Redis gets), and the stand-in
    enforcing the account's limits refuses nothing."""
    import socket

    from conduit.pipeline.run_plan import RunPlan
    from conduit.pipeline.staging import RunStaging
    from conduit.pipeline.steps import extract_item, plan_extract
    from conduit.sources.hubspot.budget import RedisBudget
    from conduit.sources.hubspot.source import HubSpotSource
    from conduit.specs.model import load_spec

    with socket.socket() as probe:  # a free port: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    spec = load_spec(REPO_SPEC)
    with run_standin(contacts=1500, seed=6, enforce_rate_limits=True) as crm:
        set_limits(crm, interval_max=20, interval_ms=1000, search_per_second=3, daily_max=1_000_000)
        monkeypatch.setenv("AIRFLOW_CONN_BUDGET_REDIS_DOWN", f"redis://127.0.0.1:{dead_port}/0")
        monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", hubspot_conn(
            crm, budget_redis_conn_id="budget_redis_down", rate_limit_interval_max=20, rate_limit_interval_ms=1000,
            rate_limit_search_per_second=3, rate_limit_daily_max=1_000_000))
        hook = crm_hook()
        source = HubSpotSource(spec.source, hook=hook)
        staging = RunStaging(tmp_path / "staging")
        items = plan_extract(source, RunPlan(None, 0), parallelism=3)
        rows = sum(extract_item(source, staging, item)["rows"] for item in items)
        state = limiter_state(crm)
    assert isinstance(hook.budget, RedisBudget) and hook.budget.local is not None
    assert rows == 1500 and len(set(staged_ids(staging))) == 1500
    assert state["refused"] == {}, state  # paced, not refused
