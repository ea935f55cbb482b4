"""The flagship sync on a real Airflow deployment: api-server, scheduler, dag-processor, triggerer and
a Celery worker (see harness.py), the stand-in CRM and an ERP PostgreSQL database, driven through
REST API v2 and through the UI in a real Chromium.

The tests share one deployment and run in file order; the last one tears it down and checks that
no process is left behind.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from zoneinfo import ZoneInfo

import psycopg
import pytest
import redis
import requests

from conduit.webhooks.stream import stream_key
from e2e import topology
from e2e.harness import AirflowStack, wait_until
from e2e.ui import log_in, shot

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(600)]

DAG_ID = topology.SYNC_DAG_ID
BERLIN = ZoneInfo("Europe/Berlin")


def _parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _two_am_berlin_around(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(latest 02:00 Berlin <= now, next 02:00 Berlin > now)."""
    local = now.astimezone(BERLIN)
    today = dt.datetime.combine(local.date(), dt.time(2, 0), tzinfo=BERLIN)
    if today <= local:
        return today, dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(2, 0), tzinfo=BERLIN)
    return dt.datetime.combine(local.date() - dt.timedelta(days=1), dt.time(2, 0), tzinfo=BERLIN), today


def standin_contact_count(stack: AirflowStack) -> int:
    """Live contacts in the stand-in CRM, asked through its HubSpot-style search API."""
    resp = requests.post(f"{stack.standin_url}/crm/v3/objects/contacts/search",
                         headers={"Authorization": f"Bearer {stack.standin_token}"},
                         json={"limit": 1, "properties": ["email"]}, timeout=30)
    resp.raise_for_status()
    return int(resp.json()["total"])


def erp_counts(stack: AirflowStack, must_exist: bool = True) -> dict[str, int] | None:
    with psycopg.connect(stack.erp_dsn()) as conn:
        columns = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = %s", (topology.ERP_TABLE,))}
        if not columns and not must_exist:
            return None
        assert columns, f"public.{topology.ERP_TABLE} does not exist in the ERP database"
        active = "count(*) FILTER (WHERE active)" if "active" in columns else "count(*)"
        rows, keys, live = conn.execute(
            f"SELECT count(*), count(DISTINCT customer_number), {active} FROM public.{topology.ERP_TABLE}"
        ).fetchone()
        duplicates = conn.execute(
            f"SELECT count(*) FROM (SELECT crm_id FROM public.{topology.ERP_TABLE} "
            "GROUP BY crm_id HAVING count(*) > 1) d").fetchone()[0]
    return {"rows": rows, "keys": keys, "active": live, "duplicate_crm_ids": duplicates}


def trigger(stack: AirflowStack, conf: dict) -> dict:
    run = stack.trigger(DAG_ID, conf)
    assert run["state"] == "queued" and run["conf"] == conf
    return run


def assert_succeeded(stack: AirflowStack, run_id: str, timeout: float = 240) -> dict:
    final = stack.wait_for_run(DAG_ID, run_id, timeout=timeout)
    assert final["state"] == "success", f"run {run_id} ended {final['state']}:\n" + stack.run_summary(DAG_ID, run_id)
    return final


def test_the_deployment_is_healthy_and_loads_conduit(airflow_stack: AirflowStack):
    health = airflow_stack.api("GET", "/api/v2/monitor/health", expect=200).json()
    for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[part]["status"] == "healthy", health
    dag = airflow_stack.wait_for_dag(DAG_ID)
    assert dag["is_paused"] is True  # DAGS_ARE_PAUSED_AT_CREATION, like the compose file
    assert airflow_stack.api("GET", "/api/v2/importErrors", expect=200).json()["total_entries"] == 0
    plugin_errors = airflow_stack.api("GET", "/api/v2/plugins/importErrors", expect=200).json()
    assert plugin_errors["total_entries"] == 0, plugin_errors
    plugins = {p["name"] for p in airflow_stack.api("GET", "/api/v2/plugins", expect=200).json()["plugins"]}
    assert {"conduit", "OpenLineageProviderPlugin"} <= plugins
    # the Celery worker the scheduler sends to is ours, on our queue
    assert airflow_stack.procs["airflow-worker"].popen.poll() is None


def test_next_scheduled_run_is_0200_europe_berlin(airflow_stack: AirflowStack):
    dag = airflow_stack.wait_for_dag(DAG_ID)
    now = dt.datetime.now(dt.UTC)
    latest, upcoming = _two_am_berlin_around(now)
    run_after = _parse(dag["next_dagrun_run_after"])
    logical = _parse(dag["next_dagrun_logical_date"])
    # CronTriggerTimetable: logical date == run_after; catchup=False -> the latest slot or the next one
    assert logical == run_after
    assert run_after.astimezone(BERLIN).time() == dt.time(2, 0)
    assert run_after in (latest, upcoming), (run_after, latest, upcoming)

    airflow_stack.unpause(DAG_ID)
    # once the scheduler has taken the slot that is due (if any), the next one is tomorrow's 02:00 Berlin
    def advanced() -> dict | None:
        d = airflow_stack.api("GET", f"/api/v2/dags/{DAG_ID}", expect=200).json()
        return d if _parse(d["next_dagrun_run_after"]) == upcoming else None

    d = wait_until(advanced, timeout=90, what="the scheduler to move next_dagrun to the next 02:00 Berlin")
    assert _parse(d["next_dagrun_logical_date"]).astimezone(BERLIN).timetuple()[3:6] == (2, 0, 0)


