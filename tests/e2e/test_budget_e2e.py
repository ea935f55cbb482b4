"""Issue 15 on a real deployment: the four mapped ``extract`` tasks of a full sync run on TWO Celery
workers at once and share the HubSpot account's request budget in Redis, against the stand-in
enforcing HubSpot's limits (shrunk, like tests/integration/test_hubspot_budget.py, so the budget
binds and not the CPU of a busy 2-core box): no 429 storm, and the tasks together keep the
account's pace.

Its own deployment (two workers with two slots each, a HubSpot connection with the budget, a
stand-in with 3,000 contacts); no other test shares it.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import psycopg
import pytest
import requests

from e2e import topology
from e2e.conftest import running_stack
from e2e.harness import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(600)]

DAG_ID = topology.SYNC_DAG_ID
CONTACTS = 3000
# 8 requests per 1 s window and 3 searches a second (HubSpot: 100-250 per 10 s, 5 searches/s)
SMALL = {"interval_max": 8, "interval_ms": 1000, "search_per_second": 3}
# The budget counts a request when it takes the slot, the stand-in when its handler runs: on this
# loaded 2-core box (stand-in, scheduler, two workers and four task processes on two cores) that is
# often more than the default 50 ms later, and with the default 1-2 of ~30 requests were refused
# per run. The margin covers that delay, as it covers the network's in front of HubSpot.
MARGIN_MS = 250
DAILY_MAX = 1_000_000
BUDGET_CONN_ID = "budget_redis"
WORKERS, SLOTS = 2, 2


def budget_redis_url(redis_url: str) -> str:
    """The e2e suite's Redis database (the harness' broker): the budget's keys there name the
    account, a hash of the stand-in's URL and its per-deployment token, so no other run shares them."""
    return f"{redis_url.rsplit('/', 1)[0]}/{os.environ.get('CONDUIT_E2E_REDIS_DB', '13')}"


@pytest.fixture(scope="module")
def budget_stack(request, pg_server_dsn, redis_url, e2e_artifacts):
    budget = {"budget_redis_conn_id": BUDGET_CONN_ID, "rate_limit_daily_max": DAILY_MAX,
              "rate_limit_margin_ms": MARGIN_MS, **{f"rate_limit_{name}": value for name, value in SMALL.items()}}
    # Without cron scheduling: unpausing would otherwise start tonight's slot beside the triggered run.
    # Without OpenLineage: its events cost each task 2-3 s on this box (a third of the run), and
    # this module is about the budget (test_sync_e2e checks the lineage).
    yield from running_stack(request, pg_server_dsn, redis_url, e2e_artifacts, workers=WORKERS,
                             worker_concurrency=SLOTS, hubspot_extra=budget,
                             extra_env={f"AIRFLOW_CONN_{BUDGET_CONN_ID.upper()}": budget_redis_url(redis_url),
                                        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                                        "AIRFLOW__OPENLINEAGE__DISABLED": "True"})


@pytest.fixture
def budget_keys(budget_stack: AirflowStack, redis_url: str):
    """The account's budget keys in Redis: none before the run, deleted after it (the daily count
    would otherwise stay for two days)."""
    import redis

    from conduit.sources.hubspot.budget import account_key

    client = redis.Redis.from_url(budget_redis_url(redis_url))
    pattern = f"conduit:hubspot-budget:{account_key(budget_stack.standin_url, budget_stack.standin_token)}:*"

    def clear() -> None:
        for key in client.scan_iter(match=pattern):
            client.delete(key)

    clear()
    try:
        yield client, pattern
    finally:
        clear()
        client.close()


def live_contact_ids(stack: AirflowStack) -> list[int]:
    """Every live contact id, through the stand-in's list endpoint (before it enforces the limits)."""
    ids, after = [], None
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {stack.standin_token}"
        while True:
            params = {"limit": 100, "properties": "email", **({"after": after} if after else {})}
            reply = session.get(f"{stack.standin_url}/crm/v3/objects/contacts", params=params, timeout=30)
            reply.raise_for_status()
            body = reply.json()
            ids += [int(r["id"]) for r in body["results"]]
            after = body.get("paging", {}).get("next", {}).get("after")
            if not after:
                return ids


def erp_crm_ids(stack: AirflowStack) -> tuple[int, list[int]]:
    """(rows, crm ids of the active customers) of the ERP's customer table."""
    with psycopg.connect(stack.erp_dsn()) as conn:
        rows = conn.execute(f"SELECT count(*) FROM public.{topology.ERP_TABLE}").fetchone()[0]
        active = [r[0] for r in conn.execute(f"SELECT crm_id FROM public.{topology.ERP_TABLE} WHERE active")]
    return rows, active


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def task_log_events(stack: AirflowStack, run_id: str, ti: dict) -> list[dict]:
    path = (stack.artifacts / "airflow-logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
            / f"map_index={ti['map_index']}" / f"attempt={ti['try_number']}.log")
    assert path.exists(), f"no task log at {path}"
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def request_span(events: list[dict], where: str) -> tuple[dt.datetime, dt.datetime, str]:
    """When an extract task took up the budget (the hook logs which one at its first request), when
    it had read its last page (the operator's ``extracted`` line), and the budget's log line."""
    budget = [e for e in events if str(e.get("event", "")).startswith("HubSpot request budget")]
    done = [e for e in events if str(e.get("event", "")).startswith("extracted ")]
    assert budget and done, f"{where}: no budget or no 'extracted' line in the task log"
    return _ts(budget[0]["timestamp"]), _ts(done[-1]["timestamp"]), budget[0]["event"]


