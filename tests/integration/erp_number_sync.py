"""A sync keyed by an ERP customer number the CRM keeps in a property of its own: an integer key
that a contact can lack. ``erp_number_target`` makes (spec, target) ready on a real SQLite file
or a real PostgreSQL schema, for a fixture parametrized over both."""

from __future__ import annotations

from conduit.specs.model import parse_spec
from conduit.targets import PostgresErpTarget, SqliteErpTarget


def erp_number_spec(schema: str, conn_id: str = "hubspot_default"):
    return parse_spec({
        "name": "erp_number_sync",
        "source": {"type": "hubspot", "conn_id": conn_id, "properties": ["email", "erp_number", "lastmodifieddate"]},
        "target": {"type": "sql", "table": "erp_customers", "schema": schema, "key": "erp_number"},
        "mapping": {"erp_number": {"source": "erp_number", "dtype": "integer"},
                    "crm_id": {"source": "hs_object_id", "dtype": "integer"},
                    "email": {"source": "email"}},
        "quality": {"suite": "erp_numbers.yaml", "policy": "quarantine", "max_rejected_ratio": 0.5},
    }, "erp_number_sync.yaml")


def erp_number_target(request, tmp_path, conn_id: str = "hubspot_default"):
    """(spec, target) of the database kind ``request.param`` names ("sqlite" or "postgres"), ready."""
    if request.param == "sqlite":
        spec, target = erp_number_spec("main", conn_id), SqliteErpTarget(tmp_path / "erp.db")
    else:
        spec = erp_number_spec(request.getfixturevalue("pg_schema"), conn_id)
        target = PostgresErpTarget(request.getfixturevalue("pg_server_dsn"))
    target.ensure_ready(spec)
    return spec, target
