"""Every try of a step decides whether its outcome is unknown, not only the last one.

The payment service answers the first task try's authorisation requests with a 503 and still does
them later (``5xx_then_late``: a gateway gave up on a service still working): that try may have been
done. The task's retry then finds the service unreachable (connection refused: that try was never
sent) and is the last. Before, only the last try's error counted, so the saga took the step for
"nothing done": its compensation did not repeat the authorisation, found none yet, and the held
requests, done later, left money held with the saga saying compensated. Now any try that may have
been done (its error, or a try that started and never ended, in the saga log) makes the outcome
unknown: the compensation repeats the action with its key (the service does it now), voids it, and
the held requests land as replays.

Both saga forms: the task-per-step ``order_fulfilment`` (two tries of ``payment.action``) and the
nightly batch's inline saga (two tries of ``order.process``). Real Airflow (the scheduler's own
retry: ``up_for_retry``), the real stand-in over HTTP, the saga log on PostgreSQL; the services'
ledgers are the proof."""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta

import pytest
from airflow.sdk import DagRunState
from airflow_runs import run_existing_dagrun
from order_helpers import effects, new_order, nightly_dag, order_dag, saga_row, trigger_run, wait_for

from conduit.retries import Backoff, FullJitterRetryPolicy

pytestmark = pytest.mark.postgres

HELD_S = 600.0  # a held request waits this long unless the test releases it first (it always does)
TRIES = 2  # the hook's tries of one call (max_retries 1)


@pytest.fixture
def two_task_tries(order_env, monkeypatch):
    """Forward steps get one retry (two task tries), each call two HTTP tries."""
    from conduit.saga import builder

    monkeypatch.setitem(builder.FORWARD_RETRIES, "retries", 1)
    monkeypatch.setitem(builder.FORWARD_RETRIES, "retry_policy", FullJitterRetryPolicy(Backoff(base=0.01, cap=0.01)))
    # the run is made from the registered DAG: register this one even if another test's was just written
    monkeypatch.setenv("AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL", "0")
    conn = json.loads(os.environ["AIRFLOW_CONN_PAYMENT_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_PAYMENT_DEFAULT", json.dumps(
        {**conn, "extra": {"timeout": 2, "max_retries": TRIES - 1, "backoff_max": 0.05}}))
    return order_env


def unreachable(conn_env: str) -> str:
    """The connection with a port nothing listens on: every try is refused before it is sent."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return json.dumps({**json.loads(conn_env), "host": f"http://127.0.0.1:{port}"})


def run_with_unreachable_retry(dag, run_id: str, task_id: str, monkeypatch) -> tuple[str, dict[str, str]]:
    """Run the run's tasks; ``task_id``'s second try finds the payment service unreachable, every
    other task (the compensations too) reaches it. A failed try is retried at once."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk import TaskInstanceState, timezone
    from airflow.utils.session import create_session

    reachable = os.environ["AIRFLOW_CONN_PAYMENT_DEFAULT"]
    refused = unreachable(reachable)

    def before(ti):
        retry = ti.task_id == task_id and ti.try_number > 1
        monkeypatch.setenv("AIRFLOW_CONN_PAYMENT_DEFAULT", refused if retry else reachable)

    def after(ti):
        with create_session() as session:
            tried = session.get(TaskInstance, ti.id)
            if tried.state == TaskInstanceState.UP_FOR_RETRY:  # its retry delay has passed
                tried.end_date = timezone.utcnow() - timedelta(hours=1)

    return run_existing_dagrun(dag, run_id, before=before, after=after)


def the_held_requests_land_as_replays(services, order_id: str) -> None:
    """The first try's TRIES held authorisations are done now, after the compensation ran: the
    repeat did it and voided it, they are replays."""
    assert effects(services, order_id) == {"reserve": 1, "release": 1, "authorize": 1, "void": 1}
    assert services.admin.release_late() == TRIES
    wait_for(lambda: services.admin.late_waiting() == 0, f"the {TRIES} held requests to be done")
    assert effects(services, order_id) == {"reserve": 1, "release": 1, "authorize": 1, "void": 1}
    calls = services.admin.requests()["payment"]["authorize"]
    # the first try's TRIES (faulted), the compensation's repeat (done now); the held ones replayed
    assert (calls["received"], calls["faulted"], calls["replayed"]) == (TRIES + 1, TRIES, TRIES), calls


def test_a_payment_whose_earlier_try_may_have_been_done_is_repeated_and_voided(two_task_tries, monkeypatch):
    services = two_task_tries
    services.admin.faults(payment={"fail_next": TRIES, "mode": "5xx_then_late", "delay_s": HELD_S,
                                   "operation": "authorize"})
    order = new_order()
    run_id = trigger_run("order_fulfilment", {"order": order, "ship_within_s": 30, "ship_poll_s": 0.1})

    state, states = run_with_unreachable_retry(order_dag(), run_id, "payment.action", monkeypatch)

    assert state == DagRunState.FAILED, states
    assert (states["payment.action"], states["payment.compensate"]) == ("failed", "success"), states
    saga, steps = saga_row(order["order_id"])
    payment = next(s for s in steps if s["step"] == "payment")
    assert payment["action_attempts"] == 2, payment
    assert payment["error"].startswith("ServiceRetryableError"), payment["error"]  # the last try: never sent
    assert payment["compensation_result"].get("status") == "voided", payment
    the_held_requests_land_as_replays(services, order["order_id"])
    assert saga["status"] == "compensated", saga


def test_an_inline_saga_whose_earlier_try_may_have_been_done_repeats_and_voids_it(two_task_tries, tmp_path,
                                                                                     monkeypatch):
    services = two_task_tries
    services.admin.faults(payment={"fail_next": TRIES, "mode": "5xx_then_late", "delay_s": HELD_S,
                                   "operation": "authorize"})
    order = new_order()
    feed = tmp_path / "pending.jsonl"
    feed.write_text(json.dumps(order) + "\n")
    run_id = trigger_run("order_fulfilment_nightly", {"feed": str(feed), "ship_within_s": 5, "ship_poll_s": 0.1})

    _, states = run_with_unreachable_retry(nightly_dag(), run_id, "order.process", monkeypatch)

    assert (states["order.process"], states["order.compensate"]) == ("failed", "success"), states
    saga, steps = saga_row(order["order_id"])
    payment = next(s for s in steps if s["step"] == "payment")
    assert payment["action_attempts"] == 2, payment
    assert payment["error"].startswith("ServiceRetryableError"), payment["error"]
    assert payment["compensation_result"].get("status") == "voided", payment
    the_held_requests_land_as_replays(services, order["order_id"])
    assert saga["status"] == "compensated", saga
