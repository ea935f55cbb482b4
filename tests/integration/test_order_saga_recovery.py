"""Exactly-once effects of the order saga when Airflow runs tasks more than once or loses them: a
compensation killed with SIGKILL in the middle of its call and then run again, a failed saga run
cleared and rerun, an action killed while its request waits in the service, a step's begin task
lost after registering the step. Real Airflow (``dag.test()``, the scheduler's own clear and
mark-failed), real services over HTTP, the saga log on PostgreSQL; the services' ledgers are the
proof."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from airflow.sdk import DagRunState
from airflow_runs import dag_runs, run_existing_dagrun
from order_helpers import (
    DAGS,
    effects,
    new_order,
    nightly_dag,
    order_dag,
    run_order,
    saga_row,
    trigger_order_run,
    wait_for,
)

pytestmark = pytest.mark.postgres

DAG_ID = "order_fulfilment"
NIGHTLY_DAG_ID = "order_fulfilment_nightly"
HELD_S = 600.0  # a late request waits this long unless the test releases it first (it always does)
CHILD = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags[sys.argv[3] if len(sys.argv) > 3 else "order_fulfilment"]
dag.test(run_conf=json.loads(sys.argv[2]))
"""


def clear_and_restart(run_id: str, task_ids: list[str] | None = None) -> None:
    """What "Clear" in the UI does to a run (or some of its tasks), then the scheduler starting it."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance, clear_task_instances
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(TaskInstance).where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id)
        if task_ids:
            query = query.where(TaskInstance.task_id.in_(task_ids))
        clear_task_instances(list(session.scalars(query)), session, dag_run_state=DagRunState.RUNNING)
        run = session.scalar(select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.run_id == run_id))
        run.state = DagRunState.RUNNING


def worker_died(run_id: str, task_id: str) -> None:
    """What the scheduler makes of a task whose process vanished (no heartbeat): a failed try,
    retried after its retry delay, since the task has retries left."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk import timezone
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalar(select(TaskInstance).where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id,
                                                       TaskInstance.task_id == task_id))
        assert ti.state == "running" and ti.max_tries > 0
        ti.state, ti.end_date = "up_for_retry", timezone.utcnow()




def test_a_failed_saga_run_cleared_and_rerun_charges_and_releases_nothing_again(order_env):
    order = new_order()
    order_env.admin.faults(shipping={"fail_create_orders": [order["order_id"]]})
    dag_run, _ = run_order(order)
    assert dag_run.state == DagRunState.FAILED
    once = {"reserve": 1, "release": 1, "authorize": 1, "void": 1}
    assert effects(order_env, order["order_id"]) == once
    order_env.admin.clear_faults()  # the cause is gone: a rerun would now succeed, if it were allowed to
    calls = order_env.admin.requests()

    clear_and_restart(dag_run.run_id)
    state, states = run_existing_dagrun(order_dag(), dag_run.run_id)

    assert state == DagRunState.FAILED, states
    # steps that succeeded answer from the saga log without a call; the failed one is refused
    assert [states[t] for t in ("validate", "inventory.action", "payment.action")] == ["success"] * 3
    assert states["shipping.action"] == "failed"
    assert order_env.admin.requests()["payment"] == calls["payment"]
    assert order_env.admin.requests()["inventory"] == calls["inventory"]
    assert {states[t] for t in ("inventory.compensate", "payment.compensate", "shipping.compensate")} == {"skipped"}
    assert effects(order_env, order["order_id"]) == once
    saga, steps = saga_row(order["order_id"])
    assert saga["status"] == "compensated" and "undeliverable" in saga["cause"]
    assert {s["step"]: s["compensation_attempts"] for s in steps if s["compensable"]} == {
        "inventory": 1, "payment": 1, "shipping": 1}


def test_a_compensation_killed_in_the_middle_of_its_call_then_retried_is_done_once(order_env, monkeypatch):
    order = new_order()
    # the fraud check rejects the order; the release of its stock is performed, then the service
    # holds the answer back for a minute: the compensation task is in the middle of its call
    order_env.admin.faults(fraud={"scores": {order["order_id"]: 0.95}},
                           inventory={"fail_next": 1, "mode": "timeout", "delay_s": 60, "operation": "release"})
    slow = json.loads(os.environ["AIRFLOW_CONN_INVENTORY_DEFAULT"])
    child_env = {**os.environ, "AIRFLOW_CONN_INVENTORY_DEFAULT": json.dumps({**slow, "extra": {"timeout": 120}})}
    conf = {"order": order, "ship_within_s": 30, "ship_poll_s": 0.1}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(DAGS), json.dumps(conf)], env=child_env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: effects(order_env, order["order_id"]).get("release"), "the release to take effect")
        _, steps = saga_row(order["order_id"])
        inventory = next(s for s in steps if s["step"] == "inventory")
        assert (inventory["compensation_status"], inventory["compensation_attempts"]) == ("running", 1)
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    (run,) = [r for r in dag_runs(DAG_ID) if r["state"] == DagRunState.RUNNING]

    worker_died(run["run_id"], "inventory.compensate")
    state, states = run_existing_dagrun(order_dag(), run["run_id"])

    assert state == DagRunState.FAILED and states["inventory.compensate"] == "success", states
    assert effects(order_env, order["order_id"]) == {"reserve": 1, "release": 1}
    saga, steps = saga_row(order["order_id"])
    inventory = next(s for s in steps if s["step"] == "inventory")
    assert (inventory["compensation_status"], inventory["compensation_attempts"]) == ("done", 2)
    assert saga["status"] == "compensated" and saga["cause"].startswith("reject by rule high_fraud_score")


