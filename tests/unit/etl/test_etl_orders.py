"""Seeded orders: deterministic, stable per customer, realistic enough to exercise every rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from conduit.etl.orders import CURRENCY, HISTORY_DAYS, PENDING_MAX_AGE, generate_orders
from conduit.etl.revenue import ORDER_COLUMNS, ORDER_STATUSES, check_orders, customer_revenue, segment_counts

AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
CUSTOMERS = [f"HS-C-{i}" for i in range(1, 401)]


def test_same_inputs_same_orders():
    a = generate_orders(CUSTOMERS, seed=7, as_of=AS_OF)
    b = generate_orders(list(reversed(CUSTOMERS)), seed=7, as_of=AS_OF)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(generate_orders(CUSTOMERS, seed=8, as_of=AS_OF))


def test_a_customers_orders_do_not_depend_on_the_other_customers():
    everyone = generate_orders(CUSTOMERS, seed=7, as_of=AS_OF)
    alone = generate_orders(["HS-C-17"], seed=7, as_of=AS_OF)
    pd.testing.assert_frame_equal(everyone[everyone["customer_number"] == "HS-C-17"].reset_index(drop=True), alone)


def test_orders_are_valid_and_realistic():
    frame = generate_orders(CUSTOMERS, seed=7, as_of=AS_OF)
    check_orders(frame)  # raises on anything the report could not use
    assert list(frame.columns) == list(ORDER_COLUMNS)
    assert frame["order_id"].is_unique
    assert set(frame["status"]) == set(ORDER_STATUSES)
    assert set(frame["currency"]) == {CURRENCY}
    assert frame["ordered_at"].min() >= AS_OF - timedelta(days=HISTORY_DAYS)
    assert frame["ordered_at"].max() <= AS_OF
    assert (frame["amount"] == frame["amount"].round(2)).all() and frame["amount"].min() >= 5
    pending = frame[frame["status"] == "pending"]
    assert (pending["ordered_at"] >= AS_OF - PENDING_MAX_AGE).all()
    shares = frame["status"].value_counts(normalize=True)
    assert 0.8 < shares["completed"] < 0.95
    ordering = frame["customer_number"].nunique() / len(CUSTOMERS)
    assert 0.75 < ordering < 0.95  # some customers never ordered


def test_seeded_orders_produce_every_segment():
    frame = generate_orders(CUSTOMERS, seed=7, as_of=AS_OF)
    report = customer_revenue(pd.DataFrame({"customer_number": CUSTOMERS, "active": True}), frame, as_of=AS_OF)
    assert all(count > 0 for count in segment_counts(report).values()), segment_counts(report)


def test_no_customers_no_orders():
    frame = generate_orders([], seed=7, as_of=AS_OF)
    assert frame.empty and list(frame.columns) == list(ORDER_COLUMNS)
