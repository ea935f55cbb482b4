"""The saga log behind an ordinary Airflow connection: ``postgres`` (production) or ``sqlite``
(embedded), like the ERP connection. For example::

    AIRFLOW_CONN_CONDUIT_SAGA_DEFAULT='postgresql://saga:secret@db:5432/conduit'
"""

from __future__ import annotations

import os
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from conduit.saga.log import SagaLog


# One engine (one pool) per saga-log database per process. A task process builds one either way;
# a process that runs many tasks (``dag.test()`` runs every task of a 200-order batch in one) kept
# an idle pooled connection per task: dozens of PostgreSQL's 100. The pid in the key: a
# forked child never uses its parent's pooled sockets.
_ENGINES: dict[tuple, Any] = {}
_MAX_ENGINES = 4
_ENGINES_LOCK = threading.Lock()


def _new_engine(db):
    import sqlalchemy

    if db.kind == "postgres":
        import psycopg

        dsn = db.dsn
        return sqlalchemy.create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn),
                                        pool_pre_ping=True)
    return sqlalchemy.create_engine(f"sqlite:///{db.path}", connect_args={"timeout": 30})


class SagaLogHook(BaseHook):
    """Gives the :class:`~conduit.saga.log.SagaLog` of a connection, its tables created on first
    use (``__init__`` does no I/O)."""

    conn_name_attr = "saga_conn_id"
    default_conn_name = "conduit_saga_default"
    conn_type = "postgres"
    hook_name = "Conduit saga log"

    def __init__(self, saga_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.saga_conn_id = saga_conn_id

    def get_conn(self) -> SagaLog:
        return self.log_store

    @cached_property
    def log_store(self) -> SagaLog:
        from conduit.saga.log import SagaLog

        log = SagaLog(self.engine)
        log.ensure_schema()
        return log

    @cached_property
    def engine(self):
        from conduit.targets.registry import sql_database

        db = sql_database(self.get_connection(self.saga_conn_id), "the saga log")
        key = (os.getpid(), db.kind, db.dsn if db.kind == "postgres" else str(db.path))
        with _ENGINES_LOCK:
            engine = _ENGINES.pop(key, None) or _new_engine(db)
            _ENGINES[key] = engine  # the most recently used last
            while len(_ENGINES) > _MAX_ENGINES:  # databases no longer used (a test's schema) let go
                _ENGINES.pop(next(iter(_ENGINES))).dispose()
            return engine

    def test_connection(self) -> tuple[bool, str]:
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - the UI shows the reason
            return False, str(exc)
        return True, "saga log database reachable"
