"""The order_fulfilment saga on a real Airflow deployment (api-server, scheduler, dag-processor,
triggerer, Celery worker; see harness.py) against the order-services stand-in process, with the saga
log in the ERP database. Everything goes through REST API v2 like an operator would: trigger, answer
the human review (``hitlDetails``), mark a run failed. What happened is read where it happened: the
services' ledgers (``GET /_admin/ledger``: one entry per effect) and the saga log (``conduit_saga``
and ``conduit_saga_step``, queried with psycopg).

The deployment is shared with the health view module when the two run one after the other
(``shared_stack``; that module works on the sync DAGs only); the last test here stops it and checks
that nothing is left behind.

The deployment sets ``CONDUIT_ORDER_REVIEW_TIMEOUT_S`` to a few seconds (harness.py), so a review
nobody answers times out within the test. The two runs that wait longest (the review nobody answers
and the shipment that never ships) start when the module starts and progress while the other cases
run; every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import quote

import psycopg
import pytest
import requests
from psycopg.rows import dict_row

from conduit.orders.dag import EXAMPLE_ORDER
from e2e import topology
from e2e.harness import AirflowStack, wait_until
from e2e.ui import SHOTS, log_in, shot

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(600)]

DAG_ID = topology.ORDER_DAG_ID
REFUSED_CAUSE = "refused in human review (or no answer in time)"
REVIEW_SCORE = 0.5  # between 0.3 and 0.8: rule medium_fraud_score sends the order to a person
# what a healthy run of each kind changes, per service operation (fraud "score" included: once)
FULFILLED = {"score": 1, "reserve": 1, "authorize": 1, "create": 1, "capture": 1}
REFUSED = {"score": 1, "reserve": 1, "release": 1}
UNDONE_AFTER_PAYMENT = {"score": 1, "reserve": 1, "authorize": 1, "create": 1, "cancel": 1, "void": 1, "release": 1}


def new_order(case: str) -> dict:
    return {**EXAMPLE_ORDER, "order_id": f"E2E-{case}-{uuid.uuid4().hex[:8]}"}


@dataclass
class Orders:
    """The deployment, the stand-in's admin API, one order per case and the runs already started."""

    stack: AirflowStack
    admin_url: str
    orders: dict[str, dict]
    runs: dict[str, dict] = field(default_factory=dict)

    def order_id(self, case: str) -> str:
        return self.orders[case]["order_id"]

    def admin(self, method: str, path: str, **kwargs) -> dict:
        resp = requests.request(method, f"{self.admin_url}/_admin{path}", timeout=30, **kwargs)
        assert resp.status_code == 200, f"{method} /_admin{path} -> {resp.status_code}: {resp.text[:2000]}"
        return resp.json()

    def ledger(self, order_id: str) -> list[dict]:
        """Every effect the services really made for the order, with its service, in order."""
        entries = [{**entry, "service": service} for service, rows in self.admin("GET", "/ledger").items()
                   for entry in rows if entry["order_id"] == order_id]
        return sorted(entries, key=lambda e: e["seq"])

    def effects(self, order_id: str) -> dict[str, int]:
        return dict(Counter(entry["op"] for entry in self.ledger(order_id)))

    def trigger(self, case: str, **params) -> dict:
        conf = {"order": self.orders[case], "ship_within_s": 120, "ship_poll_s": 0.5, **params}
        run = self.stack.trigger(DAG_ID, conf)
        assert run["state"] == "queued" and run["conf"] == conf
        self.runs[case] = run
        return run


@pytest.fixture(scope="module")
def orders(shared_stack: AirflowStack) -> Orders:
    stack = shared_stack
    dag = stack.wait_for_dag(DAG_ID)
    assert dag["is_paused"] is True  # DAGS_ARE_PAUSED_AT_CREATION
    stack.unpause(DAG_ID)
    cases = ("approve", "refuse", "timeout", "mark_failed")
    found = Orders(stack, stack.order_services_url, {case: new_order(case) for case in cases})
    # Faults are patched per service and a list or mapping is replaced whole: set them once, for every
    # case. Three orders go to a person; the fourth is approved automatically and never ships.
    found.admin("PUT", "/faults", json={
        "fraud": {"scores": {found.order_id(c): REVIEW_SCORE for c in ("approve", "refuse", "timeout")}},
        "shipping": {"never_ship_orders": [found.order_id("mark_failed")]},
    })
    # the two runs that wait longest start now and progress while the other cases run
    found.trigger("timeout")
    found.trigger("mark_failed", ship_within_s=3600, ship_poll_s=1)
    return found


# --- helpers ----------------------------------------------------------------------------------------

def run_path(run_id: str) -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"


def hitl_path(run_id: str) -> str:
    return f"{run_path(run_id)}/taskInstances/human_review/-1/hitlDetails"


