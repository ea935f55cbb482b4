"""Edges of the revenue ETL on real databases (a SQLite file; PostgreSQL when reachable): an order
date the report cannot compute with is named, not a driver or pandas error, and nothing is
written; a run's ``as_of`` in any time zone is the same instant for "which run is newer"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, text
from test_etl_store import store_with_customers

from conduit.etl.steps import run_revenue_etl
from conduit.etl.store import RevenueStore, engine_for
from conduit.exceptions import RevenueDataError

AS_OF = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
SUITE = Path(__file__).resolve().parents[3] / "include" / "expectations" / "customer_revenue.yaml"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    store = store_with_customers(request, tmp_path, [{"n": "HS-C-1", "a": True}, {"n": "HS-C-2", "a": True}])
    engine = store.engine
    store.ensure_tables()
    with engine.begin() as conn:
        conn.execute(insert(store.tables.orders), [
            {"order_id": "SO-1", "customer_number": "HS-C-1", "ordered_at": AS_OF - timedelta(days=3),
             "status": "completed", "amount": 100, "currency": "EUR"}])
    return store


def add_order(store: RevenueStore, order_id: str, ordered_at: str) -> None:
    """An order written as the ERP's own SQL would (PostgreSQL accepts 'infinity' in timestamptz)."""
    table = store.where("erp_orders")
    with store.engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {table} VALUES (:id, 'HS-C-2', :at, 'completed', 5, 'EUR')"),
                     {"id": order_id, "at": ordered_at})


@pytest.mark.parametrize("ordered_at", ["0001-01-01 00:00:00+00", "1500-06-30 12:00:00+00"])
def test_an_order_date_out_of_the_computable_range_is_named_and_nothing_is_written(store, ordered_at):
    run_revenue_etl(store, SUITE, run_id="run-A", as_of=AS_OF)
    before = store.read_report()
    add_order(store, "SO-BAD", ordered_at)

    with pytest.raises(RevenueDataError, match=r"erp_orders\.ordered_at: .*SO-BAD"):
        run_revenue_etl(store, SUITE, run_id="run-B", as_of=AS_OF + timedelta(hours=1))
    assert store.read_report().equals(before) and store.read_run("run-B") is None


@pytest.mark.postgres
def test_postgres_infinite_order_dates_are_named_or_placed_after_as_of(pg_server_dsn, pg_schema):
    """'-infinity' is before any as_of: the run fails naming the order. 'infinity' is after it:
    like any order placed since as_of, it neither counts nor fails the run."""
    engine = engine_for(pg_server_dsn)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE TABLE "{pg_schema}".erp_customers '
                          "(customer_number text PRIMARY KEY, active boolean NOT NULL)"))
        conn.execute(text(f"INSERT INTO \"{pg_schema}\".erp_customers VALUES ('HS-C-1', true), ('HS-C-2', true)"))
    store = RevenueStore(engine, schema=pg_schema)
    store.ensure_tables()
    add_order(store, "SO-LATER", "infinity")
    summary = run_revenue_etl(store, SUITE, run_id="run-A", as_of=AS_OF)
    assert (summary["written"], summary["revenue_total"]) == (2, 0.0)

    add_order(store, "SO-NEVER", "-infinity")
    with pytest.raises(RevenueDataError, match=r"erp_orders\.ordered_at: .*SO-NEVER"):
        run_revenue_etl(store, SUITE, run_id="run-B", as_of=AS_OF + timedelta(hours=1))
    assert set(store.read_report()["etl_run_id"]) == {"run-A"} and store.read_run("run-B") is None


def test_as_of_in_another_time_zone_is_compared_as_the_same_instant(store):
    """Run B reports as of 03:00 in Berlin (02:00 UTC, the night DST starts there later that
    month), run C as of 02:30 UTC: C is the newer run and must write its report."""
    berlin = ZoneInfo("Europe/Berlin")
    run_b = datetime(2026, 3, 1, 3, 0, tzinfo=berlin)
    run_c = datetime(2026, 3, 1, 2, 30, tzinfo=UTC)
    assert run_c > run_b

    run_revenue_etl(store, SUITE, run_id="run-B", as_of=run_b)
    newer = run_revenue_etl(store, SUITE, run_id="run-C", as_of=run_c)
    assert newer.get("superseded_by") is None and newer["written"] == 2
    assert set(store.read_report()["etl_run_id"]) == {"run-C"}
    recorded = store.read_run("run-B")["as_of"]
    recorded = recorded if recorded.tzinfo else recorded.replace(tzinfo=UTC)  # SQLite hands it back naive
    assert recorded == run_b

    rerun_b = run_revenue_etl(store, SUITE, run_id="run-B", as_of=run_b)  # B cleared and rerun: C stays
    assert (rerun_b["written"], rerun_b["superseded_by"]) == (0, "run-C")
