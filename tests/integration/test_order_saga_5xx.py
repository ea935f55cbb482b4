"""An action that ran out of retries on 5xx answers is undone even when a 5xx did not mean "nothing
was done". Two ways a service does that, two stand-in faults:

* ``5xx_after_effect``: the service did the work, then failed its answer. The compensation's
  lookup by the action's key finds the effect, so it was undone before the fix too; these cases
  guard that, and that the action is now repeated (a replay) first.
* ``5xx_then_late``: a 503 came back at once while the request still waited in the service (a
  gateway gave up on a service still working), and was done later. The compensation found nothing
  and the late request left money held or stock reserved, the saga saying compensated. Now such a
  failure is an outcome unknown (``ServiceOutcomeUnknown``), like a timeout: the compensation
  repeats the action with its key (the service does it now) and undoes it, and the held requests
  land as replays.

Both saga forms: the task-per-step ``order_fulfilment`` and the nightly batch's inline saga. Real
Airflow (``dag.test()``), the real stand-in over HTTP, the saga log on PostgreSQL; the services'
ledgers are the proof. A business refusal (402) is still not repeated: it proves nothing was done."""

from __future__ import annotations

import json
import os

import pytest
from airflow.sdk import DagRunState
from order_helpers import effects, new_order, nightly_dag, run_order, saga_row, wait_for

pytestmark = pytest.mark.postgres

HELD_S = 600.0  # a late request waits this long unless the test releases it first (it always does)
TRIES = 2  # the hook's tries of one call (max_retries 1), all of them faulted


@pytest.fixture
def one_try_each(order_env, monkeypatch):
    """One task try for a forward step, two HTTP tries per call: the action fails after TRIES 5xx."""
    from conduit.saga import builder

    monkeypatch.setitem(builder.FORWARD_RETRIES, "retries", 0)
    for name in ("inventory", "payment"):
        conn = json.loads(os.environ[f"AIRFLOW_CONN_{name.upper()}_DEFAULT"])
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}_DEFAULT", json.dumps(
            {**conn, "extra": {"timeout": 2, "max_retries": TRIES - 1, "backoff_max": 0.05}}))
    return order_env




def let_held_requests_land(services, mode: str) -> None:
    """The 5xx_then_late requests the action sent are done now, after the compensation ran."""
    if mode == "5xx_then_late":
        assert services.admin.release_late() == TRIES
        wait_for(lambda: services.admin.late_waiting() == 0, f"the {TRIES} held requests to be done")


def assert_repeated_once(services, service: str, op: str) -> None:
    """The TRIES faulted tries, then the compensation's repeat with the same key; whichever of
    them came first did it (the first try, or the repeat ahead of the held ones), the rest were
    replays."""
    calls = services.admin.requests()[service][op]
    assert (calls["received"], calls["faulted"], calls["replayed"]) == (TRIES + 1, TRIES, TRIES), calls


@pytest.mark.parametrize("mode", ["5xx_after_effect", "5xx_then_late"])
def test_a_payment_failed_on_5xx_is_repeated_and_voided(one_try_each, mode):
    services = one_try_each
    services.admin.faults(payment={"fail_next": TRIES, "mode": mode, "delay_s": HELD_S, "operation": "authorize"})
    order = new_order()

    dag_run, states = run_order(order)

    assert dag_run.state == DagRunState.FAILED, states
    assert (states["payment.action"], states["payment.compensate"]) == ("failed", "success"), states
    let_held_requests_land(services, mode)
    assert effects(services, order["order_id"]) == {"reserve": 1, "release": 1, "authorize": 1, "void": 1}
    saga, steps = saga_row(order["order_id"])
    payment = next(s for s in steps if s["step"] == "payment")
    assert (payment["action_status"], payment["compensation_status"]) == ("failed", "done"), payment
    assert payment["error"].startswith("ServiceOutcomeUnknown"), payment["error"]
    assert_repeated_once(services, "payment", "authorize")
    assert payment["compensation_result"]["status"] == "voided", payment
    assert saga["status"] == "compensated", saga


@pytest.mark.parametrize("mode", ["5xx_after_effect", "5xx_then_late"])
def test_a_reservation_failed_on_5xx_is_repeated_and_released(one_try_each, mode):
    services = one_try_each
    services.admin.faults(inventory={"fail_next": TRIES, "mode": mode, "delay_s": HELD_S, "operation": "reserve"})
    order = new_order()

    dag_run, states = run_order(order)

    assert dag_run.state == DagRunState.FAILED, states
    assert (states["inventory.action"], states["inventory.compensate"]) == ("failed", "success"), states
    let_held_requests_land(services, mode)
    assert effects(services, order["order_id"]) == {"reserve": 1, "release": 1}
    saga, steps = saga_row(order["order_id"])
    inventory = next(s for s in steps if s["step"] == "inventory")
    assert inventory["compensation_result"]["status"] == "released", inventory
    assert_repeated_once(services, "inventory", "reserve")
    assert saga["status"] == "compensated", saga