def ti_states(stack: AirflowStack, run_id: str) -> dict[str, str | None]:
    return {t["task_id"]: t["state"] for t in stack.task_instances(DAG_ID, run_id)}


def wait_for_task(stack: AirflowStack, run_id: str, task_id: str, state: str, timeout: float = 180) -> None:
    """Until ``task_id`` is in ``state``; stops at once (with the failed tasks' errors) when a task
    fails or goes up for retry first."""

    def reached() -> str | None:
        states = ti_states(stack, run_id)
        if states.get(task_id) == state:
            return "reached"
        if any(s in ("failed", "up_for_retry", "upstream_failed") for s in states.values()):
            return "broken"
        return None

    outcome = wait_until(reached, timeout=timeout, what=f"{task_id} of run {run_id} to be {state}",
                         on_timeout=lambda: "\n" + stack.run_summary(DAG_ID, run_id) + stack.diagnostics())
    assert outcome == "reached", f"a task failed before {task_id} was {state}:\n" + stack.run_summary(DAG_ID, run_id)


def wait_until_finished(stack: AirflowStack, run_id: str, timeout: float = 240) -> str:
    """The run's final state (no fail-fast: compensations still run after the first failure)."""
    return stack.wait_for_run(DAG_ID, run_id, timeout=timeout, fail_fast=False)["state"]


def saga_log(stack: AirflowStack, order_id: str) -> tuple[dict, dict[str, dict]]:
    """(the saga row, its steps by name) as the saga's tasks left them in the saga database."""
    with psycopg.connect(stack.saga_dsn(), row_factory=dict_row) as conn:
        saga = conn.execute(f"SELECT * FROM {topology.SAGA_TABLE} WHERE saga_id = %s",
                            (f"order-{order_id}",)).fetchone()
        steps = conn.execute(f"SELECT * FROM {topology.SAGA_STEP_TABLE} WHERE saga_id = %s ORDER BY seq",
                             (f"order-{order_id}",)).fetchall()
    assert saga is not None, f"no saga order-{order_id} in {topology.SAGA_TABLE}"
    return saga, {s["step"]: s for s in steps}


def _ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_refused_and_compensated(found: Orders, case: str) -> None:
    """The order went to a person and came back Reject: the stock is released once, nothing was
    charged or shipped, the saga is compensated with the refusal as its cause."""
    stack, run_id, order_id = found.stack, found.runs[case]["dag_run_id"], found.order_id(case)
    states = ti_states(stack, run_id)
    summary = f"{states}\n" + stack.run_summary(DAG_ID, run_id)
    assert (states["human_review"], states["refused"], states["approved"]) == ("success", "failed", "skipped"), summary
    assert (states["auto_approve"], states["reject"]) == ("skipped", "skipped"), summary
    assert {states[t] for t in ("payment.begin", "payment.action", "shipping.begin", "capture", "commit")} == \
        {"skipped"}, summary
    assert (states["inventory.compensate"], states["finalize"]) == ("success", "failed"), summary
    assert states["payment.compensate"] == states["shipping.compensate"] == "skipped", summary

    assert found.effects(order_id) == REFUSED
    release = next(e for e in found.ledger(order_id) if e["op"] == "release")
    reserve = next(e for e in found.ledger(order_id) if e["op"] == "reserve")
    assert (release["service"], release["object_id"]) == ("inventory", reserve["object_id"])

    saga, steps = saga_log(stack, order_id)
    assert (saga["dag_id"], saga["run_id"]) == (DAG_ID, run_id)
    assert (saga["status"], saga["cause"]) == ("compensated", REFUSED_CAUSE)
    assert set(steps) == {"validate", "inventory", "fraud"}  # payment never began
    assert steps["inventory"]["compensation_status"] == "done"
    assert steps["inventory"]["compensation_result"] == {"released": reserve["object_id"], "status": "released"}
    assert steps["fraud"]["result"] == {"score": REVIEW_SCORE}


# --- the cases ----------------------------------------------------------------------------------------

def test_the_order_dag_is_deployed_and_reaches_the_order_services(orders: Orders):
    stack = orders.stack
    assert stack.api("GET", "/api/v2/importErrors", expect=200).json()["total_entries"] == 0
    assert stack.api("GET", f"/api/v2/dags/{DAG_ID}", expect=200).json()["is_paused"] is False
    assert stack.procs[topology.ORDER_SERVICES_SERVICE].popen.poll() is None
    assert stack.env[topology.ORDER_REVIEW_TIMEOUT_ENV] == str(stack.order_review_timeout_s)
    assert set(orders.admin("GET", "/ledger")) == {"inventory", "payment", "fraud", "shipping"}


