"""Airflow assets of the revenue ETL, derived from the sync spec it reads from (light: DAG files
build them at parse time). Names carry the DAG id and the spec's schema, so they stay globally
unique, in the same ``x-conduit-erp`` scheme as the sync's table."""

from __future__ import annotations

from airflow.sdk import Asset

from conduit.lineage.assets import ERP_TABLE_SCHEME
from conduit.specs.model import SyncSpec

DAG_ID = "erp_customer_revenue_etl"


def erp_etl_table_asset(spec: SyncSpec, table: str) -> Asset:
    """A table beside the sync's customer table, e.g. name
    ``conduit.erp_customer_revenue_etl.public.erp_customer_revenue``."""
    schema, _ = spec.target.location
    return Asset(
        name=f"conduit.{DAG_ID}.{schema}.{table}",
        uri=f"{ERP_TABLE_SCHEME}://{spec.target.conn_id}/{schema}/{table}",
    )


def orders_asset(spec: SyncSpec) -> Asset:
    from conduit.etl.store import ORDERS_TABLE

    return erp_etl_table_asset(spec, ORDERS_TABLE)


def revenue_report_asset(spec: SyncSpec) -> Asset:
    from conduit.etl.store import REPORT_TABLE

    return erp_etl_table_asset(spec, REPORT_TABLE)