@pytest.mark.parametrize("mode", ["5xx_after_effect", "5xx_then_late"])
def test_an_inline_saga_whose_payment_failed_on_5xx_repeats_and_voids_it(one_try_each, tmp_path, mode):
    services = one_try_each
    services.admin.faults(payment={"fail_next": TRIES, "mode": mode, "delay_s": HELD_S, "operation": "authorize"})
    order = new_order()
    feed = tmp_path / "pending.jsonl"
    feed.write_text(json.dumps(order) + "\n")

    dag_run = nightly_dag().test(run_conf={"feed": str(feed), "ship_within_s": 5, "ship_poll_s": 0.1})

    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert (states["order.process"], states["order.compensate"]) == ("failed", "success"), states
    let_held_requests_land(services, mode)
    assert effects(services, order["order_id"]) == {"reserve": 1, "release": 1, "authorize": 1, "void": 1}
    saga, steps = saga_row(order["order_id"])
    payment = next(s for s in steps if s["step"] == "payment")
    assert payment["error"].startswith("ServiceOutcomeUnknown"), payment["error"]
    assert_repeated_once(services, "payment", "authorize")
    assert payment["compensation_result"]["status"] == "voided", payment
    assert saga["status"] == "compensated", saga


def test_a_business_refusal_is_not_repeated_nothing_to_undo(one_try_each):
    """A 402 proves nothing was done: the compensation does not repeat the authorisation."""
    services = one_try_each
    order = new_order()
    services.admin.faults(payment={"decline_orders": [order["order_id"]]})

    dag_run, states = run_order(order)

    assert dag_run.state == DagRunState.FAILED, states
    assert services.admin.requests()["payment"]["authorize"]["received"] == 1  # no repeat
    assert effects(services, order["order_id"]) == {"reserve": 1, "release": 1}
    _, steps = saga_row(order["order_id"])
    payment = next(s for s in steps if s["step"] == "payment")
    assert payment["error"].startswith("BusinessRejection"), payment
    assert payment["compensation_result"] == {"payment": None, "reason": "nothing was authorized"}, payment


def test_a_payment_answered_507_and_done_later_is_repeated_and_voided(one_try_each):
    """507 Insufficient Storage (RFC 4918 §11.5: the method could not be performed, a condition
    considered temporary) may come after part of the work, as any 5xx may: no proof nothing was
    done. Before, it failed at once as a refused request, the compensation found no authorisation
    yet, and the held request left money held. Now it is retried with its key like a 503, the
    action fails with its outcome unknown, and the compensation repeats and voids it."""
    services = one_try_each
    services.admin.faults(payment={"fail_next": TRIES, "mode": "5xx_then_late", "status": 507, "delay_s": HELD_S,
                                   "operation": "authorize"})
    order = new_order()

    dag_run, states = run_order(order)

    assert dag_run.state == DagRunState.FAILED, states
    assert (states["payment.action"], states["payment.compensate"]) == ("failed", "success"), states
    _, steps = saga_row(order["order_id"])
    payment = next(s for s in steps if s["step"] == "payment")
    assert payment["error"].startswith("ServiceOutcomeUnknown") and "507" in payment["error"], payment["error"]
    assert payment["compensation_result"].get("status") == "voided", payment
    let_held_requests_land(services, "5xx_then_late")
    assert effects(services, order["order_id"]) == {"reserve": 1, "release": 1, "authorize": 1, "void": 1}
    assert_repeated_once(services, "payment", "authorize")


@pytest.mark.parametrize("status", [501, 505])
def test_a_payment_refused_with_501_or_505_is_not_retried_nor_repeated(one_try_each, status):
    """501 Not Implemented and 505 HTTP Version Not Supported refuse the request before any work
    (RFC 9110 §15.6.2, §15.6.6): nothing was done, nothing is retried or repeated."""
    services = one_try_each
    services.admin.faults(payment={"fail_next": 1, "mode": "5xx", "status": status, "operation": "authorize"})
    order = new_order()

    dag_run, states = run_order(order)

    assert dag_run.state == DagRunState.FAILED, states
    assert services.admin.requests()["payment"]["authorize"]["received"] == 1  # no retry, no repeat
    assert effects(services, order["order_id"]) == {"reserve": 1, "release": 1}
    _, steps = saga_row(order["order_id"])
    payment = next(s for s in steps if s["step"] == "payment")
    assert payment["error"].startswith("ServiceRequestError"), payment["error"]