def test_a_review_approved_through_the_rest_api_fulfils_the_order_once(orders: Orders):
    stack, order_id = orders.stack, orders.order_id("approve")
    run_id = orders.trigger("approve", ship_within_s=120, ship_poll_s=0.5)["dag_run_id"]
    wait_for_task(stack, run_id, "human_review", "awaiting_input")

    # what the reviewer is shown names the order, its score and the rule that sent it to them
    request = stack.api("GET", hitl_path(run_id), expect=200).json()
    assert request["subject"] == f"Approve order {order_id}?"
    assert f"Order **{order_id}**" in request["body"] and f"fraud score {REVIEW_SCORE}" in request["body"]
    assert "Rule: medium_fraud_score" in request["body"] and "between 0.3 and 0.8" in request["body"]
    assert (request["options"], request["defaults"]) == (["Approve", "Reject"], ["Reject"])
    assert request["response_received"] is False and request["chosen_options"] is None

    answer = stack.api("PATCH", hitl_path(run_id), json={"chosen_options": ["Approve"], "params_input": {}},
                       expect=200).json()
    assert answer["chosen_options"] == ["Approve"] and answer["responded_by"]["name"] == stack.username
    # one answer only
    stack.api("PATCH", hitl_path(run_id), json={"chosen_options": ["Reject"], "params_input": {}}, expect=409)

    final = stack.wait_for_run(DAG_ID, run_id, timeout=240)
    assert final["state"] == "success", f"run {run_id} ended {final['state']}:\n" + stack.run_summary(DAG_ID, run_id)
    states = ti_states(stack, run_id)
    assert (states["human_review"], states["approved"], states["refused"]) == ("success", "success", "skipped")
    assert (states["wait_for_shipment"], states["capture"], states["commit"], states["finalize"]) == \
        ("success", "success", "success", "success")
    assert {states[t] for t in ("inventory.compensate", "payment.compensate", "shipping.compensate")} == {"skipped"}

    # reserved, authorised, shipped and captured, each once
    assert orders.effects(order_id) == FULFILLED
    ledger = {e["op"]: e for e in orders.ledger(order_id)}
    assert ledger["capture"]["object_id"] == ledger["authorize"]["object_id"]
    shipment = requests.get(f"{orders.admin_url}/shipping/shipments/{ledger['create']['object_id']}", timeout=30)
    assert shipment.status_code == 200 and shipment.json()["status"] == "shipped", shipment.text

    saga, steps = saga_log(stack, order_id)
    assert (saga["run_id"], saga["status"], saga["cause"]) == (run_id, "committed", None)
    assert {name: (s["action_status"], s["compensation_status"]) for name, s in steps.items()} == {
        name: ("succeeded", "none") for name in ("validate", "inventory", "fraud", "payment", "shipping", "capture")}
    assert stack.api("GET", hitl_path(run_id), expect=200).json()["chosen_options"] == ["Approve"]


def test_a_review_refused_through_the_rest_api_releases_the_stock_and_charges_nothing(orders: Orders):
    stack = orders.stack
    run_id = orders.trigger("refuse")["dag_run_id"]
    wait_for_task(stack, run_id, "human_review", "awaiting_input")
    # an option the review does not offer is refused and changes nothing
    stack.api("PATCH", hitl_path(run_id), json={"chosen_options": ["Maybe"], "params_input": {}}, expect=400)
    answer = stack.api("PATCH", hitl_path(run_id), json={"chosen_options": ["Reject"], "params_input": {}},
                       expect=200).json()
    assert answer["chosen_options"] == ["Reject"] and answer["responded_by"]["name"] == stack.username

    assert wait_until_finished(stack, run_id) == "failed", stack.run_summary(DAG_ID, run_id)
    assert_refused_and_compensated(orders, "refuse")
    detail = stack.api("GET", hitl_path(run_id), expect=200).json()
    assert detail["responded_by_user"]["name"] == stack.username


def test_a_review_nobody_answers_times_out_into_its_default_reject(orders: Orders):
    stack = orders.stack
    run_id = orders.runs["timeout"]["dag_run_id"]  # started with the module; nobody answers it
    assert wait_until_finished(stack, run_id, timeout=stack.order_review_timeout_s + 240) == "failed", \
        stack.run_summary(DAG_ID, run_id)

    # the scheduler answered with the default, nobody else, after CONDUIT_ORDER_REVIEW_TIMEOUT_S
    detail = stack.api("GET", hitl_path(run_id), expect=200).json()
    assert detail["response_received"] is True and detail["chosen_options"] == ["Reject"]
    assert detail["responded_by_user"] is None
    waited = (_ts(detail["responded_at"]) - _ts(detail["created_at"])).total_seconds()
    assert stack.order_review_timeout_s - 1 <= waited <= stack.order_review_timeout_s + 60, waited
    assert_refused_and_compensated(orders, "timeout")


