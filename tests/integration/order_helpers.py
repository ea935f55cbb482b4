"""Helpers of the order saga tests: run the real order_fulfilment DAG and read what the order
services' ledgers and the saga log say happened."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from conduit.orders.dag import EXAMPLE_ORDER

DAGS = Path(__file__).resolve().parents[2] / "dags"
EFFECTS = ("reserve", "release", "authorize", "void", "capture", "refund", "create", "cancel")


def order_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags["order_fulfilment"]


def nightly_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags["order_fulfilment_nightly"]


def new_order(**changes) -> dict:
    return {**EXAMPLE_ORDER, "order_id": f"T-{uuid.uuid4().hex[:10]}", **changes}


def run_order(order: dict, **params):
    dag_run = order_dag().test(run_conf={"order": order, "ship_within_s": 30, "ship_poll_s": 0.1, **params})
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    return dag_run, states


def effects(services, order_id: str) -> dict[str, int]:
    """How many times each effect happened for the order, across the services' ledgers."""
    counts = dict.fromkeys(EFFECTS, 0)
    for entries in services.admin.ledger().values():
        for entry in entries:
            if entry["order_id"] == order_id and entry["op"] in counts:
                counts[entry["op"]] += 1
    return {op: n for op, n in counts.items() if n}


def saga_row(order_id: str) -> tuple[dict, list[dict]]:
    from conduit.hooks.saga_log import SagaLogHook

    log = SagaLogHook().get_conn()
    return log.saga(f"order-{order_id}"), log.steps(f"order-{order_id}")


def trigger_order_run(order: dict, **params) -> str:
    """A run of order_fulfilment made as the REST API's trigger makes it and started by the
    scheduler's own code, none of its tasks run yet (``airflow_runs.run_existing_dagrun`` runs
    them). Returns its run_id."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.types import DagRunTriggeredByType
    from airflow_runs import register_dags_and_unpause, scheduler_creates_and_starts_runs

    register_dags_and_unpause("order_fulfilment")
    run = trigger_dag("order_fulfilment", triggered_by=DagRunTriggeredByType.REST_API,
                      conf={"order": order, "ship_within_s": 30, "ship_poll_s": 0.1, **params})
    scheduler_creates_and_starts_runs()
    return run.run_id


def trigger_run(dag_id: str, conf: dict) -> str:
    """As :func:`trigger_order_run`, for any DAG: a triggered run the scheduler's own code starts,
    none of its tasks run yet. Only queued runs are started, and the DAG is paused again after:
    a scheduled DAG (the nightly) gets no run of its schedule, now or in a later test's scheduler
    loop (its ``max_active_runs`` would start that one instead)."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.executors.local_executor import LocalExecutor
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from airflow_runs import register_dags_and_unpause, set_paused

    register_dags_and_unpause(dag_id)
    run = trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.REST_API, conf=conf)
    time.sleep(1.05 - time.time() % 1)  # a run starts once run_after <= now(), in SQLite's whole seconds
    with create_session() as session:
        SchedulerJobRunner(job=Job(), executors=[LocalExecutor()])._start_queued_dagruns(session)
    set_paused(dag_id, True)
    return run.run_id


def wait_for(predicate, what: str, timeout: float = 60):
    """``predicate()``'s first truthy value, asked every 0.1 s; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value
