"""The sink ledger: what a sync last wrote to a target that keeps no bookkeeping of its own (an ERP
behind an HTTP API), one row per record key, in the sync's SQL state store.

It holds what such a target cannot: the source version each record was written from
(``source_modified_at``, so older data never overwrites newer), when the sync first and last wrote
it, and which keys belong to the sync (a full refresh deletes only those). It does not stand in for
the target's data: reconciliation reads the target itself. A batch's ledger rows are written once
the batch is in the target, so after a kill a retried load compares with the target, writes what
is missing, and the ledger catches up.

A write is announced before it is made: its pending entry (:class:`PendingWrite`, in
``conduit_sink_ledger_pending``: the key, the version and the hash of the values it writes) goes in
before the target is written, and leaves in the transaction that records the write. A process
killed in between leaves the pending entry; the next load, whatever it does, first settles it
against the target: the target holds the values, so the write was made and the version is the
pending one; or it does not, and the entry goes. The ledger thus knows a version a killed load
wrote even when no retry of that load comes (a deletion, an older version, a full refresh next).
The pending entries are a table of their own: a ledger table made before them is kept as it is.

Rendering is pure (named parameters in the store's dialect); :func:`read` and :func:`record` run
the statements through the store's own transaction and error handling.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conduit.targets.sql_render import Dialect

LEDGER_TABLE = "conduit_sink_ledger"
PENDING_TABLE = "conduit_sink_ledger_pending"
COLUMNS = ("record_key", "source_modified_at", "active", "deleted_at", "created_at", "updated_at", "last_run_id")
_SQLITE_TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class LedgerEntry:
    record_key: str
    source_modified_at: datetime | None
    active: bool
    deleted_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_run_id: str | None = None


@dataclass(frozen=True)
class PendingWrite:
    """A write announced and perhaps made: the target holds ``row_hash``'s values if it was."""

    record_key: str
    source_modified_at: datetime | None
    row_hash: str


def create_table(d: Dialect, schema: str) -> list[str]:
    text, ts, boolean = d.column_types["string"], d.column_types["timestamp"], d.column_types["boolean"]
    return [
        f"CREATE TABLE IF NOT EXISTS {d.qualify(schema, LEDGER_TABLE)} (\n"
        f"  sync_name {text} NOT NULL,\n"
        f"  record_key {text} NOT NULL,\n"
        f"  source_modified_at {ts},\n"
        f"  active {boolean} NOT NULL,\n"
        f"  deleted_at {ts},\n"
        f"  created_at {ts} NOT NULL,\n"
        f"  updated_at {ts} NOT NULL,\n"
        f"  last_run_id {text},\n"
        f"  PRIMARY KEY (sync_name, record_key)\n)",
    ]


def create_pending_table(d: Dialect, schema: str) -> list[str]:
    text, ts = d.column_types["string"], d.column_types["timestamp"]
    return [
        f"CREATE TABLE IF NOT EXISTS {d.qualify(schema, PENDING_TABLE)} (\n"
        f"  sync_name {text} NOT NULL,\n"
        f"  record_key {text} NOT NULL,\n"
        f"  source_modified_at {ts},\n"
        f"  row_hash {text} NOT NULL,\n"
        f"  announced_at {ts} NOT NULL,\n"
        f"  run_id {text},\n"
        f"  PRIMARY KEY (sync_name, record_key)\n)",
    ]


def select(d: Dialect, schema: str, *, by_keys: bool) -> str:
    where = "sync_name = " + d.param("sync_name")
    if by_keys:
        where += " AND " + d.any_of.format(column="record_key", param=d.param("keys"))
    return (f"SELECT {', '.join(COLUMNS)} FROM {d.qualify(schema, LEDGER_TABLE)} "
            f"WHERE {where} ORDER BY record_key")


def upsert(d: Dialect, schema: str) -> str:
    """One record's entry; the first write's ``created_at`` stays."""
    p = d.param
    return (
        f"INSERT INTO {d.qualify(schema, LEDGER_TABLE)} AS l (sync_name, {', '.join(COLUMNS)})\n"
        f"VALUES ({p('sync_name')}, {p('record_key')}, {p('source_modified_at')}, {p('active')}, "
        f"{p('deleted_at')}, {p('now')}, {p('now')}, {p('run_id')})\n"
        "ON CONFLICT (sync_name, record_key) DO UPDATE SET source_modified_at = excluded.source_modified_at, "
        "active = excluded.active, deleted_at = excluded.deleted_at, updated_at = excluded.updated_at, "
        "last_run_id = excluded.last_run_id"
    )


