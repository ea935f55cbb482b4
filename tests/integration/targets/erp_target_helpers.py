"""Builders shared by the ERP target tests and the child processes they start."""

from __future__ import annotations

import hashlib

import pandas as pd

from conduit.specs.model import SyncSpec, parse_spec


def make_spec(schema: str, *, delete_mode: str = "soft") -> SyncSpec:
    return parse_spec(
        {
            "name": "customer_sync",
            "source": {"type": "hubspot", "properties": ["email", "lastmodifieddate", "vip", "createdate"]},
            "target": {"type": "sql", "table": "erp_customers", "schema": schema, "key": "customer_number",
                       "delete_mode": delete_mode},
            "mapping": {
                "customer_number": {"transforms": [{"type": "template", "template": "HS-C-{hs_object_id}"}],
                                    "nullable": False},
                "crm_id": {"source": "hs_object_id", "dtype": "integer", "nullable": False},
                "email": {"source": "email"},
                "vip": {"source": "vip", "dtype": "boolean"},
                "crm_created_at": {"source": "createdate", "dtype": "timestamp"},
            },
        },
        "test.yaml",
    )


def batch(*rows: tuple) -> pd.DataFrame:
    """Rows ``(crm_id, modified_at ISO, email[, vip])``; ``row_hash`` covers the mapped values."""
    ids = [r[0] for r in rows]
    frame = pd.DataFrame(
        {
            "customer_number": [f"HS-C-{i}" for i in ids],
            "crm_id": pd.array(ids, dtype="Int64"),
            "email": pd.array([r[2] for r in rows], dtype="str"),
            "vip": pd.array([r[3] if len(r) > 3 else False for r in rows], dtype="boolean"),
            "crm_created_at": pd.to_datetime(["2020-01-01T00:00:00Z"] * len(rows), utc=True),
            "source_modified_at": pd.to_datetime([r[1] for r in rows], utc=True, format="ISO8601"),
        }
    )
    frame["row_hash"] = [
        hashlib.sha256(repr(values).encode()).hexdigest()
        for values in frame[["customer_number", "crm_id", "email", "vip", "crm_created_at"]].itertuples(index=False)
    ]
    return frame
