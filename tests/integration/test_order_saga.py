"""The order_fulfilment DAG on real Airflow (``dag.test()``) against the real order services over
HTTP and a saga log on PostgreSQL: every path, proven by the services' ledgers and the saga log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow.sdk import DagRunState
from order_helpers import effects, new_order, nightly_dag, run_order, saga_row

from conduit.hooks.saga_log import SagaLogHook
from conduit.orders.model import saga_id_for

pytestmark = pytest.mark.postgres

def test_happy_path_reserves_charges_and_ships_once(order_env):
    order = new_order()
    dag_run, states = run_order(order)

    assert dag_run.state == DagRunState.SUCCESS, states
    assert effects(order_env, order["order_id"]) == {"reserve": 1, "authorize": 1, "create": 1, "capture": 1}
    saga, steps = saga_row(order["order_id"])
    assert saga["status"] == "committed" and saga["cause"] is None
    assert {s["step"]: (s["action_status"], s["compensation_status"]) for s in steps} == {
        "validate": ("succeeded", "none"), "inventory": ("succeeded", "none"), "fraud": ("succeeded", "none"),
        "payment": ("succeeded", "none"), "shipping": ("succeeded", "none"), "capture": ("succeeded", "none")}
    assert {states[t] for t in ("inventory.compensate", "payment.compensate", "shipping.compensate")} == {"skipped"}
    assert (states["reject"], states["human_review"], states["finalize"]) == ("skipped", "skipped", "success")


def test_out_of_stock_charges_nothing(order_env):
    order = new_order(items=[{"sku": "SKU-GONE", "quantity": 1}])
    order_env.admin.faults(inventory={"out_of_stock_skus": ["SKU-GONE"]})
    dag_run, states = run_order(order)

    assert dag_run.state == DagRunState.FAILED
    assert states["inventory.action"] == "failed" and states["finalize"] == "failed"
    assert effects(order_env, order["order_id"]) == {}
    saga, _ = saga_row(order["order_id"])
    assert saga["status"] == "compensated" and "out_of_stock" in saga["cause"]


def test_fraud_reject_releases_the_stock_once(order_env):
    order = new_order()
    order_env.admin.faults(fraud={"scores": {order["order_id"]: 0.95}})
    dag_run, states = run_order(order)

    assert dag_run.state == DagRunState.FAILED
    assert (states["reject"], states["auto_approve"], states["payment.begin"]) == ("failed", "skipped", "skipped")
    assert effects(order_env, order["order_id"]) == {"reserve": 1, "release": 1}
    saga, _ = saga_row(order["order_id"])
    assert saga["status"] == "compensated" and saga["cause"].startswith("reject by rule high_fraud_score")


def test_payment_declined_after_the_reservation_releases_once(order_env):
    order = new_order()
    order_env.admin.faults(payment={"decline_orders": [order["order_id"]]})
    dag_run, states = run_order(order)

    assert dag_run.state == DagRunState.FAILED and states["payment.action"] == "failed"
    assert effects(order_env, order["order_id"]) == {"reserve": 1, "release": 1}
    assert saga_row(order["order_id"])[0]["status"] == "compensated"


def test_shipment_refused_after_payment_voids_and_releases_once(order_env):
    order = new_order()
    order_env.admin.faults(shipping={"fail_create_orders": [order["order_id"]]})
    dag_run, states = run_order(order)

    assert dag_run.state == DagRunState.FAILED and states["shipping.action"] == "failed"
    assert effects(order_env, order["order_id"]) == {"reserve": 1, "release": 1, "authorize": 1, "void": 1}
    saga, steps = saga_row(order["order_id"])
    assert saga["status"] == "compensated" and "undeliverable" in saga["cause"]
    undone = {s["step"]: s["compensation_result"] for s in steps if s["compensation_status"] == "done"}
    assert undone["shipping"] == {"cancelled": None, "reason": "no shipment was created"}  # looked up by key
    assert undone["payment"]["status"] == "voided" and undone["inventory"]["status"] == "released"


def test_a_shipment_that_never_ships_is_cancelled_refunded_and_released(order_env):
    order = new_order()
    order_env.admin.faults(shipping={"never_ship_orders": [order["order_id"]]})
    dag_run, states = run_order(order, ship_within_s=1)

    assert dag_run.state == DagRunState.FAILED and states["wait_for_shipment"] == "failed"
    assert states["capture"] == "upstream_failed"
    assert effects(order_env, order["order_id"]) == {
        "reserve": 1, "release": 1, "authorize": 1, "void": 1, "create": 1, "cancel": 1}
    saga, _ = saga_row(order["order_id"])
    assert saga["status"] == "compensated" and saga["cause"].startswith("the shipment did not ship in time")


def test_a_compensation_that_fails_twice_then_succeeds_is_done_once(order_env):
    order = new_order()
    order_env.admin.faults(fraud={"scores": {order["order_id"]: 0.95}},
                           inventory={"fail_next": 2, "mode": "5xx", "operation": "release"})
    dag_run, _ = run_order(order)

    assert dag_run.state == DagRunState.FAILED
    assert effects(order_env, order["order_id"]) == {"reserve": 1, "release": 1}
    assert order_env.admin.requests()["inventory"]["release"]["faulted"] == 2
    assert saga_row(order["order_id"])[0]["status"] == "compensated"


def test_a_second_run_for_the_same_order_acts_on_nothing(order_env):
    order = new_order()
    assert run_order(order)[0].state == DagRunState.SUCCESS
    dag_run, states = run_order(order)

    assert dag_run.state == DagRunState.FAILED and states["start"] == "failed"
    assert effects(order_env, order["order_id"]) == {"reserve": 1, "authorize": 1, "create": 1, "capture": 1}


def test_the_readme_minimal_saga_runs_and_compensates(order_env, monkeypatch):
    """docs/examples/minimal_saga.py, shown whole in the README, on real Airflow and services
    (deployed as its own DAG bundle, as a user would add a folder)."""
    import os

    from airflow.dag_processing.dagbag import DagBag

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "minimal_saga.py"
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([
        {"name": "dags-folder", "classpath": local, "kwargs": {"path": os.environ["AIRFLOW__CORE__DAGS_FOLDER"]}},
        {"name": "examples", "classpath": local, "kwargs": {"path": str(example.parent)}}]))
    readme = (example.parents[2] / "README.md").read_text()
    assert example.read_text().split("\n\n", 1)[1].strip() in readme  # the README shows it as it is
    bag = DagBag(dag_folder=str(example))
    assert bag.import_errors == {}
    dag = bag.dags["minimal_saga"]

    ok, declined = new_order(), new_order()
    order_env.admin.faults(payment={"decline_orders": [declined["order_id"]]})
    assert dag.test(run_conf={"order": ok}).state == DagRunState.SUCCESS
    assert dag.test(run_conf={"order": declined}).state == DagRunState.FAILED
    assert effects(order_env, ok["order_id"]) == {"reserve": 1, "authorize": 1}
    assert effects(order_env, declined["order_id"]) == {"reserve": 1, "release": 1}
    assert saga_row(declined["order_id"])[0]["status"] == "compensated"


def test_a_malformed_order_is_refused_by_field_before_anything_is_reserved(order_env):
    order = new_order(amount=-5, country="Germany")
    del order["address"]
    dag_run, states = run_order(order)

    assert dag_run.state == DagRunState.FAILED and states["validate"] == "failed"
    assert states["inventory.begin"] == "upstream_failed"
    assert effects(order_env, order["order_id"]) == {}
    saga, _ = saga_row(order["order_id"])
    assert saga["status"] == "compensated"
    assert saga["cause"].startswith(f"validate: BusinessRejection: order '{order['order_id']}' is invalid")
    assert all(field in saga["cause"] for field in ("amount", "country", "address"))


def test_an_order_the_nightly_sent_for_review_goes_through_order_fulfilment_as_attempt_2(order_env, tmp_path):
    """The batch releases an order that needs a review; order_fulfilment with attempt 2 (a new saga,
    new idempotency keys) takes it, and a third attempt after it shipped is refused. (Here, not in
    test_order_batch.py: CI runs that module in the e2e process, where Playwright's event loop is
    running and dag.test() cannot run the deferred shipment sensor.)"""
    order = new_order()
    order_env.admin.faults(fraud={"scores": {order["order_id"]: 0.5}})  # between 0.3 and 0.8: review
    feed = tmp_path / "pending.jsonl"
    feed.write_text(json.dumps(order) + "\n")
    nightly = nightly_dag().test(run_conf={"feed": str(feed), "ship_within_s": 5, "ship_poll_s": 0.1})
    assert nightly.state == DagRunState.SUCCESS
    assert saga_row(order["order_id"])[0]["status"] == "compensated"
    assert effects(order_env, order["order_id"]) == {"reserve": 1, "release": 1}

    order_env.admin.faults(fraud={"scores": {order["order_id"]: 0.1}})  # say the person cleared it
    dag_run, states = run_order(order, attempt=2)
    assert dag_run.state == DagRunState.SUCCESS, states
    log = SagaLogHook().get_conn()
    assert log.saga(saga_id_for(order["order_id"], 2))["status"] == "committed"
    assert effects(order_env, order["order_id"]) == {"reserve": 2, "release": 1, "authorize": 1, "create": 1,
                                                     "capture": 1}
    dag_run, states = run_order(order, attempt=3)  # attempt 2 shipped: nothing to try again
    assert dag_run.state == DagRunState.FAILED and states["start"] == "failed"
    assert log.saga(saga_id_for(order["order_id"], 3)) is None
    assert effects(order_env, order["order_id"])["reserve"] == 2