def test_triggered_sync_loads_every_contact_into_the_erp(airflow_stack: AirflowStack):
    expected = standin_contact_count(airflow_stack)
    assert expected == airflow_stack.standin_contacts
    run = trigger(airflow_stack, {})
    assert_succeeded(airflow_stack, run["dag_run_id"], timeout=300)
    tis = {t["task_id"]: t["state"] for t in airflow_stack.task_instances(DAG_ID, run["dag_run_id"])}
    assert tis and set(tis.values()) == {"success"}, tis
    counts = erp_counts(airflow_stack)
    assert counts == {"rows": expected, "keys": expected, "active": expected, "duplicate_crm_ids": 0}


def test_two_syncs_triggered_at_once_both_succeed_and_the_erp_stays_consistent(airflow_stack: AirflowStack):
    expected = standin_contact_count(airflow_stack)
    first = airflow_stack.trigger(DAG_ID, {"full_refresh": True})
    second = airflow_stack.trigger(DAG_ID, {})
    assert first["dag_run_id"] != second["dag_run_id"]
    for run in (first, second):
        assert_succeeded(airflow_stack, run["dag_run_id"], timeout=300)
    assert erp_counts(airflow_stack) == {"rows": expected, "keys": expected, "active": expected,
                                         "duplicate_crm_ids": 0}


_shot = shot


def test_ui_login_trigger_with_params_and_hubspot_connection_form(airflow_stack: AirflowStack, browser):
    before = erp_counts(airflow_stack, must_exist=False)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        # 1. log in through SimpleAuthManager's form
        log_in(page, airflow_stack, shot_as="01-login")
        _shot(page, "02-home")

        # 2. open the sync DAG
        page.goto(f"{airflow_stack.base_url}/dags/{DAG_ID}")
        page.get_by_text(DAG_ID).first.wait_for()
        _shot(page, "03-dag")

        # 3. trigger it through the params form, dry run on
        page.get_by_role("button", name="Trigger Dag").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Run Parameters").wait_for()
        dry_run = dialog.locator('input[name="element_dry_run"]')
        assert not dry_run.is_checked()
        dialog.locator("label").filter(has=page.locator('input[name="element_dry_run"]')).click()  # visible switch
        assert dry_run.is_checked()
        assert not dialog.locator('input[name="element_full_refresh"]').is_checked()
        assert not dialog.locator('input[name="element_plan_only"]').is_checked()
        _shot(page, "04-trigger-form")
        dialog.get_by_role("button", name=re.compile("^Trigger$")).click()
        dialog.wait_for(state="hidden")
        page.wait_for_url(re.compile(rf".*/dags/{DAG_ID}/runs/manual__.*"))

        run_page = requests.utils.unquote(page.url)

        # 4. (while the run goes on) Admin > Connections > Add, type HubSpot: Conduit's declarative form
        page.get_by_role("button", name="Admin").click()
        page.get_by_role("menuitem", name=re.compile("^Connections$")).click()
        page.wait_for_url(re.compile(r".*/connections.*"))
        page.get_by_role("button", name="Add Connection").click()
        form = page.get_by_role("dialog")
        form.get_by_text("Connection Type").first.wait_for()
        form.get_by_role("combobox").first.click()
        page.keyboard.type("HubSpot")
        page.get_by_role("option", name=re.compile("^HubSpot$")).click()
        # relabelled standard fields with placeholders, hidden ones gone
        form.get_by_text("Base URL", exact=True).wait_for()
        assert form.get_by_placeholder("https://api.hubapi.com").is_visible()
        form.get_by_text("Access token", exact=True).wait_for()
        assert form.get_by_text("Login", exact=True).count() == 0
        assert form.get_by_text("Port", exact=True).count() == 0
        _shot(page, "06a-hubspot-connection-standard-fields")
        # conn-fields: the extra fields
        form.get_by_text("Extra Fields", exact=True).click()
        form.get_by_text("API version", exact=True).wait_for()
        _shot(page, "06b-hubspot-connection-extra-fields")

        # 5. the run the UI created: dry_run=True in its conf; wait for it through the API
        def ui_run() -> dict | None:
            runs = airflow_stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns",
                                     params={"order_by": "-run_after", "limit": 5}, expect=200).json()["dag_runs"]
            return next((r for r in runs if r["conf"].get("dry_run") is True), None)

        run = wait_until(ui_run, timeout=60, what="the run triggered from the UI")
        assert run["conf"] == {"full_refresh": False, "dry_run": True, "plan_only": False}
        assert run_page.endswith(run["dag_run_id"])  # the UI opened the run it created
        assert_succeeded(airflow_stack, run["dag_run_id"], timeout=300)
        page.goto(f"{airflow_stack.base_url}/dags/{DAG_ID}/runs/{run['dag_run_id']}")
        page.get_by_text(run["dag_run_id"]).first.wait_for()
        # the run's state badge and every task instance show Success
        tasks = airflow_stack.task_instances(DAG_ID, run["dag_run_id"])
        page.get_by_text("Success", exact=True).nth(len(tasks)).wait_for()
        _shot(page, "05-run-succeeded")
        # a dry run changes nothing in the ERP
        assert erp_counts(airflow_stack, must_exist=False) == before

    except Exception:
        _shot(page, "99-failure")
        raise
    finally:
        context.close()


