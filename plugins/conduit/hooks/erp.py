"""The ERP customer master behind an ordinary Airflow connection.

A ``postgres`` connection (host, port, login, password, schema = database) gives a
``PostgresErpTarget``; a ``sqlite`` connection (host = file path, as Airflow's own sqlite
connections have it) gives a ``SqliteErpTarget``; a ``tryton`` connection gives the Tryton target,
whose state lives in the ``state_conn_id`` connection (``conduit.targets.registry`` decides). For
example::

    AIRFLOW_CONN_ERP_DEFAULT='postgresql://postgres@127.0.0.1:5432/erp'
    AIRFLOW_CONN_ERP_DEFAULT='sqlite://%2Fvar%2Flib%2Fconduit%2Ferp.db'
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from conduit.targets.registry import postgres_dsn, sqlite_path  # noqa: F401 - importable from here too

if TYPE_CHECKING:
    from conduit.targets.base import ErpTarget
    from conduit.targets.sql import SqlErpTarget


class ErpHook(BaseHook):
    """Gives the ERP target for a connection; builds it on first use (``__init__`` does no I/O)."""

    conn_name_attr = "erp_conn_id"
    default_conn_name = "erp_default"
    conn_type = "postgres"  # the production kind; sqlite connections are accepted as well
    hook_name = "Conduit ERP"

    def __init__(self, erp_conn_id: str = default_conn_name, *, state_conn_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.erp_conn_id = erp_conn_id
        self.state_conn_id = state_conn_id

    def get_target(self) -> ErpTarget:
        return self._target

    get_conn = get_target

    def get_state_store(self) -> SqlErpTarget:
        """The SQL store of the sync's state (watermark, quarantine, defects): the target itself
        for a SQL connection, else the ``state_conn_id`` store, built without the sink (a reader of
        the state, such as the health view, needs no Tryton connection)."""
        from conduit.targets.registry import state_store_for

        return state_store_for(self.erp_conn_id, self.get_connection, state_conn_id=self.state_conn_id)

    @cached_property
    def _target(self) -> ErpTarget:
        from conduit.targets.registry import target_for

        return target_for(self.get_connection(self.erp_conn_id), self.get_connection,
                          state_conn_id=self.state_conn_id)

    def test_connection(self) -> tuple[bool, str]:
        try:
            return self.get_target().test_connection()
        except Exception as exc:  # the UI's Test button shows any failure as text
            return False, str(exc)

    def describe(self) -> dict[str, Any]:
        """Plain facts for lineage: ``kind``, ``host``, ``port``, ``database``, ``path``."""
        return self.get_target().describe()
