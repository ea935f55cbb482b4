"""The ETL's tables on real databases (a SQLite file; PostgreSQL when reachable): seeding is
idempotent, a run replaces the report as a whole, a failed gate or write leaves the old one."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from sqlalchemy import text

from conduit.etl.steps import run_revenue_etl
from conduit.etl.store import RevenueStore, engine_for
from conduit.exceptions import QualityGateFailed

AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
SUITE = __import__("pathlib").Path(__file__).resolve().parents[3] / "include" / "expectations" / "customer_revenue.yaml"


def store_with_customers(request, tmp_path, customers: list[dict]) -> RevenueStore:
    """A store on SQLite or PostgreSQL (``request.param``) whose erp_customers holds ``customers``
    ({"n": number, "a": active})."""
    if request.param == "sqlite":
        engine, schema = engine_for(str(tmp_path / "erp.db")), None
    else:
        engine, schema = engine_for(request.getfixturevalue("pg_server_dsn")), request.getfixturevalue("pg_schema")
    where = f'"{schema}".erp_customers' if schema else "erp_customers"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {where} (customer_number text PRIMARY KEY, active boolean NOT NULL)"))
        conn.execute(text(f"INSERT INTO {where} VALUES (:n, :a)"), customers)
    return RevenueStore(engine, schema=schema or "public")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    return store_with_customers(request, tmp_path, [{"n": f"HS-C-{i}", "a": i % 10 != 0} for i in range(1, 201)])


def test_seeding_twice_inserts_once(store):
    first = store.seed_orders(seed=7, as_of=AS_OF)
    assert first["customers"] == 200 and first["inserted"] == first["generated"] > 0
    again = store.seed_orders(seed=7, as_of=AS_OF)
    assert again["inserted"] == 0
    _, orders = store.read_inputs()
    assert len(orders) == first["generated"]


def test_seeded_orders_round_trip_exactly(store):
    from conduit.etl.orders import generate_orders

    store.seed_orders(seed=7, as_of=AS_OF)
    _, stored = store.read_inputs()
    want = generate_orders([f"HS-C-{i}" for i in range(1, 201)], seed=7, as_of=AS_OF)
    got = stored.astype({"order_id": object, "customer_number": object, "status": object, "currency": object})
    want = want.astype({"order_id": object, "customer_number": object, "status": object, "currency": object})
    got["ordered_at"] = got["ordered_at"].astype("datetime64[us, UTC]")
    want["ordered_at"] = want["ordered_at"].astype("datetime64[us, UTC]")
    pd.testing.assert_frame_equal(got, want)


def test_a_run_replaces_the_report_and_records_its_source(store):
    store.seed_orders(seed=7, as_of=AS_OF)
    events = [{"source_dag_id": "crm_to_erp_customer_sync", "source_run_id": "manual__1",
               "timestamp": "2026-03-01T00:00:00+00:00",
               "extra": {"sync": "crm_to_erp_customer_sync", "run_id": "manual__1", "inserted": 200,
                         "updated": 0, "deleted": 0, "watermark_ms": 123}}]
    summary = run_revenue_etl(store, SUITE, run_id="run-1", as_of=AS_OF, events=events)
    assert summary["customers"] == summary["written"] == 180  # the active ones
    assert summary["source"]["sync_run_id"] == "manual__1"
    report = store.read_report()
    assert len(report) == 180 and set(report["etl_run_id"]) == {"run-1"}
    assert set(report["source_sync_run_id"]) == {"manual__1"}
    assert report["revenue"].astype(float).sum() == pytest.approx(summary["revenue_total"])
    run = store.read_run("run-1")
    assert (run["source_sync_run_id"], run["source_inserted"], run["source_watermark_ms"]) == ("manual__1", 200, 123)
    assert run["segments"] == summary["segments"] and run["source_sync_run_ids"] == ["manual__1"]

    # the same run again: same report, one run row; another run replaces every row
    again = run_revenue_etl(store, SUITE, run_id="run-1", as_of=AS_OF, events=events)
    assert again["replaced"] == 180
    pd.testing.assert_frame_equal(store.read_report(), report)
    run_revenue_etl(store, SUITE, run_id="run-2", as_of=AS_OF)
    report2 = store.read_report()
    assert set(report2["etl_run_id"]) == {"run-2"} and report2["source_sync_run_id"].isna().all()
    assert store.read_run("run-2")["source_events"] == 0


def test_a_failed_gate_writes_nothing(store, tmp_path):
    store.seed_orders(seed=7, as_of=AS_OF)
    run_revenue_etl(store, SUITE, run_id="run-1", as_of=AS_OF)
    strict = tmp_path / "strict.yaml"
    strict.write_text("name: strict\nexpectations:\n  - type: expect_column_values_to_be_in_set\n"
                      "    kwargs: {column: segment, value_set: [vip]}\n")
    with pytest.raises(QualityGateFailed, match=r"erp_customer_revenue: policy block: .*segment"):
        run_revenue_etl(store, strict, run_id="run-2", as_of=AS_OF)
    assert set(store.read_report()["etl_run_id"]) == {"run-1"} and store.read_run("run-2") is None


def test_without_orders_every_active_customer_is_none(store):
    summary = run_revenue_etl(store, SUITE, run_id="run-1", as_of=AS_OF)
    assert summary["segments"]["none"] == 180 and summary["orders_read"] == 0
