"""common-sql's column and table check operators on the ERP table, after each load.

They run on PostgreSQL ERP targets (the connection's own ``PostgresHook``); on the embedded SQLite
target the task is skipped and says why. A failed check fails the task without retries: the data
is wrong, retrying will not fix it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.sql.operators.sql import SQLColumnCheckOperator, SQLTableCheckOperator

from conduit.quality.target_checks import column_checks, qualified_table, table_checks

if TYPE_CHECKING:
    from airflow.sdk import Context

    from conduit.specs.model import SyncSpec



class _OnPostgresErpOnly:
    conn_id: str

    def execute(self, context: Context) -> Any:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowSkipException

        from conduit.targets.registry import sql_database

        conn = BaseHook.get_connection(self.conn_id)
        if sql_database(conn).kind != "postgres":
            raise AirflowSkipException(
                f"connection {self.conn_id!r} is a {conn.conn_type!r} connection: the SQL checks run on PostgreSQL "
                "ERP targets")
        return super().execute(context)


class ErpColumnCheckOperator(_OnPostgresErpOnly, SQLColumnCheckOperator):
    """``SQLColumnCheckOperator`` with the checks a spec implies (see ``quality.target_checks``)."""

    ui_color = "#e6fcf5"

    def __init__(self, *, spec: SyncSpec, **kwargs) -> None:
        super().__init__(conn_id=spec.target.conn_id, table=qualified_table(spec), column_mapping=column_checks(spec),
                         retry_on_failure=False, **kwargs)


class ErpTableCheckOperator(_OnPostgresErpOnly, SQLTableCheckOperator):
    """``SQLTableCheckOperator`` with the checks a spec implies (see ``quality.target_checks``)."""

    ui_color = "#e6fcf5"

    def __init__(self, *, spec: SyncSpec, **kwargs) -> None:
        super().__init__(conn_id=spec.target.conn_id, table=qualified_table(spec), checks=table_checks(spec),
                         retry_on_failure=False, **kwargs)
