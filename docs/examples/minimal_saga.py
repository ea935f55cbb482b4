"""A minimal saga (the README's example): reserve stock, then authorise a payment; if the payment
fails, the stock is released. Copy it into your DAGs folder and adapt the steps."""

from airflow.sdk import DAG, Param

from conduit.hooks.order_services import InventoryHook, PaymentHook
from conduit.saga import Saga, StepContext


def reserve(ctx: StepContext) -> dict:  # ctx.key() is the same on every retry, clear and rerun
    order = ctx.payload
    return InventoryHook().reserve(order["order_id"], order["items"], ctx.key())


def release(ctx: StepContext) -> dict:  # "it never happened" is done too: look the action up by its key
    found = InventoryHook().find_reservation(ctx.key())
    if found is None or found["status"] == "released":
        return {"released": None}
    return InventoryHook().release(found["reservation_id"], ctx.key("release"))


def authorize(ctx: StepContext) -> dict:
    order = ctx.payload
    return PaymentHook().authorize(order["order_id"], order["amount"], "EUR", ctx.key())


def void(ctx: StepContext) -> dict:
    found = PaymentHook().find_authorization(ctx.key())
    if found is None or found["status"] != "authorized":
        return {"voided": None}
    return PaymentHook().void(found["authorization_id"], ctx.key("void"))


with DAG("minimal_saga", schedule=None, params={"order": Param({}, type="object")},
         render_template_as_native_obj=True, tags=["example"]) as dag:
    saga = Saga(saga_id="order-{{ params.order.order_id }}", payload="{{ params.order }}")
    stock = saga.step("inventory", action=reserve, compensation=release)
    payment = saga.step("payment", action=authorize, compensation=void)
    saga.start >> stock >> payment
    saga.end(after=payment)  # commit, the compensations in reverse order, finalize
