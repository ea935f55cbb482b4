"""Airflow assets of a sync, derived from its spec alone: DAG files build them at parse time,
when no connection may be looked up.

Asset names are global in Airflow (one name, one URI, or both DAGs get an "asset conflict"),
so every name carries the spec's name.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAlias

from conduit.specs.model import SyncSpec

# Airflow validates the URIs of provider schemes (a ``postgres://`` URI needs host, port and
# database, which only the connection knows) and leaves ``x-`` schemes alone by design.
ERP_TABLE_SCHEME = "x-conduit-erp"


def erp_table_asset(spec: SyncSpec) -> Asset:
    """The ERP table the sync writes, e.g. name ``conduit.crm_to_erp_customer_sync.public.erp_customers``,
    URI ``x-conduit-erp://erp_default/public/erp_customers`` (connection, schema, table)."""
    target = spec.target
    container, name = target.location  # (schema, table), or ("tryton", model)
    return Asset(
        name=f"conduit.{spec.name}.{container}.{name}",
        uri=f"{ERP_TABLE_SCHEME}://{target.conn_id}/{container}/{name}",
    )


def crm_changes_asset_name(spec: SyncSpec) -> str:
    """The asset CRM webhooks update when records of the sync's object change."""
    return f"conduit.{spec.name}.crm_changes"


def erp_changes_alias(spec: SyncSpec) -> AssetAlias:
    """The load's outlet. It adds an event for :func:`erp_table_asset` only when a real (not dry)
    run changed rows, so downstream DAGs react to data, not to every run."""
    return AssetAlias(name=f"conduit.{spec.name}.erp_changes")
