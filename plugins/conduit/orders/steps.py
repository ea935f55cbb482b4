"""Each step of the order saga: an action and, where it changes something, its compensation.

Plain functions over a :class:`~conduit.saga.StepContext` and the services' hooks. Every call
carries a key derived from the saga and the step. A compensation first looks its action up by the
action's key (the action may have taken effect even if its answer was lost, or never happened),
then undoes it with a key of its own; what is already undone is left alone.
"""

from __future__ import annotations

import time
from typing import Any

from conduit.orders.model import parse_order
from conduit.saga import StepContext


def validate(ctx: StepContext) -> dict[str, Any]:
    order = parse_order(ctx.payload)
    return {"order_id": order.order_id, "amount": order.amount, "currency": order.currency}


def reserve_inventory(ctx: StepContext) -> dict[str, Any]:
    from conduit.hooks.order_services import InventoryHook

    order = parse_order(ctx.payload)
    items = [item.model_dump() for item in order.items]
    reservation = InventoryHook().reserve(order.order_id, items, ctx.key())
    return {"reservation_id": reservation["reservation_id"]}


def release_inventory(ctx: StepContext) -> dict[str, Any]:
    from conduit.hooks.order_services import InventoryHook

    hook = InventoryHook()
    reservation = hook.find_reservation(ctx.key())
    if reservation is None:
        return {"released": None, "reason": "nothing was reserved"}
    if reservation["status"] != "released":
        reservation = hook.release(reservation["reservation_id"], ctx.key("release"))
    return {"released": reservation["reservation_id"], "status": reservation["status"]}


def score_fraud(ctx: StepContext) -> dict[str, Any]:
    from conduit.hooks.order_services import FraudHook

    return {"score": FraudHook().score(ctx.payload, ctx.key())}


def authorize_payment(ctx: StepContext) -> dict[str, Any]:
    from conduit.hooks.order_services import PaymentHook

    order = parse_order(ctx.payload)
    authorization = PaymentHook().authorize(order.order_id, order.amount, order.currency, ctx.key())
    return {"authorization_id": authorization["authorization_id"]}


def void_or_refund_payment(ctx: StepContext) -> dict[str, Any]:
    """Void an authorization; refund it if it was captured already."""
    from conduit.hooks.order_services import PaymentHook

    hook = PaymentHook()
    authorization = hook.find_authorization(ctx.key())
    if authorization is None:
        return {"payment": None, "reason": "nothing was authorized"}
    auth_id, status = authorization["authorization_id"], authorization["status"]
    if status == "authorized":
        status = hook.void(auth_id, ctx.key("void"))["status"]
    elif status == "captured":
        status = hook.refund(auth_id, ctx.key("refund"))["status"]
    return {"payment": auth_id, "status": status}


def create_shipment(ctx: StepContext) -> dict[str, Any]:
    from conduit.hooks.order_services import ShippingHook

    order = parse_order(ctx.payload)
    shipment = ShippingHook().create_shipment(order.order_id, order.address.model_dump(), ctx.key())
    # created_at anchors the wait for it to ship (logged with the result, so a retry keeps it)
    return {"shipment_id": shipment["shipment_id"], "created_at": time.time()}


def cancel_shipment(ctx: StepContext) -> dict[str, Any]:
    from conduit.hooks.order_services import ShippingHook

    hook = ShippingHook()
    shipment = hook.find_shipment(ctx.key())
    if shipment is None:
        return {"cancelled": None, "reason": "no shipment was created"}
    if shipment["status"] != "cancelled":
        shipment = hook.cancel_shipment(shipment["shipment_id"], ctx.key("cancel"))
    return {"cancelled": shipment["shipment_id"], "status": shipment["status"]}


def capture_payment(ctx: StepContext) -> dict[str, Any]:
    from conduit.hooks.order_services import PaymentHook

    authorization_id = ctx.results["payment"]["authorization_id"]
    return {"captured": authorization_id, "status": PaymentHook().capture(authorization_id, ctx.key())["status"]}