def mark_run_failed(run_id: str, dag_id: str = DAG_ID) -> None:
    """What "Mark run as failed" in the UI (PATCH dagRuns/{run} {"state": "failed"}) does: running
    tasks failed, pending ones skipped, teardowns left to run."""
    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        dag = DBDagBag().get_dag_for_run(run, session)
    set_dag_run_state_to_failed(dag=dag, run_id=run_id, commit=True)


def killed_while_authorising(services, run_conf: dict, dag_id: str = DAG_ID) -> str:
    """Run ``dag_id`` in a child process; the payment service holds the authorisation request (a
    queue) until the test releases it; once it is there, the child is killed with SIGKILL (the worker
    lost in the middle of the call) and the run marked failed. Returns the run."""
    services.admin.faults(payment={"fail_next": 1, "mode": "late", "delay_s": HELD_S, "operation": "authorize"})
    patient = json.loads(os.environ["AIRFLOW_CONN_PAYMENT_DEFAULT"])
    child_env = {**os.environ, "AIRFLOW_CONN_PAYMENT_DEFAULT": json.dumps({**patient, "extra": {"timeout": 120}})}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(DAGS), json.dumps(run_conf), dag_id], env=child_env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: services.admin.requests().get("payment", {}).get("authorize", {}).get("received"),
                 "the authorisation request to reach the service", timeout=120)
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    (run,) = [r for r in dag_runs(dag_id) if r["state"] == DagRunState.RUNNING]
    mark_run_failed(run["run_id"], dag_id)
    return run["run_id"]


def the_held_authorisation_lands_late(services, order_id: str) -> None:
    """The compensation has run while the request was still held (nothing replayed it yet); now the
    service does it, and it must find the repeat's key: a replay that authorises nothing more."""
    calls = services.admin.requests()["payment"]["authorize"]
    assert (calls["received"], calls["faulted"], calls.get("replayed", 0)) == (2, 1, 0), calls
    assert effects(services, order_id) == {"reserve": 1, "release": 1, "authorize": 1, "void": 1}
    assert services.admin.release_late() == 1
    wait_for(lambda: services.admin.requests()["payment"]["authorize"].get("replayed"),
             "the late authorisation request to be done", timeout=30)
    assert effects(services, order_id) == {"reserve": 1, "release": 1, "authorize": 1, "void": 1}
    assert services.admin.requests()["payment"]["authorize"] == {"received": 2, "faulted": 1, "replayed": 1}


def test_an_action_killed_while_its_request_waits_in_the_service_is_undone_when_it_lands_late(order_env):
    """The payment service holds the authorisation request; the action's worker is killed in the
    middle of the call and the run is marked failed. The compensation must not take "no
    authorisation yet" for "none ever": the request is done after it, and the money would stay held
    with the saga saying compensated."""
    order = new_order()
    run_id = killed_while_authorising(order_env, {"order": order, "ship_within_s": 30, "ship_poll_s": 0.1})
    assert effects(order_env, order["order_id"]) == {"reserve": 1}  # the authorisation is still waiting

    state, states = run_existing_dagrun(order_dag(), run_id)
    assert state == DagRunState.FAILED and states["payment.action"] == "failed", states
    assert states["payment.compensate"] == "success", states

    the_held_authorisation_lands_late(order_env, order["order_id"])
    saga, steps = saga_row(order["order_id"])
    assert saga["status"] == "compensated"
    payment = next(s for s in steps if s["step"] == "payment")
    assert (payment["action_status"], payment["compensation_status"]) == ("running", "done")
    assert payment["compensation_result"]["status"] == "voided"


def test_an_inline_saga_killed_while_its_request_waits_in_the_service_is_undone_when_it_lands_late(
        order_env, tmp_path):
    """The same for the nightly batch: the order's flow task is killed in the middle of the
    authorisation, the run marked failed; the order's compensation task undoes the late one too."""
    order = new_order()
    feed = tmp_path / "pending.jsonl"
    feed.write_text(json.dumps(order) + "\n")
    run_id = killed_while_authorising(order_env, {"feed": str(feed), "ship_within_s": 5, "ship_poll_s": 0.1},
                                      dag_id=NIGHTLY_DAG_ID)

    state, states = run_existing_dagrun(nightly_dag(), run_id)
    assert (states["order.process"], states["order.compensate"]) == ("failed", "success"), states

    the_held_authorisation_lands_late(order_env, order["order_id"])
    saga, steps = saga_row(order["order_id"])
    assert saga["status"] == "compensated"


