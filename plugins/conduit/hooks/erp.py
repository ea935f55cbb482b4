"""The ERP customer master behind an ordinary Airflow connection.

A ``postgres`` connection (host, port, login, password, schema = database) gives a
``PostgresErpTarget``; a ``sqlite`` connection (host = file path, as Airflow's own sqlite
connections have it) gives a ``SqliteErpTarget``. For example::

    AIRFLOW_CONN_ERP_DEFAULT='postgresql://postgres@127.0.0.1:5432/erp'
    AIRFLOW_CONN_ERP_DEFAULT='sqlite://%2Fvar%2Flib%2Fconduit%2Ferp.db'
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from conduit.exceptions import TargetConfigError

if TYPE_CHECKING:
    from airflow.sdk.definitions.connection import Connection

    from conduit.targets.base import ErpTarget

# libpq settings a postgres connection may carry in its extras; other extras are Airflow's own
_LIBPQ_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "options", "application_name")


def postgres_dsn(conn: Connection) -> str:
    from psycopg.conninfo import make_conninfo

    extra = conn.extra_dejson
    settings = {
        "host": conn.host or None,
        "port": conn.port,
        "user": conn.login or None,
        "password": conn.password or None,
        "dbname": conn.schema or None,
        **{k: extra[k] for k in _LIBPQ_EXTRAS if extra.get(k) is not None},
    }
    return make_conninfo("", **{k: v for k, v in settings.items() if v is not None})


def sqlite_path(conn: Connection) -> str:
    """Airflow keeps a sqlite file in ``host``; ``sqlite:////abs/path.db`` puts it in ``schema``."""
    path = conn.host or conn.schema
    if not path:
        raise TargetConfigError(f"sqlite connection {conn.conn_id!r} names no database file (set host to its path)")
    return path


class ErpHook(BaseHook):
    """Gives the ERP target for a connection; builds it on first use (``__init__`` does no I/O)."""

    conn_name_attr = "erp_conn_id"
    default_conn_name = "erp_default"
    conn_type = "postgres"  # the production kind; sqlite connections are accepted as well
    hook_name = "Conduit ERP"

    def __init__(self, erp_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.erp_conn_id = erp_conn_id

    def get_target(self) -> ErpTarget:
        return self._target

    get_conn = get_target

    @cached_property
    def _target(self) -> ErpTarget:
        from conduit.targets.sql import PostgresErpTarget, SqliteErpTarget

        conn = self.get_connection(self.erp_conn_id)
        if conn.conn_type in ("postgres", "postgresql"):
            return PostgresErpTarget(postgres_dsn(conn))
        if conn.conn_type == "sqlite":
            return SqliteErpTarget(sqlite_path(conn))
        raise TargetConfigError(
            f"connection {self.erp_conn_id!r} has type {conn.conn_type!r}; the ERP needs a postgres or sqlite connection"
        )

    def test_connection(self) -> tuple[bool, str]:
        try:
            return self.get_target().test_connection()
        except Exception as exc:  # the UI's Test button shows any failure as text
            return False, str(exc)

    def describe(self) -> dict[str, Any]:
        """Plain facts for lineage: ``kind``, ``host``, ``port``, ``database``, ``path``."""
        return self.get_target().describe()
