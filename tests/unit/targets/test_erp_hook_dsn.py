"""How ErpHook turns an Airflow connection into a libpq DSN or a SQLite path (no I/O)."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import Connection
from psycopg.conninfo import conninfo_to_dict

from conduit.exceptions import TargetConfigError
from conduit.hooks.erp import postgres_dsn, sqlite_path


def test_postgres_dsn_carries_credentials_database_and_libpq_extras_only():
    conn = Connection(conn_id="erp", conn_type="postgres", host="db.internal", port=5433, login="etl",
                      password="p@ss word'", schema="erp",
                      extra=json.dumps({"sslmode": "require", "cursor": "named"}))

    assert conninfo_to_dict(postgres_dsn(conn)) == {
        "host": "db.internal", "port": "5433", "user": "etl", "password": "p@ss word'", "dbname": "erp",
        "sslmode": "require",
    }


def test_sqlite_path_comes_from_host_or_from_an_absolute_uri_path():
    assert sqlite_path(Connection(conn_id="a", conn_type="sqlite", host="/data/erp.db")) == "/data/erp.db"
    assert sqlite_path(Connection(conn_id="b", conn_type="sqlite", schema="/data/erp.db")) == "/data/erp.db"
    with pytest.raises(TargetConfigError, match="names no database file"):
        sqlite_path(Connection(conn_id="c", conn_type="sqlite"))