def delete(d: Dialect, schema: str, table: str = LEDGER_TABLE) -> str:
    return (f"DELETE FROM {d.qualify(schema, table)} WHERE sync_name = {d.param('sync_name')} AND "
            + d.any_of.format(column="record_key", param=d.param("keys")))


def select_pending(d: Dialect, schema: str) -> str:
    return (f"SELECT record_key, source_modified_at, row_hash FROM {d.qualify(schema, PENDING_TABLE)} "
            f"WHERE sync_name = {d.param('sync_name')} ORDER BY record_key")


def upsert_pending(d: Dialect, schema: str) -> str:
    p = d.param
    return (
        f"INSERT INTO {d.qualify(schema, PENDING_TABLE)} AS l (sync_name, record_key, source_modified_at, "
        "row_hash, announced_at, run_id)\n"
        f"VALUES ({p('sync_name')}, {p('record_key')}, {p('source_modified_at')}, {p('row_hash')}, {p('now')}, "
        f"{p('run_id')})\n"
        "ON CONFLICT (sync_name, record_key) DO UPDATE SET source_modified_at = excluded.source_modified_at, "
        "row_hash = excluded.row_hash, announced_at = excluded.announced_at, run_id = excluded.run_id"
    )


# --- running it on a store ----------------------------------------------------------------------


def read(store: Any, schema: str, sync_name: str, keys: Iterable[str] | None = None) -> dict[str, LedgerEntry]:
    """The ledger of one sync (or of ``keys``), by key."""
    d = store.dialect
    params: dict[str, Any] = {"sync_name": sync_name}
    if keys is not None:
        params["keys"] = store._list_value(sorted(set(keys)))
    with store._errors_as("reading the sink ledger"), store._transaction(None, commit=False) as cur:
        cur.execute(select(d, schema, by_keys=keys is not None), params)
        rows = cur.fetchall()
    return {row[0]: LedgerEntry(row[0], _as_datetime(row[1]), bool(row[2]), _as_datetime(row[3]),
                                _as_datetime(row[4]), _as_datetime(row[5]), row[6]) for row in rows}


def ensure_pending_table(store: Any, schema: str) -> None:
    """The pending entries' table, made once (a ledger made before it stays as it is)."""
    d = store.dialect
    with store._errors_as(f"preparing the sink ledger's pending writes in {schema}"), \
            store._transaction(f"conduit:ready:{schema}") as cur:
        for statement in create_pending_table(d, schema):
            cur.execute(statement)


def read_pending(store: Any, schema: str, sync_name: str) -> dict[str, PendingWrite]:
    """The sync's pending entries (writes a killed load announced), by key."""
    with store._errors_as("reading the sink ledger's pending writes"), store._transaction(None, commit=False) as cur:
        cur.execute(select_pending(store.dialect, schema), {"sync_name": sync_name})
        rows = cur.fetchall()
    return {row[0]: PendingWrite(row[0], _as_datetime(row[1]), row[2]) for row in rows}


def record(store: Any, schema: str, sync_name: str, entries: Iterable[LedgerEntry], *, run_id: str,
           forget: Iterable[str] = (), pending: Iterable[PendingWrite] = (), settled: Iterable[str] = ()) -> None:
    """In one transaction: write entries, drop ``forget`` (records deleted from the target), drop
    the pending entries of ``settled`` and announce ``pending`` writes."""
    d = store.dialect
    now = store._timestamp_value(datetime.now(UTC))

    def ts(value: datetime | None) -> Any:
        return None if value is None else store._timestamp_value(value)

    values = [{"sync_name": sync_name, "record_key": e.record_key, "active": e.active, "run_id": run_id, "now": now,
               "source_modified_at": ts(e.source_modified_at), "deleted_at": ts(e.deleted_at)}
              for e in entries]
    announced = [{"sync_name": sync_name, "record_key": p.record_key, "source_modified_at": ts(p.source_modified_at),
                  "row_hash": p.row_hash, "now": now, "run_id": run_id} for p in pending]
    forget, settled = sorted(set(forget)), sorted(set(settled))
    if not values and not forget and not announced and not settled:
        return
    with store._errors_as("writing the sink ledger"), store._transaction(None) as cur:
        if values:
            cur.executemany(upsert(d, schema), values)
        if forget:
            cur.execute(delete(d, schema), {"sync_name": sync_name, "keys": store._list_value(forget)})
        if settled:
            cur.execute(delete(d, schema, PENDING_TABLE), {"sync_name": sync_name, "keys": store._list_value(settled)})
        if announced:
            cur.executemany(upsert_pending(d, schema), announced)


def _as_datetime(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.strptime(value, _SQLITE_TIMESTAMP).replace(tzinfo=UTC)
