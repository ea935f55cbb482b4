"""The ``order_fulfilment_nightly`` DAG: every order in the new-orders feed as its own saga, fanned
out with a mapped task group, joined by a report. Runs at DAG-parse time: keep it light.

Per order (one map index of the ``order`` group): ``start`` opens the saga (a setup), ``process``
runs the flow as code (:func:`conduit.orders.flow.process_order`: the same steps, rules and
idempotency keys as ``order_fulfilment``), ``compensate`` (its teardown) undoes what the saga still
owes when it did not commit. ``report`` counts shipped / rejected / needs_review / compensated
orders from the saga log and fails when any saga is left for a person.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param, task_group

from conduit.operators.orders import OrderBatchReportOperator, PendingOrdersOperator
from conduit.orders.feed import default_feed
from conduit.orders.flow import ORDER_ACTIONS, ORDER_COMPENSATIONS, process_order
from conduit.orders.model import SAGA_ID_PREFIX
from conduit.saga.builder import COMPENSATION_RETRIES, FORWARD_RETRIES
from conduit.saga.operators import InlineCompensationOperator, InlineSagaOperator, SagaStartOperator

NIGHTLY_DAG_ID = "order_fulfilment_nightly"
THIS_ORDER = "ti.xcom_pull(task_ids='pending_orders')[ti.map_index]"


def build_nightly_order_dag(*, dag_id: str = NIGHTLY_DAG_ID, log_conn_id: str = "conduit_saga_default") -> DAG:
    with DAG(
        dag_id=dag_id,
        description="Nightly: one saga per pending order (mapped task group), joined by a report",
        schedule="30 1 * * *",
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        max_active_tasks=16,
        render_template_as_native_obj=True,
        default_args={"owner": "commerce", "retries": 2, "retry_delay": timedelta(seconds=10)},
        params={
            "feed": Param(default_feed(), type="string", title="New-orders feed (JSON Lines)"),
            "ship_within_s": Param(3600, type="integer", minimum=1, title="Ship within (seconds)"),
            "ship_poll_s": Param(10, type="number", minimum=0.05, title="Shipment status poll interval (seconds)"),
        },
        tags=["conduit", "saga", "orders"],
        doc_md=__doc__,
    ) as dag:
        pending = PendingOrdersOperator(task_id="pending_orders", feed="{{ params.feed }}")
        common = {"saga_id": f"{SAGA_ID_PREFIX}{{{{ {THIS_ORDER}['order_id'] }}}}", "log_conn_id": log_conn_id}

        @task_group(group_id="order", tooltip="one order's saga: start, process, compensate")
        def order_saga(order):  # noqa: ARG001 - the expansion; tasks read their order by map index
            start = SagaStartOperator(task_id="start", payload=f"{{{{ {THIS_ORDER} }}}}", retries=3, **common)
            process = InlineSagaOperator(task_id="process", flow=process_order,
                                         **{**FORWARD_RETRIES, "execution_timeout": timedelta(hours=2)}, **common)
            undo = InlineCompensationOperator(task_id="compensate", compensations=ORDER_COMPENSATIONS,
                                              actions=ORDER_ACTIONS, **COMPENSATION_RETRIES, **common)
            start.as_setup() >> process >> undo.as_teardown(setups=start)

        sagas = order_saga.expand(order=pending.output)
        report = OrderBatchReportOperator(
            task_id="report", trigger_rule="all_done", log_conn_id=log_conn_id,
            orders="{{ ti.xcom_pull(task_ids='pending_orders') }}")
        # after the compensations; and after ``process`` too, or a failed ``process`` (its only
        # other downstream a teardown) would count as a leaf and fail the run: the report decides
        sagas >> report
        dag.task_dict["order.compensate"] >> report
    return dag
