"""The revenue report's pure functions: what counts, how segments fall, the sync metadata."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from conduit.etl.revenue import (
    REPORT_COLUMNS,
    RevenueDataError,
    SegmentRules,
    check_orders,
    customer_revenue,
    report_rows,
    segment_counts,
    sync_metadata,
)

AS_OF = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def customers(*rows):
    return pd.DataFrame(rows, columns=["customer_number", "active"])


def orders(*rows):
    """(order_id, customer_number, days before AS_OF, status, amount[, currency])"""
    records = [
        (oid, cust, AS_OF - timedelta(days=days), status, amount, *(rest or ("EUR",)))
        for oid, cust, days, status, amount, *rest in rows
    ]
    frame = pd.DataFrame(records, columns=["order_id", "customer_number", "ordered_at", "status", "amount", "currency"])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"], utc=True)
    return frame


def by_customer(report):
    return report.set_index("customer_number")


def test_only_completed_orders_count_as_revenue_and_orders():
    report = customer_revenue(
        customers(("C1", True)),
        orders(
            ("O1", "C1", 10, "completed", 100.10),
            ("O2", "C1", 20, "completed", 0.20),
            ("O3", "C1", 5, "cancelled", 1000.0),
            ("O4", "C1", 3, "refunded", 500.0),
            ("O5", "C1", 1, "pending", 70.0),
        ),
        as_of=AS_OF,
    )
    row = by_customer(report).loc["C1"]
    assert row["revenue"] == pytest.approx(100.30)
    assert row["order_count"] == 2
    assert row["last_order_date"] == pd.Timestamp("2026-02-19")  # the completed O1, not O3-O5
    assert row["first_order_date"] == pd.Timestamp("2026-02-09")
    assert list(report.columns) == list(REPORT_COLUMNS)


def test_sums_in_cents_without_float_drift():
    many = [(f"O{i}", "C1", 10, "completed", 0.10) for i in range(1000)]
    report = customer_revenue(customers(("C1", True)), orders(*many), as_of=AS_OF)
    assert report.loc[0, "revenue"] == 100.0  # exactly, where a float sum gives 99.9999999999986


def test_only_active_customers_are_reported_and_ones_without_orders_are_none():
    report = customer_revenue(
        customers(("C1", True), ("C2", False), ("C3", True)),
        orders(("O1", "C1", 10, "completed", 50.0), ("O2", "C2", 10, "completed", 99.0),
               ("O3", "C9", 10, "completed", 1.0)),  # an order of an unknown customer: not reported
        as_of=AS_OF,
    )
    assert report["customer_number"].tolist() == ["C1", "C3"]
    c3 = by_customer(report).loc["C3"]
    assert (c3["revenue"], c3["order_count"], c3["segment"]) == (0.0, 0, "none")
    assert pd.isna(c3["last_order_date"]) and pd.isna(c3["first_order_date"])


def test_orders_after_as_of_do_not_count_so_a_rerun_gives_the_same_report():
    frame = orders(("O1", "C1", 10, "completed", 50.0), ("O2", "C1", -1, "completed", 70.0))
    report = customer_revenue(customers(("C1", True)), frame, as_of=AS_OF)
    assert by_customer(report).loc["C1", "revenue"] == 50.0


@pytest.mark.parametrize(
    ("rows", "segment"),
    [
        ([], "none"),
        ([("O1", 10, "cancelled", 9000.0)], "none"),
        ([("O1", 400, "completed", 9000.0), ("O2", 181, "completed", 10.0)], "at_risk"),
        ([("O1", 400, "completed", 100.0), ("O2", 180, "completed", 10.0)], "regular"),  # 180 days: not yet
        ([("O1", 400, "completed", 2999.99), ("O2", 30, "completed", 0.01)], "vip"),
        ([("O1", 30, "completed", 3500.0)], "vip"),  # vip wins over new
        ([("O1", 90, "completed", 10.0)], "new"),
        ([("O1", 91, "completed", 10.0)], "regular"),
    ],
)
def test_segments(rows, segment):
    frame = orders(*[(oid, "C1", days, status, amount) for oid, days, status, amount in rows])
    report = customer_revenue(customers(("C1", True)), frame, as_of=AS_OF)
    assert by_customer(report).loc["C1", "segment"] == segment


def test_segment_rules_are_parameters():
    frame = orders(("O1", "C1", 30, "completed", 100.0))
    rules = SegmentRules(vip_revenue=100.0, at_risk_days=10, new_days=5)
    report = customer_revenue(customers(("C1", True)), frame, as_of=AS_OF, rules=rules)
    assert report.loc[0, "segment"] == "at_risk"
    with pytest.raises(ValueError, match="negative"):
        SegmentRules(at_risk_days=-1)


def test_segment_counts_name_every_segment():
    report = customer_revenue(customers(("C1", True), ("C2", True)),
                              orders(("O1", "C1", 1, "completed", 5.0)), as_of=AS_OF)
    assert segment_counts(report) == {"vip": 0, "regular": 0, "at_risk": 0, "new": 1, "none": 1}


def test_bad_orders_are_named_with_table_column_and_order():
    frame = orders(("O1", "C1", 1, "shipped", 5.0), ("O2", "C1", 1, "completed", -1.0),
                   ("O3", "C1", 1, "completed", 5.0, "USD"))
    with pytest.raises(RevenueDataError) as info:
        check_orders(frame)
    message = str(info.value)
    assert "erp_orders.status" in message and "O1 ('shipped')" in message
    assert "erp_orders.amount" in message and "O2 (-1.0)" in message
    assert "erp_orders.currency" in message and "USD (e.g. order O3)" in message
    with pytest.raises(RevenueDataError, match=r"erp_orders: missing column\(s\) currency"):
        check_orders(frame.drop(columns="currency"))


def test_no_orders_at_all_reports_every_active_customer_as_none():
    empty = orders()
    report = customer_revenue(customers(("C1", True)), empty, as_of=AS_OF)
    assert report.loc[0, "segment"] == "none" and report.loc[0, "revenue"] == 0


# --- the triggering sync ------------------------------------------------------------------------


def event(run_id, ts, **extra):
    return {"source_dag_id": "crm_to_erp_customer_sync", "source_run_id": run_id, "timestamp": ts,
            "extra": {"sync": "crm_to_erp_customer_sync", "run_id": run_id, **extra}}


def test_sync_metadata_of_one_event():
    meta = sync_metadata([event("scheduled__1", "2026-03-01T02:00:00+00:00", inserted=600, updated=2,
                                deleted=1, watermark_ms=1_772_000_000_000)])
    assert meta == {"events": 1, "sync": "crm_to_erp_customer_sync", "sync_run_id": "scheduled__1",
                    "sync_run_ids": ["scheduled__1"], "inserted": 600, "updated": 2, "deleted": 1,
                    "watermark_ms": 1_772_000_000_000}


def test_sync_metadata_adds_up_several_syncs_and_names_the_latest():
    meta = sync_metadata([
        event("manual__2", "2026-03-01T03:00:00+00:00", inserted=0, updated=5, deleted=0, watermark_ms=20),
        event("scheduled__1", "2026-03-01T02:00:00+00:00", inserted=600, updated=0, deleted=1, watermark_ms=10),
    ])
    assert meta["sync_run_id"] == "manual__2" and meta["sync_run_ids"] == ["scheduled__1", "manual__2"]
    assert (meta["events"], meta["inserted"], meta["updated"], meta["deleted"], meta["watermark_ms"]) == (2, 600, 5, 1, 20)


def test_sync_metadata_without_events_is_a_manual_run():
    assert sync_metadata([]) == {"events": 0, "sync": None, "sync_run_id": None, "sync_run_ids": [],
                                 "inserted": 0, "updated": 0, "deleted": 0, "watermark_ms": None}


def test_report_rows_carry_dates_run_and_source():
    report = customer_revenue(customers(("C1", True), ("C2", True)),
                              orders(("O1", "C1", 1, "completed", 5.005)), as_of=AS_OF)
    rows = report_rows(report, run_id="asset_triggered__x", as_of=AS_OF, source_sync_run_id="scheduled__1")
    first, second = rows.to_dict("records")
    assert first["last_order_date"].isoformat() == "2026-02-28" and second["last_order_date"] is None
    assert (first["etl_run_id"], first["source_sync_run_id"]) == ("asset_triggered__x", "scheduled__1")
    assert first["as_of"] == AS_OF
