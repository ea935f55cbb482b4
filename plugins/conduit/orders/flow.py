"""The order saga as code, for the nightly batch: the same steps, rules and compensations as the
task-per-step ``order_fulfilment`` DAG, run inside one task per order (:mod:`conduit.saga.inline`).
A batch has nobody to ask, so an order the rules send to a person is released and reported as
``needs_review``: trigger ``order_fulfilment`` for it with ``attempt: 2`` (its saga here is
``order-<id>``, compensated; the attempt is a new saga that asks the person)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from conduit.orders import steps
from conduit.saga import StepContext
from conduit.saga.inline import InlineSaga

# the compensable steps' actions: a compensation repeats its action first when its outcome is
# unknown (the flow's task died in the call, or it failed on a 429/5xx or an unanswered request:
# conduit.saga.operators.result_to_undo)
ORDER_ACTIONS: dict[str, Callable[[StepContext], Any]] = {
    "inventory": steps.reserve_inventory,
    "payment": steps.authorize_payment,
    "shipping": steps.create_shipment,
}
ORDER_COMPENSATIONS: dict[str, Callable[[StepContext], Any]] = {
    "inventory": steps.release_inventory,
    "payment": steps.void_or_refund_payment,
    "shipping": steps.cancel_shipment,
}
RULES_FILE = "order_routing.yaml"
NEEDS_REVIEW = "needs a person's review"


def route(ctx: StepContext) -> dict[str, Any]:
    """The routing rules on the order and its fraud score; the decision is the step's logged result."""
    from conduit.operators.rules import rules_path
    from conduit.rules.engine import evaluate
    from conduit.rules.model import load_rules

    rules = load_rules(rules_path(RULES_FILE))
    return {"rules": rules.name, **asdict(evaluate(rules, {"order": ctx.payload, "fraud": ctx.results["fraud"]}))}


def wait_until_shipped(*, within_s: float, poll_s: float, sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.time):
    """A step action that polls the shipment until it ships, failing (no retry) when it does not
    ship in time or was cancelled: the compensations are the fallback. The time counts from the
    step's first attempt (the saga log's), so a retried task does not wait ``within_s`` again."""

    def action(ctx: StepContext) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from conduit.hooks.order_services import ShippingHook

        hook, shipment_id = ShippingHook(), ctx.results["shipping"]["shipment_id"]
        deadline = (ctx.started_at if ctx.started_at is not None else clock()) + within_s
        while True:
            status = hook.shipment(shipment_id)["status"]
            if status == "shipped":
                return {"shipment_id": shipment_id, "status": status}
            if status != "created":
                raise AirflowFailException(f"shipment {shipment_id} is {status}, not shipped")
            if clock() >= deadline:
                raise AirflowFailException(f"the shipment did not ship in time: {shipment_id} not shipped "
                                           f"within {within_s:g}s")
            sleep(poll_s)

    return action


def process_order(saga: InlineSaga) -> None:
    params = (saga.context or {}).get("params") or {}
    saga.step("validate", steps.validate)
    saga.step("inventory", ORDER_ACTIONS["inventory"], compensable=True)
    saga.step("fraud", steps.score_fraud)
    decision = saga.step("route", route)
    if decision["outcome"] == "reject":
        saga.abort(f"reject by rule {decision['rule']}: {decision['reason']}")
    if decision["outcome"] == "review":
        saga.abort(f"{NEEDS_REVIEW} (rule {decision['rule']}: {decision['reason']})")
    if decision["outcome"] != "approve":  # an outcome added to the rules file later: never a charge
        saga.abort(f"{NEEDS_REVIEW} (rule {decision['rule']} chose {decision['outcome']!r}, "
                   f"which this flow does not know; it knows approve, review and reject)")
    saga.step("payment", ORDER_ACTIONS["payment"], compensable=True)
    saga.step("shipping", ORDER_ACTIONS["shipping"], compensable=True)
    saga.step("wait_for_shipment", wait_until_shipped(within_s=float(params.get("ship_within_s", 3600)),
                                                      poll_s=float(params.get("ship_poll_s", 10))))
    saga.step("capture", steps.capture_payment)
    saga.commit()


def outcome(saga: dict[str, Any]) -> str:
    """How the nightly report counts a finished saga."""
    if saga["status"] == "committed":
        return "shipped"
    if saga["status"] != "compensated":
        return saga["status"]  # compensation_failed, or still compensating: a person must look
    cause = saga["cause"] or ""
    if cause.startswith("reject by rule"):
        return "rejected"
    return "needs_review" if cause.startswith(NEEDS_REVIEW) else "compensated"
