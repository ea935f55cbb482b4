"""An order as the flow receives it (trigger form, REST API, or a new-orders feed), validated
before anything is reserved or charged: a bad order fails with the field and the order id."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conduit.exceptions import BusinessRejection

SAGA_ID_PREFIX = "order-"  # an order's saga id: its business key, the seed of every idempotency key


def saga_id_for(order_id: str, attempt: int = 1) -> str:
    """The saga of an order's ``attempt``: the first is ``order-<id>``, a later one (the order tried
    again after an earlier saga was compensated: new idempotency keys) ``order-<id>-attempt-<n>``."""
    return f"{SAGA_ID_PREFIX}{order_id}" + (f"-attempt-{attempt}" if attempt > 1 else "")


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0, le=10_000)


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=200)
    line1: str = Field(min_length=1, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    country: str = Field(pattern=r"^[A-Z]{2}$")


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    order_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    items: list[OrderItem] = Field(min_length=1, max_length=100)
    amount: float = Field(gt=0, le=1_000_000)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    email: str | None = Field(default=None, max_length=254)
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    address: Address


def parse_order(data: Any) -> Order:
    """The order, or a :class:`BusinessRejection` naming the order id and every bad field."""
    try:
        return Order.model_validate(data)
    except ValidationError as exc:
        from conduit.specs.model import validation_problems

        order_id = data.get("order_id") if isinstance(data, dict) else None
        problems = "; ".join(f"{field}: {problem}" for field, problem in validation_problems(exc, frozenset()))
        raise BusinessRejection(f"order {order_id!r} is invalid: {problems}") from None