def executed_by(stack: AirflowStack, ti_id: str) -> list[str]:
    """The workers whose log names the task instance among the workloads it executed (the Celery
    executor logs "Executing workload in Celery: ... ti=TaskInstance(id=UUID('<id>'), ...)")."""
    found = []
    for name in stack.worker_names:
        for line in stack.procs[name].log_path.read_text(errors="replace").splitlines():
            if "Executing workload in Celery" in line and ti_id in line:
                found.append(name)
                break
    return found


def test_four_mapped_extract_tasks_on_two_workers_share_one_budget_without_a_429_storm(budget_stack, budget_keys):
    from conduit.standin.testing import AdminClient

    stack, (budget_redis, budget_pattern) = budget_stack, budget_keys
    crm = AdminClient(stack.standin_url)
    crm.reset(contacts=CONTACTS)
    crm_ids = sorted(live_contact_ids(stack))
    assert len(crm_ids) == CONTACTS
    # the account's limits from now on, with fresh windows and nothing used today
    crm.enforce_rate_limits(**SMALL, daily_max=DAILY_MAX)
    stack.wait_for_dag(DAG_ID)
    stack.unpause(DAG_ID)
    run_id = stack.trigger(DAG_ID, {})["dag_run_id"]
    final = stack.wait_for_run(DAG_ID, run_id, timeout=300)
    assert final["state"] == "success", f"run {run_id} ended {final['state']}:\n" + stack.run_summary(DAG_ID, run_id)
    limiter = crm.rate_limits()

    # no 429 storm (what the shared budget is for): the stand-in refused (almost) nothing
    refused = sum(limiter["refused"].values())
    sent = limiter["daily_used"] + refused  # the limiter started afresh just before the run
    assert refused <= max(2, sent // 100), f"the stand-in refused {refused} of {sent} requests: {limiter}"

    # the ERP holds exactly the CRM's live contacts, each once
    rows, active = erp_crm_ids(stack)
    assert rows == len(active) == len(set(active)) == CONTACTS, (rows, len(active), len(set(active)))
    assert sorted(active) == crm_ids

    # the plan: one list range and three search ranges (map_index 0..3), then the archived listing
    tis = {t["map_index"]: t for t in stack.task_instances(DAG_ID, run_id) if t["task_id"] == "extract"}
    items = {i: stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/extract/{i}",
                          expect=200).json()["rendered_fields"]["item"] for i in tis}
    items = {i: json.loads(v) if isinstance(v, str) else v for i, v in items.items()}
    assert [items[i]["kind"] for i in sorted(items)] == ["range"] * 4 + ["archived"], items
    assert [items[i].get("via") for i in range(4)] == ["list", None, None, None], items
    ranges = [tis[i] for i in range(4)]
    assert all(t["state"] == "success" and t["try_number"] == 1 for t in ranges), ranges

    # really in parallel: at one moment all four were running
    starts, ends = [_ts(t["start_date"]) for t in ranges], [_ts(t["end_date"]) for t in ranges]
    assert max(starts) < min(ends), [(t["map_index"], t["start_date"], t["end_date"]) for t in ranges]

    # on both workers: each task instance in exactly one worker's log, each worker ran some
    ran_on = {t["map_index"]: executed_by(stack, t["id"]) for t in ranges}
    assert all(len(workers) == 1 for workers in ran_on.values()), ran_on
    assert {workers[0] for workers in ran_on.values()} == set(stack.worker_names), ran_on

    # the pace: the four tasks' requests took at least as long as the account's window allows
    results = {i: stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/extract/xcomEntries/"
                                   f"return_value", params={"map_index": i}, expect=200).json()["value"]
               for i in range(4)}
    results = {i: json.loads(v) if isinstance(v, str) else v for i, v in results.items()}
    extract_requests = sum(r["requests"] for r in results.values())
    spans = [request_span(task_log_events(stack, run_id, t), f"extract[{t['map_index']}]") for t in ranges]
    # each of the four took its slots from the one budget in Redis (not one of its own)
    assert all("shared in Redis" in budget for _, _, budget in spans), [budget for _, _, budget in spans]
    extract_s = (max(end for _, end, _ in spans) - min(start for start, _, _ in spans)).total_seconds()
    assert extract_s >= extract_requests / SMALL["interval_max"] - 1, (extract_requests, extract_s)

    # the budget that paced them was the one in Redis: it counted every request of the run
    counted = sum(int(budget_redis.get(key) or 0) for key in budget_redis.scan_iter(match=budget_pattern)
                  if b":daily:" in key)
    assert counted >= limiter["daily_used"] > 0, (counted, limiter)

    per_item = [(i, results[i]["rows"], results[i]["requests"], results[i]["retries"],
                 ran_on[i][0].removeprefix("airflow-"), round((spans[i][1] - spans[i][0]).total_seconds(), 1))
                for i in range(4)]
    print(f"\n{sent} requests ({extract_requests} in the four extracts), {refused} refused {limiter['refused']}, extract "
          f"{extract_s:.1f}s (>= {extract_requests / SMALL['interval_max'] - 1:.1f}s), Redis counted {counted}; "
          f"per item (map_index, rows, requests, retries, worker, seconds): {per_item}")