def test_a_run_marked_failed_while_waiting_for_the_shipment_still_compensates_everything(orders: Orders):
    stack, order_id = orders.stack, orders.order_id("mark_failed")
    run_id = orders.runs["mark_failed"]["dag_run_id"]  # started with the module; its shipment never ships
    wait_for_task(stack, run_id, "wait_for_shipment", "deferred", timeout=240)
    # the payment is authorised and the shipment created; nothing is undone yet
    assert orders.effects(order_id) == {"score": 1, "reserve": 1, "authorize": 1, "create": 1}
    assert ti_states(stack, run_id)["auto_approve"] == "success"

    marked = stack.api("PATCH", run_path(run_id), json={"state": "failed"}, expect=200).json()
    assert marked["state"] != "success"
    assert wait_until_finished(stack, run_id) == "failed", stack.run_summary(DAG_ID, run_id)

    states = ti_states(stack, run_id)
    summary = f"{states}\n" + stack.run_summary(DAG_ID, run_id)
    assert (states["wait_for_shipment"], states["capture"], states["commit"]) == ("failed", "skipped", "skipped"), \
        summary
    # the compensations are teardowns: marking the run failed does not skip them
    assert {states[t] for t in ("shipping.compensate", "payment.compensate", "inventory.compensate")} == \
        {"success"}, summary
    assert states["finalize"] == "failed", summary

    # shipment cancelled, payment voided, stock released: each once, in reverse order, nothing captured
    assert orders.effects(order_id) == UNDONE_AFTER_PAYMENT
    ledger = orders.ledger(order_id)
    undo = [(e["service"], e["op"]) for e in ledger if e["op"] in ("cancel", "void", "release")]
    assert undo == [("shipping", "cancel"), ("payment", "void"), ("inventory", "release")]
    created = {e["op"]: e["object_id"] for e in ledger}
    assert created["cancel"] == created["create"] and created["void"] == created["authorize"]
    assert created["release"] == created["reserve"]

    saga, steps = saga_log(stack, order_id)
    assert (saga["run_id"], saga["status"]) == (run_id, "compensated")
    assert {name: s["compensation_status"] for name, s in steps.items() if s["compensable"]} == {
        "inventory": "done", "payment": "done", "shipping": "done"}
    assert steps["shipping"]["compensation_result"]["status"] == "cancelled"
    assert steps["payment"]["compensation_result"]["status"] == "voided"
    assert steps["inventory"]["compensation_result"]["status"] == "released"
    assert "capture" not in steps  # its turn never came


def test_the_graph_view_shows_the_saga_and_its_compensations(orders: Orders, browser):
    """The run marked failed, in the Graph view: each step's begin/action/compensate, the branches,
    the compensations that ran. Saved as test-artifacts/e2e/order-saga-graph.png (the README's
    picture)."""
    stack, run_id = orders.stack, orders.runs["mark_failed"]["dag_run_id"]
    page = browser.new_context(viewport={"width": 1600, "height": 900}, device_scale_factor=1.5).new_page()
    page.set_default_timeout(60_000)
    log_in(page, stack)
    page.goto(f"{stack.base_url}/dags/{DAG_ID}/runs/{quote(run_id)}")
    page.get_by_text(run_id).first.wait_for()
    shot(page, "order-saga-run")
    # the view switch's own button: its keyboard shortcut "g" did nothing once (CI, stop 26), pressed
    # before the page listened for it, and the Grid's hidden rows then matched the node labels below
    page.get_by_title("Show Graph (Press g)").first.click()
    page.locator(".react-flow").first.wait_for()
    page.get_by_label("Expand all task groups").first.click()
    page.get_by_label("Collapse Details Panel").first.click()
    for task in ("finalize", "wait_for_shipment", "route", "↩ inventory"):  # node labels drawn in the graph
        page.get_by_text(task, exact=True).first.wait_for()
    page.wait_for_timeout(1500)  # the layout animates into place
    shot(page, "order-saga-graph")
    assert (SHOTS / "order-saga-graph.png").stat().st_size > 20_000


def test_the_order_services_stop_with_the_deployment(orders: Orders):
    stack = orders.stack
    pid = stack.procs[topology.ORDER_SERVICES_SERVICE].popen.pid
    started = time.monotonic()
    leftovers = stack.stop()
    stack.stopped.append(leftovers)  # type: ignore[attr-defined]  # the fixture will not stop it again
    assert leftovers == [] and stack.leftover_pids() == []
    assert stack.procs[topology.ORDER_SERVICES_SERVICE].popen.poll() is not None, f"order services {pid} still run"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{orders.admin_url}/_admin/faults", timeout=5)
    with psycopg.connect(stack.pg_dsn) as conn:
        dbs = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert stack.metadata_db not in dbs and stack.erp_db not in dbs
    assert time.monotonic() - started < 60
