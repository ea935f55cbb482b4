"""The ETL's tables in the ERP database (PostgreSQL, or SQLite when embedded), through SQLAlchemy
Core so that one table definition serves both:

* ``erp_orders``: the orders (seeded by :mod:`conduit.etl.orders`), keyed by ``order_id``;
* ``erp_customer_revenue``: the report, one row per active customer, replaced as a whole by each
  ETL run in one transaction (readers see the previous report or the new one, never a mix);
* ``erp_customer_revenue_runs``: one row per ETL run (upserted by run id) with what it read from
  the triggering sync runs and what it wrote.

They live beside the customer table (same schema; SQLite has one). Writers of the report take a
lock, so two runs never interleave their replace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy import Connection, Engine, MetaData, Table

ORDERS_TABLE = "erp_orders"
REPORT_TABLE = "erp_customer_revenue"
RUNS_TABLE = "erp_customer_revenue_runs"


def postgres_engine(dsn: str) -> Engine:
    import psycopg
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    def connect():
        conn = psycopg.connect(dsn, application_name="conduit-etl")
        conn.adapters.register_loader("timestamptz", _infinity_loader())
        conn.execute("SET TIME ZONE 'UTC'")
        conn.commit()
        return conn

    return create_engine("postgresql+psycopg://", creator=connect, poolclass=NullPool)


def _infinity_loader():
    """PostgreSQL's ``timestamptz`` loader, with ``'infinity'``/``'-infinity'`` (which psycopg
    refuses, naming no row) read as the latest/earliest datetime: the report's checks then see
    the row, and name it or leave it out as for any other date (see ``conduit.etl.revenue``)."""
    from psycopg.types.datetime import TimestamptzLoader

    class InfinityTimestamptzLoader(TimestamptzLoader):
        def load(self, data):
            if bytes(data) == b"infinity":
                return datetime.max.replace(tzinfo=UTC)
            if bytes(data) == b"-infinity":
                return datetime.min.replace(tzinfo=UTC)
            return super().load(data)

    return InfinityTimestamptzLoader


def sqlite_engine(path: str) -> Engine:
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(f"sqlite:///{path}", poolclass=NullPool, connect_args={"timeout": 60})


def engine_for(erp: str) -> Engine:
    """A PostgreSQL URL/DSN (``postgresql://...``, ``host=...``) or a SQLite file path."""
    if erp.startswith(("postgres://", "postgresql://")) or "host=" in erp or "dbname=" in erp:
        return postgres_engine(erp)
    return sqlite_engine(erp.removeprefix("sqlite:///"))


@dataclass(frozen=True)
class Tables:
    metadata: MetaData
    orders: Table
    report: Table
    runs: Table
    customers: Any  # a lightweight ``table()``: the sync owns its definition


def define_tables(schema: str | None, customers_table: str = "erp_customers") -> Tables:
    from sqlalchemy import (
        JSON,
        BigInteger,
        CheckConstraint,
        Column,
        Date,
        DateTime,
        Integer,
        MetaData,
        Numeric,
        String,
        Table,
        Text,
        column,
        table,
    )

    md = MetaData(schema=schema)
    orders = Table(
        ORDERS_TABLE, md,
        Column("order_id", Text, primary_key=True),
        Column("customer_number", Text, nullable=False, index=True),
        Column("ordered_at", DateTime(timezone=True), nullable=False),
        Column("status", Text, nullable=False),
        Column("amount", Numeric(12, 2), CheckConstraint("amount >= 0", name="erp_orders_amount_not_negative"),
               nullable=False),
        Column("currency", String(3), nullable=False),
    )
    report = Table(
        REPORT_TABLE, md,
        Column("customer_number", Text, primary_key=True),
        Column("revenue", Numeric(14, 2), nullable=False),
        Column("order_count", Integer, nullable=False),
        Column("first_order_date", Date),
        Column("last_order_date", Date),
        Column("segment", Text, nullable=False),
        Column("as_of", DateTime(timezone=True), nullable=False),
        Column("etl_run_id", Text, nullable=False),
        Column("source_sync_run_id", Text),
    )
    runs = Table(
        RUNS_TABLE, md,
        Column("etl_run_id", Text, primary_key=True),
        Column("as_of", DateTime(timezone=True), nullable=False),
        Column("computed_at", DateTime(timezone=True), nullable=False),
        Column("customers", Integer, nullable=False),
        Column("revenue_total", Numeric(16, 2), nullable=False),
        Column("segments", JSON, nullable=False),
        Column("source_events", Integer, nullable=False),
        Column("source_sync", Text),
        Column("source_sync_run_id", Text),
        Column("source_sync_run_ids", JSON, nullable=False),
        Column("source_inserted", Integer, nullable=False),
        Column("source_updated", Integer, nullable=False),
        Column("source_deleted", Integer, nullable=False),
        Column("source_watermark_ms", BigInteger),
    )
    customers = table(customers_table, column("customer_number"), column("active"), schema=schema)
    return Tables(md, orders, report, runs, customers)


class RevenueStore:
    """Reads customers and orders, seeds orders and replaces the report, each in one transaction."""

    def __init__(self, engine: Engine, *, schema: str | None, customers_table: str = "erp_customers"):
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self.schema = schema if self.postgres else None  # SQLite: one schema per file
        self.customers_table = customers_table

    @cached_property
    def tables(self) -> Tables:
        return define_tables(self.schema, self.customers_table)

    def where(self, table: str) -> str:
        return f"{self.schema}.{table}" if self.schema else table

    def _lock(self, conn: Connection, name: str) -> None:
        from sqlalchemy import text

        if self.postgres:  # SQLite writers are serialised by the database lock
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": name})

    def ensure_tables(self) -> None:
        """Create the ETL's tables if missing (safe to run concurrently)."""
        with self.engine.begin() as conn:
            self._lock(conn, f"conduit:etl:ddl:{self.schema}")
            self.tables.metadata.create_all(conn, checkfirst=True)

    # --- reading ---------------------------------------------------------------------------------

    def read_customers(self, conn: Connection) -> pd.DataFrame:
        import pandas as pd
        from sqlalchemy import select

        c = self.tables.customers
        return pd.read_sql(select(c.c.customer_number, c.c.active), conn)

    def read_orders(self, conn: Connection) -> pd.DataFrame:
        import pandas as pd
        from sqlalchemy import select

        o = self.tables.orders
        frame = pd.read_sql(select(*o.c).order_by(o.c.order_id), conn)
        frame["ordered_at"] = pd.to_datetime(frame["ordered_at"], utc=True)
        frame["amount"] = frame["amount"].astype("float64")
        return frame

    def read_inputs(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Customers and orders from one snapshot (PostgreSQL: REPEATABLE READ)."""
        engine = self.engine.execution_options(isolation_level="REPEATABLE READ") if self.postgres else self.engine
        with engine.connect() as conn, conn.begin():
            return self.read_customers(conn), self.read_orders(conn)

    def read_report(self) -> pd.DataFrame:
        import pandas as pd
        from sqlalchemy import select

        r = self.tables.report
        with self.engine.connect() as conn:
            return pd.read_sql(select(*r.c).order_by(r.c.customer_number), conn)

    def read_run(self, etl_run_id: str) -> dict[str, Any] | None:
        from sqlalchemy import select

        r = self.tables.runs
        with self.engine.connect() as conn:
            row = conn.execute(select(*r.c).where(r.c.etl_run_id == etl_run_id)).mappings().first()
        return dict(row) if row else None

    # --- writing ---------------------------------------------------------------------------------

    def seed_orders(self, *, seed: int, as_of: datetime) -> dict[str, int]:
        """Generate orders for every customer in the ERP and insert those not there yet."""
        from sqlalchemy import func, select

        from conduit.etl.orders import generate_orders

        self.ensure_tables()
        orders = self.tables.orders
        with self.engine.begin() as conn:
            self._lock(conn, f"conduit:etl:seed:{self.where(ORDERS_TABLE)}")
            numbers = self.read_customers(conn)["customer_number"].dropna().astype(str)
            frame = generate_orders(numbers, seed=seed, as_of=as_of)
            before = conn.execute(select(func.count()).select_from(orders)).scalar_one()
            if len(frame):
                conn.execute(self._insert_missing(orders), _records(frame))
            after = conn.execute(select(func.count()).select_from(orders)).scalar_one()
        return {"customers": len(set(numbers)), "generated": len(frame), "inserted": after - before}

    def _insert_missing(self, table: Table):
        if self.postgres:
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table).on_conflict_do_nothing(index_elements=[table.primary_key.columns[0].name])

    def replace_report(self, rows: pd.DataFrame, run: Mapping[str, Any]) -> dict[str, Any]:
        """The report becomes ``rows`` and the run's row is written, together or not at all. A run
        older than one that already wrote (a cleared and rerun earlier run) writes nothing: the
        newer report stays (``superseded_by`` names its run)."""
        from sqlalchemy import delete, func, insert, select

        report, runs = self.tables.report, self.tables.runs
        run = {**run, "as_of": _utc(run["as_of"])}  # SQLite keeps the wall clock and drops the zone
        with self.engine.begin() as conn:
            self._lock(conn, f"conduit:etl:write:{self.where(REPORT_TABLE)}")
            newest = conn.execute(select(runs.c.etl_run_id, runs.c.as_of)
                                  .where(runs.c.etl_run_id != run["etl_run_id"])
                                  .order_by(runs.c.as_of.desc()).limit(1)).first()
            if newest is not None and _utc(newest.as_of) > _utc(run["as_of"]):
                return {"replaced": 0, "written": 0, "superseded_by": newest.etl_run_id}
            replaced = conn.execute(delete(report)).rowcount
            rows[[c.name for c in report.columns]].to_sql(
                report.name, conn, schema=self.schema, if_exists="append", index=False, chunksize=5000,
                dtype={c.name: c.type for c in report.columns})  # typed even where a column is all None
            written = conn.execute(select(func.count()).select_from(report)).scalar_one()  # drivers differ
            conn.execute(delete(runs).where(runs.c.etl_run_id == run["etl_run_id"]))
            conn.execute(insert(runs), [{**run, "computed_at": datetime.now(UTC)}])
        return {"replaced": replaced, "written": written}


def _utc(instant: datetime) -> datetime:
    """Aware UTC (SQLite hands timestamps back naive, as the UTC they were written in)."""
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = frame.astype(object).where(frame.notna(), None)
    out["ordered_at"] = [ts.to_pydatetime() for ts in frame["ordered_at"]]
    return out.to_dict("records")