def test_an_action_whose_every_try_timed_out_is_repeated_and_undone_before_its_requests_land(
        order_env, monkeypatch):
    """The payment service queues the authorisation requests longer than the hook waits: every try
    times out, the action fails (``ServiceOutcomeUnknown``) and the saga compensates. Finding no
    authorisation yet is not "none will ever be": the compensation repeats the action with its key
    (the service does it now) and voids it, and the held requests, done later, are replays."""
    from conduit.saga import builder

    monkeypatch.setitem(builder.FORWARD_RETRIES, "retries", 0)  # one task try: its two HTTP tries time out
    payment = json.loads(os.environ["AIRFLOW_CONN_PAYMENT_DEFAULT"])
    monkeypatch.setenv("AIRFLOW_CONN_PAYMENT_DEFAULT", json.dumps(
        {**payment, "extra": {"timeout": 0.5, "max_retries": 1, "backoff_max": 0.05}}))
    order_env.admin.faults(payment={"fail_next": 2, "mode": "late", "delay_s": HELD_S, "operation": "authorize"})
    order = new_order()

    dag_run, states = run_order(order)

    assert dag_run.state == DagRunState.FAILED, states
    assert (states["payment.action"], states["payment.compensate"]) == ("failed", "success"), states
    saga, steps = saga_row(order["order_id"])
    step = next(s for s in steps if s["step"] == "payment")
    assert step["error"].startswith("ServiceOutcomeUnknown"), step["error"]
    calls = order_env.admin.requests()["payment"]["authorize"]
    assert (calls["received"], calls["faulted"], calls.get("replayed", 0)) == (3, 2, 0), calls  # the repeat did it
    assert effects(order_env, order["order_id"]) == {"reserve": 1, "release": 1, "authorize": 1, "void": 1}
    assert order_env.admin.release_late() == 2
    wait_for(lambda: order_env.admin.requests()["payment"]["authorize"].get("replayed") == 2,
             "the two held authorisations to be done", timeout=30)
    assert effects(order_env, order["order_id"]) == {"reserve": 1, "release": 1, "authorize": 1, "void": 1}
    assert saga["status"] == "compensated"


def unreachable_saga_log() -> str:
    """The saga log's connection with a port nothing listens on: the database is unreachable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return json.dumps({**json.loads(os.environ["AIRFLOW_CONN_CONDUIT_SAGA_DEFAULT"]), "host": "127.0.0.1", "port": port})


def test_a_begin_task_lost_after_registering_its_step_leaves_the_saga_compensated(order_env, monkeypatch):
    """payment.begin registers the step, then its worker is lost before the try is reported; its
    retries find the saga log unreachable and it fails. Its action never runs and its compensation
    (a teardown of a failed setup) never runs: the stock reserved before is still released, and the
    saga, which owes nothing for payment, ends compensated instead of compensating for ever (which
    also refuses the order's next attempt)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk import TaskInstanceState, timezone
    from airflow.utils.session import create_session

    order = new_order()
    run_id = trigger_order_run(order)
    reachable, unreachable = os.environ["AIRFLOW_CONN_CONDUIT_SAGA_DEFAULT"], unreachable_saga_log()

    def before(ti):
        retry_of_begin = ti.task_id == "payment.begin" and ti.try_number > 1
        monkeypatch.setenv("AIRFLOW_CONN_CONDUIT_SAGA_DEFAULT", unreachable if retry_of_begin else reachable)

    def after(ti):
        if ti.task_id != "payment.begin":
            return
        if ti.try_number == 1:
            assert [s["step"] for s in saga_row(order["order_id"])[1]][-1] == "payment"  # registered
        with create_session() as session:
            tried = session.get(TaskInstance, ti.id)
            if ti.try_number == 1:  # its process vanished before it reported: a failed try
                tried.state = TaskInstanceState.UP_FOR_RETRY
            if tried.state == TaskInstanceState.UP_FOR_RETRY:  # its retry delay has passed (~35 s of test time)
                tried.end_date = timezone.utcnow() - timedelta(hours=1)

    state, states = run_existing_dagrun(order_dag(), run_id, before=before, after=after)

    assert state == DagRunState.FAILED, states
    assert (states["payment.begin"], states["payment.action"]) == ("failed", "upstream_failed"), states
    assert (states["payment.compensate"], states["inventory.compensate"]) == ("upstream_failed", "success"), states
    assert effects(order_env, order["order_id"]) == {"reserve": 1, "release": 1}
    saga, steps = saga_row(order["order_id"])
    assert saga["status"] == "compensated", saga
    payment = next(s for s in steps if s["step"] == "payment")
    assert (payment["action_status"], payment["compensation_status"]) == ("pending", "not_needed")