def test_a_signed_hubspot_webhook_starts_a_sync_that_picks_the_change_up(airflow_stack: AirflowStack):
    """Stand-in CRM -> signed webhook -> the Conduit plugin on the api-server -> Redis stream ->
    the triggerer's AssetWatcher -> an asset-triggered sync run -> the change is in the ERP."""
    from conduit.standin.testing import AdminClient

    stack = airflow_stack
    stack.unpause(DAG_ID)
    assert_succeeded(stack, trigger(stack, {})["dag_run_id"], timeout=300)  # the ERP is loaded
    before = {r["dag_run_id"] for r in stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", expect=200).json()["dag_runs"]}
    admin = AdminClient(stack.standin_url)
    admin.subscribe_webhooks(f"{stack.base_url}/conduit/webhooks/hubspot/{DAG_ID}",
                             stack.env["CONDUIT_HUBSPOT_WEBHOOK_SECRET"])
    with psycopg.connect(stack.erp_dsn()) as conn:
        crm_id = conn.execute(f"SELECT crm_id FROM public.{topology.ERP_TABLE} ORDER BY crm_id LIMIT 1").fetchone()[0]
    admin.modify(crm_id, {"firstname": "Webhooked"})

    def webhook_run() -> dict | None:
        runs = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", expect=200).json()["dag_runs"]
        return next((r for r in runs if r["dag_run_id"] not in before and r["run_type"] == "asset_triggered"), None)

    run = wait_until(webhook_run, timeout=180, what="an asset-triggered sync run from the webhook")
    assert_succeeded(stack, run["dag_run_id"], timeout=300)
    assert admin.stats()["webhooks"]["events_delivered"] >= 1, admin.stats()["webhooks"]
    with psycopg.connect(stack.erp_dsn()) as conn:
        first_name = conn.execute(f"SELECT first_name FROM public.{topology.ERP_TABLE} WHERE crm_id = %s",
                                  (crm_id,)).fetchone()[0]
    assert first_name == "Webhooked"
    # acknowledged in Redis only once the real triggerer's supervisor stored the asset event (ack mode)
    with redis.Redis.from_url(stack.env["CONDUIT_REDIS_URL"]) as events:
        wait_until(lambda: events.xpending(stream_key(DAG_ID), "conduit")["pending"] == 0,
                   timeout=30, what="the webhook's stream entries acknowledged")
    admin.unsubscribe_webhooks()


def test_lineage_events_are_valid_openlineage_with_column_lineage_from_the_mapping(airflow_stack: AirflowStack):
    """Every event the real processes emitted validates against the OpenLineage spec, and the load's
    column lineage names, for each ERP column, exactly the CRM properties its mapping reads."""
    import subprocess
    import sys

    from conduit.specs.model import load_spec

    events_file = airflow_stack.artifacts / "openlineage-events.jsonl"
    validator = topology.REPO / "tests" / "fixtures" / "openlineage" / "validate_events.py"  # vendored
    assert events_file.exists() and validator.exists()
    result = subprocess.run([sys.executable, str(validator), str(events_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
    spec = load_spec(topology.REPO / "include" / "syncs" / f"{DAG_ID}.yaml")
    loads = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith(".load")]
    assert loads, "no COMPLETE event of the load task"
    (erp,) = loads[-1]["outputs"]
    lineage = erp["facets"]["columnLineage"]["fields"]
    assert set(lineage) == set(spec.columns)
    for column, field in spec.mapping.items():
        assert {f["field"] for f in lineage[column]["inputFields"]} == set(field.source_properties()), column
    assert erp["namespace"].startswith("postgres://") and erp["name"].endswith(f".public.{topology.ERP_TABLE}")


def test_no_process_left_behind(airflow_stack: AirflowStack):
    pids = {name: p.popen.pid for name, p in airflow_stack.procs.items()}
    assert all(airflow_stack.procs[name].popen.poll() is None for name in pids), "a component died"
    started = time.monotonic()
    leftovers = airflow_stack.stop()
    airflow_stack.stopped.append(leftovers)  # the fixture's finalizer will not stop it again
    assert leftovers == []
    assert airflow_stack.leftover_pids() == []
    for name, pid in pids.items():
        assert not _alive(pid), f"{name} (pid {pid}) still runs"
    with psycopg.connect(airflow_stack.pg_dsn) as conn:
        dbs = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert airflow_stack.metadata_db not in dbs and airflow_stack.erp_db not in dbs
    assert time.monotonic() - started < 60


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
