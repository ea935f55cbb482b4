"""The ERP connection as a SQLAlchemy engine for the ETL (same connection as the sync's target)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from conduit.hooks.erp import ErpHook

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from conduit.etl.store import RevenueStore


class ErpReportingHook(ErpHook):
    """:class:`ErpHook` plus a SQLAlchemy engine and the ETL's :class:`RevenueStore` (no I/O in
    ``__init__``; connections open per transaction)."""

    hook_name = "Conduit ERP (reporting)"

    def get_engine(self) -> Engine:
        from conduit.etl.store import postgres_engine, sqlite_engine
        from conduit.targets.registry import sql_database

        db = sql_database(self.get_connection(self.erp_conn_id))
        return postgres_engine(db.dsn) if db.kind == "postgres" else sqlite_engine(db.path)

    def get_store(self, *, schema: str, customers_table: str) -> RevenueStore:
        from conduit.etl.store import RevenueStore

        return RevenueStore(self.get_engine(), schema=schema, customers_table=customers_table)
