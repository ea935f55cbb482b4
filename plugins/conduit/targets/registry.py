"""Which target a connection gives: the one place that reads a connection's type.

A SQL connection (``postgres``/``postgresql``, ``sqlite``) is a :class:`SqlDatabase`: the ERP table
target, the state store of other targets, the saga log and the ETL all open it through here. A
``tryton`` connection gives the Tryton target, which keeps the sync's state in a SQL database of
its own. A new ERP is a new module plus one line in :data:`TARGETS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from conduit.exceptions import TargetConfigError

if TYPE_CHECKING:
    from airflow.sdk.definitions.connection import Connection

    from conduit.targets.base import ErpTarget
    from conduit.targets.sql import SqlErpTarget

# libpq settings a postgres connection may carry in its extras; other extras are Airflow's own
_LIBPQ_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "options", "application_name")
POSTGRES_CONN_TYPES = ("postgres", "postgresql")


@dataclass(frozen=True)
class SqlDatabase:
    """Where a SQL connection points: a PostgreSQL DSN or a SQLite file (never printed: a DSN may
    hold a password)."""

    kind: Literal["postgres", "sqlite"]
    dsn: str | None = None
    path: str | None = None

    def __repr__(self) -> str:
        return f"SqlDatabase(kind={self.kind!r})"

    def target(self) -> SqlErpTarget:
        from conduit.targets.sql import PostgresErpTarget, SqliteErpTarget

        return PostgresErpTarget(self.dsn) if self.kind == "postgres" else SqliteErpTarget(self.path)


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


def sql_database(conn: Connection, needed_for: str = "the ERP") -> SqlDatabase:
    """The SQL database of a postgres or sqlite connection; any other type is a clear error."""
    if conn.conn_type in POSTGRES_CONN_TYPES:
        return SqlDatabase("postgres", dsn=postgres_dsn(conn))
    if conn.conn_type == "sqlite":
        return SqlDatabase("sqlite", path=sqlite_path(conn))
    raise TargetConfigError(f"connection {conn.conn_id!r} has type {conn.conn_type!r}; "
                            f"{needed_for} needs a postgres or sqlite connection")


def _sql_target(conn: Connection, get_connection: Callable[[str], Connection], state_conn_id: str | None):
    return sql_database(conn).target()


def _tryton_target(conn: Connection, get_connection: Callable[[str], Connection], state_conn_id: str | None):
    from conduit.hooks.tryton import TrytonHook
    from conduit.targets.tryton import TrytonTarget

    if not state_conn_id:
        raise TargetConfigError(f"the Tryton target of connection {conn.conn_id!r} needs a state store: "
                                "set target.state.conn_id to a postgres or sqlite connection")
    state = sql_database(get_connection(state_conn_id), "the sync's state store").target()
    return TrytonTarget(TrytonHook(tryton_conn_id=conn.conn_id), state)


TARGETS: dict[str, Callable[..., ErpTarget]] = {
    "postgres": _sql_target,
    "postgresql": _sql_target,
    "sqlite": _sql_target,
    "tryton": _tryton_target,
}


def state_store_for(conn_id: str, get_connection: Callable[[str], Any], *,
                    state_conn_id: str | None = None) -> SqlErpTarget:
    """Where a sync keeps its state (watermark, quarantine, defects), without building its sink:
    a ``state_conn_id`` other than ``conn_id`` (a target that cannot hold the state, as the spec's
    ``target.state.conn_id`` says) is that SQL connection's store, and ``conn_id``, then unread,
    need not be defined where only the state is read; otherwise the target keeps it in its own
    database, which must then be a SQL one."""
    if state_conn_id and state_conn_id != conn_id:
        return sql_database(get_connection(state_conn_id), "the sync's state store").target()
    conn = get_connection(conn_id)
    if TARGETS.get(conn.conn_type) is not _sql_target:
        raise TargetConfigError(f"the target of connection {conn.conn_id!r} (type {conn.conn_type!r}) keeps no "
                                "state of its own: name its state store (target.state.conn_id)")
    return sql_database(conn).target()


def target_for(conn: Connection, get_connection: Callable[[str], Any], *,
               state_conn_id: str | None = None) -> ErpTarget:
    """The target of a connection (its state store from ``state_conn_id`` where it needs one)."""
    factory = TARGETS.get(conn.conn_type)
    if factory is None:
        raise TargetConfigError(f"connection {conn.conn_id!r} has type {conn.conn_type!r}; the ERP needs a postgres or "
                                f"sqlite connection, or one of {', '.join(sorted(set(TARGETS) - {'postgresql'}))}")
    return factory(conn, get_connection, state_conn_id)
