"""The ``order_fulfilment`` DAG: one saga per order. Runs at DAG-parse time: keep it light.

validate → inventory reserve ∥ fraud score → rules (approve | human review | reject) → payment
authorise → shipment → wait until shipped (deferred) → capture → commit. When anything fails,
times out, is rejected or refused, the compensations run in reverse order (cancel the shipment,
void or refund the payment, release the stock) and the run fails with the original cause.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import DAG, Param

from conduit.operators.rules import RulesBranchOperator
from conduit.orders import steps
from conduit.orders.model import SAGA_ID_PREFIX
from conduit.saga import Saga
from conduit.sensors.shipping import ShipmentShippedSensor

DAG_ID = "order_fulfilment"
EXAMPLE_ORDER = {
    "order_id": "A-1001",
    "items": [{"sku": "SKU-1", "quantity": 2}],
    "amount": 120.0,
    "currency": "EUR",
    "email": "ada@example.com",
    "country": "DE",
    "address": {"name": "Ada Lovelace", "line1": "Main St 1", "city": "Berlin", "country": "DE"},
}
# as conduit.orders.model.saga_id_for; attempt n > 1 supersedes attempt n - 1, which must be compensated
SAGA_ID = (SAGA_ID_PREFIX + "{{ params.order.order_id }}"
           "{% if params.attempt > 1 %}-attempt-{{ params.attempt }}{% endif %}")
SUPERSEDES = ("{% if params.attempt > 1 %}" + SAGA_ID_PREFIX + "{{ params.order.order_id }}"
              "{% if params.attempt > 2 %}-attempt-{{ params.attempt - 1 }}{% endif %}{% endif %}")


def build_order_dag(*, dag_id: str = DAG_ID, review_timeout: timedelta = timedelta(hours=4)) -> DAG:
    with DAG(
        dag_id=dag_id,
        description="One order as a saga: inventory, fraud check, payment, shipping; compensated on failure",
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=32,
        # saga tasks set their own retries (forward steps, compensations); these cover the rest
        default_args={"owner": "commerce", "retries": 2, "retry_delay": timedelta(seconds=10)},
        render_template_as_native_obj=True,
        params={
            "order": Param(EXAMPLE_ORDER, type="object", title="Order",
                           description="order_id, items [{sku, quantity}], amount, currency, email, country, address"),
            "ship_within_s": Param(86400, type="integer", minimum=1, title="Ship within (seconds)",
                                   description="How long to wait for the shipment to ship before undoing the order"),
            "ship_poll_s": Param(30, type="number", minimum=0.05, title="Shipment status poll interval (seconds)"),
            "attempt": Param(1, type="integer", minimum=1, title="Attempt",
                             description="1 for a new order. To try an order again whose saga ended compensated "
                                         "(e.g. the nightly batch's needs_review), the next number: a new saga "
                                         "with new idempotency keys, refused unless the one before it was "
                                         "compensated."),
        },
        tags=["conduit", "saga", "orders"],
        doc_md=__doc__,
    ) as dag:
        saga = Saga(saga_id=SAGA_ID, payload="{{ params.order }}", supersedes=SUPERSEDES)
        validate = saga.step("validate", action=steps.validate, retries=0)
        inventory = saga.step("inventory", action=steps.reserve_inventory, compensation=steps.release_inventory)
        fraud = saga.step("fraud", action=steps.score_fraud)
        route = RulesBranchOperator(
            task_id="route", rules_file="order_routing.yaml", saga_id=SAGA_ID,
            facts={"order": "{{ params.order }}", "fraud": "{{ ti.xcom_pull(task_ids='fraud') }}"},
            routes={"approve": "auto_approve", "review": "human_review", "reject": "reject"},
        )
        auto_approve = EmptyOperator(task_id="auto_approve")
        human_review = HITLBranchOperator(
            task_id="human_review", subject="Approve order {{ params.order.order_id }}?",
            body=("Order **{{ params.order.order_id }}**: {{ params.order.amount }} {{ params.order.currency }}, "
                  "fraud score {{ ti.xcom_pull(task_ids='fraud')['score'] }}.\n\n"
                  "Rule: {{ ti.xcom_pull(task_ids='route', key='decision')['rule'] }} — "
                  "{{ ti.xcom_pull(task_ids='route', key='decision')['reason'] }}"),
            options=["Approve", "Reject"], options_mapping={"Approve": "approved", "Reject": "refused"},
            defaults=["Reject"], response_timeout=review_timeout, retries=0,
        )
        reject = saga.abort("reject")
        refused = saga.abort("refused", cause="refused in human review (or no answer in time)")
        approved = EmptyOperator(task_id="approved", trigger_rule="none_failed_min_one_success")
        payment = saga.step("payment", action=steps.authorize_payment, compensation=steps.void_or_refund_payment)
        shipping = saga.step("shipping", action=steps.create_shipment, compensation=steps.cancel_shipment)
        wait = ShipmentShippedSensor(
            task_id="wait_for_shipment", shipment_id="{{ ti.xcom_pull(task_ids='shipping.action')['shipment_id'] }}",
            max_wait_s="{{ params.ship_within_s }}", poll_interval="{{ params.ship_poll_s }}",
            since="{{ ti.xcom_pull(task_ids='shipping.action').get('created_at') }}",  # a retry keeps the deadline
            on_failure_callback=saga.cause_on_failure("the shipment did not ship in time"),
        )
        capture = saga.step("capture", action=steps.capture_payment)

        saga.start >> validate >> [inventory, fraud] >> route
        route >> [auto_approve, human_review, reject]
        human_review >> [approved, refused]
        auto_approve >> approved
        approved >> payment
        payment >> shipping
        shipping >> wait
        wait >> capture
        saga.end(after=capture)
    return dag
