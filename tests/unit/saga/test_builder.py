"""The tasks a declared saga becomes (no run): setups, teardowns, the reverse compensation chain."""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.sdk import DAG

from conduit.saga import Saga


def noop(ctx):
    return {"step": ctx.step}


def build(**saga_kwargs):
    with DAG("saga_shape", schedule=None, start_date=pendulum.datetime(2025, 1, 1)) as dag:
        saga = Saga(saga_id="s-{{ params.id }}", **saga_kwargs)
        check = saga.step("check", action=noop)
        a = saga.step("a", action=noop, compensation=noop)
        b = saga.step("b", action=noop, compensation=noop)
        c = saga.step("c", action=noop, compensation=noop)
        saga.start >> check >> a >> b >> c
        saga.end(after=c)
    dag.validate()
    return dag


def test_steps_become_begin_action_compensate_and_compensations_run_in_reverse():
    dag = build()
    tasks = dag.task_dict
    assert "check" in tasks and "check.begin" not in tasks  # a read-only step is its action alone
    for step in "abc":
        assert tasks[f"{step}.begin"].is_setup and not tasks[f"{step}.action"].is_setup
        compensate = tasks[f"{step}.compensate"]
        assert compensate.is_teardown and compensate.upstream_task_ids >= {f"{step}.begin"}
        assert compensate.task_display_name == f"↩ {step}"
    # entered at begin, left from the action; the chain: commit -> c -> b -> a -> finalize
    assert tasks["a.begin"].upstream_task_ids == {"check"}
    assert tasks["b.begin"].upstream_task_ids == {"a.action"}
    assert tasks["commit"].upstream_task_ids == {"c.action"}
    assert tasks["c.compensate"].upstream_task_ids == {"c.begin", "commit"}
    assert tasks["b.compensate"].upstream_task_ids == {"b.begin", "c.compensate"}
    assert tasks["a.compensate"].upstream_task_ids == {"a.begin", "b.compensate"}
    finalize = tasks["finalize"]
    assert finalize.is_teardown and finalize.on_failure_fail_dagrun
    assert finalize.upstream_task_ids == {"a.compensate", "start"} and tasks["start"].is_setup


def test_forward_and_compensation_retries_and_notifiers():
    told = []
    dag = build(forward_retries={"retries": 7}, compensation_retries={"retries": 11}, notify=[told.append])
    tasks = dag.task_dict
    assert tasks["a.action"].retries == 7 and tasks["check"].retries == 7
    assert tasks["a.compensate"].retries == 11 and tasks["a.compensate"].execution_timeout is not None
    assert tasks["finalize"].on_failure_callback == [told.append]
    assert not build().task_dict["finalize"].on_failure_callback


def test_saga_tasks_that_call_services_retry_with_full_jitter_also_when_mapped():
    """Airflow's exponential backoff hashes dag, task, logical date and try number, not the map
    index: the nightly's mapped sagas failing together would come back at one instant. Their
    actions and compensations carry FullJitterRetryPolicy, which draws each wait anew."""
    from airflow.dag_processing.dagbag import DagBag

    from conduit.retries import FullJitterRetryPolicy

    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[3] / "dags"))
    nightly, single = bag.dags["order_fulfilment_nightly"], bag.dags["order_fulfilment"]
    jittered = [nightly.task_dict["order.process"], nightly.task_dict["order.compensate"],
                single.task_dict["payment.action"], single.task_dict["payment.compensate"]]
    assert all(isinstance(task.retry_policy, FullJitterRetryPolicy) for task in jittered)
    process = nightly.task_dict["order.process"]
    waits = {process.retry_policy.evaluate(RuntimeError("503"), try_number=1, max_tries=3).retry_delay
             for _ in range(200)}
    assert len(waits) > 150  # 200 mapped orders failing at once: spread over the window, not one instant
