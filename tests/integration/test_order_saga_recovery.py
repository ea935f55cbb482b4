"""Exactly-once effects of the order saga when Airflow runs tasks more than once: a compensation
killed with SIGKILL in the middle of its call and then run again, and a failed saga run cleared and
rerun. Real Airflow (``dag.test()``, the scheduler's own clear), real services over HTTP, the saga
log on PostgreSQL; the services' ledgers are the proof."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from airflow.sdk import DagRunState
from airflow_runs import dag_runs, run_existing_dagrun
from order_helpers import DAGS, effects, new_order, order_dag, run_order, saga_row

pytestmark = pytest.mark.postgres

DAG_ID = "order_fulfilment"
CHILD = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["order_fulfilment"]
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
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalar(select(TaskInstance).where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id,
                                                       TaskInstance.task_id == task_id))
        assert ti.state == "running" and ti.max_tries > 0
        ti.state, ti.end_date = "up_for_retry", timezone.utcnow()


def wait_for(predicate, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


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
