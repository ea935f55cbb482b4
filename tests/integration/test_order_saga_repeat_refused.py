"""A compensation's repeat of an action whose outcome is unknown, answered with a 4xx.

The repeat exists to settle the action's idempotency key: once the service has an answer for the
key, a request of the action still waiting in it (``5xx_then_late``) lands as a replay of that
answer, and the lookup by the key that the compensation makes next sees everything the key will
ever do. What a 4xx to the repeat means decides whether the undo can go on:

* the order refused now (402 declined, 409 out of stock, 422 undeliverable): the service's
  answer for the key, remembered; the held requests replay it, nothing was or will be done under the
  key. The compensation goes on and finds nothing to undo (it did before too; a guard).
* 409 ``idempotency_key_in_use`` (the IETF Idempotency-Key draft's answer while the key's first
  request is still being processed; the stand-in's ``key_in_use_conflict``): no answer for the key
  yet, the held request may still be done. Before, it counted as a business refusal: the action
  failed as "refused" (not repeated), the compensation found no authorisation yet, and the held
  request then left money held with the saga saying compensated. Now it is tried again like a 503
  (and may have been done): the action's outcome is unknown, the compensation's try fails and is
  retried until the key has its answer, then voids it.

Real Airflow (the scheduler's own retry of the compensation), the real stand-in over HTTP, the
saga log on PostgreSQL; the services' ledgers are the proof."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest
from airflow.sdk import DagRunState
from airflow_runs import run_existing_dagrun
from order_helpers import effects, new_order, nightly_dag, order_dag, saga_row, trigger_run, wait_for

pytestmark = pytest.mark.postgres

HELD_S = 600.0  # a held request waits this long unless the test releases it first (it always does)
TRIES = 2  # the hook's tries of one call (max_retries 1)


@pytest.fixture
def one_try_each(order_env, monkeypatch):
    """One task try for a forward step, two HTTP tries per payment call."""
    from conduit.saga import builder

    monkeypatch.setitem(builder.FORWARD_RETRIES, "retries", 0)
    # the run is made from the registered DAG: register this one even if another test's was just written
    monkeypatch.setenv("AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL", "0")
    conn = json.loads(os.environ["AIRFLOW_CONN_PAYMENT_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_PAYMENT_DEFAULT", json.dumps(
        {**conn, "extra": {"timeout": 2, "max_retries": TRIES - 1, "backoff_max": 0.05}}))
    return order_env


def run(order: dict, after) -> tuple[str, dict[str, str]]:
    """Run a triggered order_fulfilment run for ``order`` (:func:`run_tasks`)."""
    run_id = trigger_run("order_fulfilment", {"order": order, "ship_within_s": 30, "ship_poll_s": 0.1})
    return run_tasks(order_dag(), run_id, after)


def run_tasks(dag, run_id: str, after) -> tuple[str, dict[str, str]]:
    """Run the run's tasks; ``after(ti)`` after each task try. A failed try is retried at once."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk import TaskInstanceState, timezone
    from airflow.utils.session import create_session

    def after_try(ti):
        after(ti)
        with create_session() as session:
            tried = session.get(TaskInstance, ti.id)
            if tried.state == TaskInstanceState.UP_FOR_RETRY:  # its retry delay has passed
                tried.end_date = timezone.utcnow() - timedelta(hours=1)

    return run_existing_dagrun(dag, run_id, after=after_try)


def release_held(services) -> None:
    services.admin.release_late()
    wait_for(lambda: services.admin.late_waiting() == 0, "the held requests to be done")


def test_a_repeat_refused_because_the_order_is_declined_now_settles_it_nothing_to_void(one_try_each):
    services = one_try_each
    order = new_order()
    services.admin.faults(payment={"fail_next": TRIES, "mode": "5xx_then_late", "delay_s": HELD_S,
                                   "operation": "authorize"})

    def after(ti):
        if ti.task_id == "payment.action":  # the card is declined from now on: the repeat is refused
            services.admin.faults(payment={"decline_orders": [order["order_id"]]})

    state, states = run(order, after)

    assert state == DagRunState.FAILED, states
    assert (states["payment.action"], states["payment.compensate"]) == ("failed", "success"), states
    saga, steps = saga_row(order["order_id"])
    payment = next(s for s in steps if s["step"] == "payment")
    assert payment["error"].startswith("ServiceOutcomeUnknown"), payment["error"]
    assert payment["compensation_result"] == {"payment": None, "reason": "nothing was authorized"}, payment
    release_held(services)  # they replay the refusal: nothing is authorised, now or later
    assert effects(services, order["order_id"]) == {"reserve": 1, "release": 1}
    calls = services.admin.requests()["payment"]["authorize"]
    assert (calls["received"], calls["faulted"], calls["replayed"]) == (TRIES + 1, TRIES, TRIES), calls
    assert saga["status"] == "compensated", saga


def test_a_repeat_answered_key_in_use_waits_for_the_held_request_and_voids_it(one_try_each):
    services = one_try_each
    order = new_order()
    services.admin.faults(payment={"fail_next": 1, "mode": "5xx_then_late", "delay_s": HELD_S,
                                   "operation": "authorize", "key_in_use_conflict": True})

    def after(ti):
        if ti.task_id == "payment.compensate" and ti.try_number == 1:  # the held request is done now
            release_held(services)

    state, states = run(order, after)

    assert state == DagRunState.FAILED, states
    assert (states["payment.action"], states["payment.compensate"]) == ("failed", "success"), states
    assert effects(services, order["order_id"]) == {"reserve": 1, "release": 1, "authorize": 1, "void": 1}
    saga, steps = saga_row(order["order_id"])
    payment = next(s for s in steps if s["step"] == "payment")
    assert payment["error"].startswith("ServiceOutcomeUnknown"), payment["error"]
    assert payment["compensation_attempts"] == 2, payment  # the first one found the key still in use
    assert payment["compensation_result"].get("status") == "voided", payment
    assert saga["status"] == "compensated", saga


def test_an_inline_saga_whose_repeat_finds_the_key_in_use_waits_for_the_held_request_and_voids_it(
        one_try_each, tmp_path):
    services = one_try_each
    order = new_order()
    feed = tmp_path / "pending.jsonl"
    feed.write_text(json.dumps(order) + "\n")
    services.admin.faults(payment={"fail_next": 1, "mode": "5xx_then_late", "delay_s": HELD_S,
                                   "operation": "authorize", "key_in_use_conflict": True})

    def after(ti):
        if ti.task_id == "order.compensate" and ti.try_number == 1:  # the held request is done now
            release_held(services)

    run_id = trigger_run("order_fulfilment_nightly", {"feed": str(feed), "ship_within_s": 5, "ship_poll_s": 0.1})
    _, states = run_tasks(nightly_dag(), run_id, after)

    assert (states["order.process"], states["order.compensate"]) == ("failed", "success"), states
    assert effects(services, order["order_id"]) == {"reserve": 1, "release": 1, "authorize": 1, "void": 1}
    saga, steps = saga_row(order["order_id"])
    payment = next(s for s in steps if s["step"] == "payment")
    assert payment["error"].startswith("ServiceOutcomeUnknown"), payment["error"]
    assert payment["compensation_attempts"] == 2, payment
    assert payment["compensation_result"].get("status") == "voided", payment
    assert saga["status"] == "compensated", saga
