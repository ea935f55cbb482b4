"""The customer master as a SQL table: PostgreSQL in production, SQLite as the embedded default.

One load is one transaction: incoming batches go into a temporary staging table as they arrive
(PostgreSQL: CSV ``COPY``; SQLite: ``executemany``), then a single upsert merges them, deletes
follow, and the watermark and replay marks are written before the commit. (SQLite loads into an
empty table straight into it, without the staging table: ``SqliteErpTarget._insert_into_empty``.) A crash anywhere
leaves the previous state. Loads of one table are serialized (PostgreSQL: advisory lock;
SQLite: ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import json
import sqlite3
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conduit.crash import crash_point
from conduit.exceptions import StalePlanError, TargetConfigError, TargetError
from conduit.targets import sql_render as render
from conduit.targets.base import (
    CRM_ID,
    ErpTarget,
    KeyChecksum,
    LoadPlan,
    LoadResult,
    Watermark,
    key_checksum_of,
    refuse_unless_planned,
)
from conduit.targets.sql_render import POSTGRES, SQLITE, Column, Dialect, TableLayout

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from conduit.specs.model import SyncSpec


@dataclass(frozen=True)
class _Staged:
    """What :meth:`SqlErpTarget._stage_incoming` did: ``rows`` staged or, ``direct``, inserted
    straight into the table, which was ``empty``."""

    rows: int
    empty: bool
    direct: bool


class SqlErpTarget(ErpTarget):
    """What PostgreSQL and SQLite share; subclasses supply connections and bulk staging."""

    dialect: Dialect
    _db_errors: tuple[type[Exception], ...]
    _config_errors: tuple[type[Exception], ...] = ()

    # --- what a database kind supplies ---------------------------------------------------------

    @abstractmethod
    def _transaction(self, lock: str | None, *, commit: bool = True) -> Iterator[Any]:
        """Context manager: a cursor inside one transaction, rolled back on an exception.
        ``lock`` names a lock held until the end (writers of the same name run one at a time);
        ``commit=False`` rolls back at the end."""

    @abstractmethod
    def _stage(self, cur: Any, layout: TableLayout, batches: Iterable[pd.DataFrame]) -> int:
        """Write the batches into the staging table as they arrive; return the row count."""

    @abstractmethod
    def _stage_deleted_keys(self, cur: Any, keys: list[tuple[str, Any]]) -> None: ...

    inserts_into_empty = False
    """Whether a load into an empty table skips the staging table (:meth:`_insert_into_empty`)."""

    def _insert_into_empty(self, cur: Any, layout: TableLayout, batches: Iterable[pd.DataFrame],
                           params: dict[str, Any]) -> int:
        """The batches straight into the (empty) table, the newest row per key, as
        :func:`render.insert_new` keeps it; returns the rows inserted."""
        raise NotImplementedError

    @abstractmethod
    def _upsert(self, cur: Any, layout: TableLayout, params: dict[str, Any]) -> tuple[int, int]:
        """Run the upsert; return (inserted, updated)."""

    @abstractmethod
    def _key_checksum(self, cur: Any, layout: TableLayout) -> KeyChecksum: ...

    def _timestamp_value(self, value: datetime) -> Any:
        return value

    def _deleted_key(self, item: str | tuple[str, datetime | None]) -> tuple[str, Any]:
        """A key alone deletes unconditionally; (key, archived at) only rows not newer than that."""
        key, modified = (item, None) if isinstance(item, str) else item
        return key, None if modified is None else self._timestamp_value(modified)

    def _list_value(self, values: list[Any]) -> Any:
        return values

    def _json_value(self, value: Any) -> Any:
        return value

    def _from_db_json(self, value: Any) -> Any:
        return value

    # --- the interface -------------------------------------------------------------------------

    def ensure_ready(self, spec: SyncSpec) -> None:
        layout, d = TableLayout.of(spec), self.dialect
        where = f"{layout.schema}.{layout.table}" if d.has_schemas else layout.table
        with self._errors_as(f"preparing {where}"), self._transaction(f"conduit:ready:{layout.schema}") as cur:
            for statement in (
                render.create_customer_table(d, layout),
                render.create_state_table(d, layout.schema),
                *render.create_quarantine_table(d, layout.schema),
            ):
                cur.execute(statement)
            cur.execute(render.existing_columns(d, layout.schema, layout.table),
                        {"schema": layout.schema, "table": layout.table})
            present = {row[0] for row in cur.fetchall()}
            missing = [c.name for c in layout.all_columns if c.name not in present]
            if missing:
                raise TargetConfigError(
                    f"table {where} exists but has no column {', '.join(missing)}; "
                    "add it (or map to another table) before loading"
                )

    # --- as the state store of a target that cannot hold the sync's state (an HTTP API) -------

    def ensure_state(self, spec: SyncSpec) -> None:
        """The state tables (watermark, quarantine, sink ledger) in ``spec.target.state_schema``."""
        from conduit.targets import ledger

        d, schema = self.dialect, spec.target.state_schema
        with self._errors_as(f"preparing the sync state in {schema}"), \
                self._transaction(f"conduit:ready:{schema}") as cur:
            for statement in (render.create_state_table(d, schema), *render.create_quarantine_table(d, schema),
                              *ledger.create_table(d, schema)):
                cur.execute(statement)

    def commit_load(self, spec: SyncSpec, *, run_id: str, watermark: Watermark | None,
                    replayed_quarantine_ids: Iterable[int] = ()) -> None:
        """The last step of another sink's load, once every change is in it: the watermark and the
        replay marks, in one transaction."""
        d, schema = self.dialect, spec.target.state_schema
        params = {"now": self._timestamp_value(datetime.now(UTC)), "run_id": run_id}
        replayed = list(replayed_quarantine_ids)
        with self._errors_as("committing the load's state"), self._transaction(None) as cur:
            if watermark is not None:
                cur.execute(render.advance_watermark(d, schema),
                            {**params, "sync_name": spec.name, "ts_ms": watermark.ts_ms, "id": watermark.id})
            if replayed:
                cur.execute(render.mark_replayed(d, schema), {**params, "ids": self._list_value(replayed)})

    def read_watermark(self, spec: SyncSpec) -> Watermark | None:
        row = self._fetch_one(render.read_watermark(self.dialect, spec.target.state_schema), {"sync_name": spec.name})
        return Watermark(int(row[0]), int(row[1])) if row else None

    def last_load_run_id(self, spec: SyncSpec) -> str | None:
        """The run whose load last moved the watermark (None before the first)."""
        row = self._fetch_one(render.read_last_load_run_id(self.dialect, spec.target.state_schema),
                              {"sync_name": spec.name})
        return row[0] if row else None

    def load(
        self,
        spec: SyncSpec,
        batches: Iterable[pd.DataFrame],
        *,
        run_id: str,
        deleted_keys: Iterable[str | tuple[str, datetime | None]] = (),
        watermark: Watermark | None = None,
        full_refresh: bool = False,
        kept_keys: Iterable[str] = (),
        dry_run: bool = False,
        replayed_quarantine_ids: Iterable[int] = (),
        expected: LoadPlan | None = None,
    ) -> LoadResult:
        layout, d = TableLayout.of(spec), self.dialect
        params = {"now": self._timestamp_value(datetime.now(UTC)), "run_id": run_id}
        lock = f"conduit:load:{layout.schema}.{layout.table}"
        with self._errors_as(f"loading {layout.table} (rolled back)"), self._transaction(lock, commit=not dry_run) as cur:
            applied_earlier = False
            if expected is not None:  # under the load lock: nothing can move between this check and the load
                applied_earlier = self._check_unchanged(cur, spec, layout, expected, run_id=run_id)
            staged = self._stage_incoming(cur, layout, batches, params)
            crash_point("load.after_copy")
            result = self._merge(cur, spec, layout, staged, list(deleted_keys), full_refresh, kept_keys, params)
            crash_point("load.after_merge")
            if expected is not None:
                refuse_unless_planned(layout.table, result, expected, applied_earlier=applied_earlier)
            if watermark is not None:
                cur.execute(
                    render.advance_watermark(d, layout.schema),
                    {**params, "sync_name": spec.name, "ts_ms": watermark.ts_ms, "id": watermark.id},
                )
            replayed = list(replayed_quarantine_ids)
            if replayed:
                cur.execute(render.mark_replayed(d, layout.schema), {**params, "ids": self._list_value(replayed)})
            crash_point("load.before_commit")
        return result

    def plan(
        self,
        spec: SyncSpec,
        batches: Iterable[pd.DataFrame],
        *,
        run_id: str,
        deleted_keys: Iterable[str | tuple[str, datetime | None]] = (),
        full_refresh: bool = False,
        kept_keys: Iterable[str] = (),
        sample_rows: int = 5,
    ) -> LoadPlan:
        """The load, run and rolled back, with what it read before and wrote after (SQL on the
        ERP side: only counts and the sampled rows reach Python)."""
        layout, d = TableLayout.of(spec), self.dialect
        params = {"now": self._timestamp_value(datetime.now(UTC)), "run_id": run_id}
        lock = f"conduit:load:{layout.schema}.{layout.table}"
        with self._errors_as(f"planning the load of {layout.table} (nothing changed)"), \
                self._transaction(lock, commit=False) as cur:
            checksum = self._key_checksum(cur, layout)
            active = cur.execute(render.count_rows(d, layout, active_only=True)).fetchone()[0]
            cur.execute("SAVEPOINT conduit_plan")
            staged = self._stage_incoming(cur, layout, batches, params)
            per_column = [0] * len(layout.names)  # inserted into an empty table: no updates
            if not staged.direct:
                _, *per_column = cur.execute(render.changed_column_counts(d, layout)).fetchone()
            doomed: list[str] = []
            result = self._merge(cur, spec, layout, staged, list(deleted_keys), full_refresh, kept_keys, params,
                                 sample_deletes=(doomed, sample_rows))
            inserted = self._rows(cur, render.select_written(d, layout, inserted=True, limit=sample_rows), params)
            updated = self._rows(cur, render.select_written(d, layout, inserted=False, limit=sample_rows), params)
            cur.execute("ROLLBACK TO SAVEPOINT conduit_plan")
            keys = [r[layout.key] for r in updated] + doomed
            before = {row[layout.key]: row for row in self._rows(
                cur, render.select_rows(d, layout, by_keys=True),
                {"keys": self._list_value(_typed_keys(layout.key_column, keys))})}
        changed = {name: int(n) for name, n in zip(layout.names, per_column, strict=True) if n}
        samples = {"insert": inserted, "update": [_update_sample(before[r[layout.key]], r, layout) for r in updated],
                   "delete": [before[k] for k in doomed if k in before]}
        return LoadPlan(result, int(active), checksum, changed, samples)

    def _check_unchanged(self, cur, spec: SyncSpec, layout: TableLayout, expected: LoadPlan, *, run_id: str) -> bool:
        """Refuse a plan the ERP moved away from, unless this run's own load moved it: a try
        killed after its commit (before it could report) is retried, and must not call its own
        change stale. Returns whether that is so (the load then has to change nothing). It relies
        on the committed load having moved the watermark, which names its run: a load whose
        watermark did not advance (a cleared older run, clock skew) is refused on retry, as before."""
        now = self._key_checksum(cur, layout)
        if now == expected.erp_checksum:
            return False
        # read in the load's transaction: the watermark row names the run whose load committed last
        cur.execute(render.read_last_load_run_id(self.dialect, layout.schema), {"sync_name": spec.name})
        last = cur.fetchone()
        if last is not None and last[0] == run_id:
            return True
        raise StalePlanError(
            f"{layout.table} changed since the plan (active rows {expected.erp_checksum} -> {now}): "
            "nothing changed; run the sync again to plan anew")

    def _stage_incoming(self, cur, layout: TableLayout, batches: Iterable[pd.DataFrame],
                        params: dict[str, Any]) -> _Staged:
        """The batches into the staging table or, into an empty table where the database kind
        can (:meth:`_insert_into_empty`), straight into the table."""
        # A first load (an empty table) has nothing to merge with and nothing a full refresh
        # could delete: a plain insert, ~2x faster than the merge at a million rows. (A row
        # another writer commits meanwhile is left to the next full read and to reconcile.)
        empty = not cur.execute(render.has_rows(self.dialect, layout)).fetchone()[0]
        if empty and self.inserts_into_empty:
            crash_point("load.before_copy")
            return _Staged(self._insert_into_empty(cur, layout, batches, params), empty=True, direct=True)
        cur.execute(render.create_staging_table(self.dialect, layout))
        crash_point("load.before_copy")
        return _Staged(self._stage(cur, layout, batches), empty=empty, direct=False)

    def _merge(self, cur, spec, layout: TableLayout, staged: _Staged, deleted_keys: list, full_refresh: bool,
               kept_keys: Iterable[str], params: dict[str, Any], sample_deletes: tuple[list, int] | None = None
               ) -> LoadResult:
        """The staged rows into the table, then the deletes: the load's whole effect on the rows."""
        d = self.dialect
        empty = staged.empty
        if staged.direct:  # already inserted
            inserted, updated = staged.rows, 0
        elif empty:
            cur.execute(render.insert_new(d, layout), params)
            inserted, updated = cur.rowcount, 0
        else:
            inserted, updated = self._upsert(cur, layout, params)
        unchanged = stale = 0
        if inserted + updated < staged.rows and not empty:  # duplicates, unchanged or stale rows
            distinct, stale = cur.execute(render.count_incoming(d, layout)).fetchone()
            unchanged = distinct - inserted - updated - stale
        kept = self._list_value(_typed_keys(layout.key_column, kept_keys))
        deleted = self._delete(cur, spec, layout, deleted_keys, full_refresh and not empty, {**params, "kept": kept},
                               sample_deletes)
        return LoadResult(inserted=inserted, updated=updated, unchanged=unchanged, deleted=deleted,
                          stale_skipped=stale)

    def _delete(self, cur, spec, layout, keys: list, full_refresh: bool, params: dict[str, Any],
                sample: tuple[list, int] | None = None) -> int:
        mode, deleted, passes = spec.target.delete_mode, 0, []
        if keys:
            cur.execute(render.create_deleted_keys_table(self.dialect, layout))
            self._stage_deleted_keys(cur, [self._deleted_key(k) for k in keys])
            passes.append(False)
        if full_refresh:
            passes.append(True)
        for refresh in passes:
            if sample is not None and len(sample[0]) < sample[1]:  # the plan: which rows, before they go
                cur.execute(render.select_deletable_keys(self.dialect, layout, mode=mode, full_refresh=refresh,
                                                         limit=sample[1] - len(sample[0])), params)
                sample[0].extend(row[0] for row in cur.fetchall())
            cur.execute(render.delete_rows(self.dialect, layout, mode=mode, full_refresh=refresh), params)
            deleted += cur.rowcount
        return deleted

    def _rows(self, cur, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Rows as JSON-able dicts (timestamps as ISO text)."""
        cur.execute(sql, params)
        names = [c[0] for c in cur.description]
        return [{n: _plain(v) for n, v in zip(names, row, strict=True)} for row in cur.fetchall()]

    def count(self, spec: SyncSpec, *, active_only: bool = True) -> int:
        return self._fetch_one(render.count_rows(self.dialect, TableLayout.of(spec), active_only=active_only))[0]

    def holds_rows(self, spec: SyncSpec) -> bool:
        return bool(self._fetch_one(render.has_rows(self.dialect, TableLayout.of(spec)))[0])

    def key_checksum(self, spec: SyncSpec) -> KeyChecksum:
        with self._errors_as("computing the key checksum"), self._transaction(None, commit=False) as cur:
            return self._key_checksum(cur, TableLayout.of(spec))

    def fetch_rows(self, spec: SyncSpec, keys: Iterable[str] | None = None) -> pd.DataFrame:
        layout = TableLayout.of(spec)
        sql = render.select_rows(self.dialect, layout, by_keys=keys is not None)
        params = {} if keys is None else {"keys": self._list_value(_typed_keys(layout.key_column, keys))}
        return self._select_frame(layout, sql, params)

    def fetch_rows_of_records(self, spec: SyncSpec, crm_ids: Iterable[str]) -> pd.DataFrame:
        layout = TableLayout.of(spec)
        column = next((c for c in layout.columns if c.name == CRM_ID), None)
        values = _typed_ids(column, crm_ids) if column is not None else []
        if not values:
            return _frame_of([], layout.all_columns)
        sql = render.select_rows(self.dialect, layout, by_keys=True, by=CRM_ID)
        return self._select_frame(layout, sql, {"keys": self._list_value(values)})

    def _select_frame(self, layout: TableLayout, sql: str, params: dict[str, Any]) -> pd.DataFrame:
        with self._errors_as("reading rows"), self._transaction(None, commit=False) as cur:
            cur.execute(sql, params)
            return _frame_of(cur.fetchall(), layout.all_columns)

    def quarantine(self, spec: SyncSpec, rows: list[dict[str, Any]], *, run_id: str) -> int:
        if not rows:
            return 0
        now = self._timestamp_value(datetime.now(UTC))
        values = [
            {"sync_name": spec.name, "run_id": run_id, "now": now,
             **{f: row.get(f) for f in render.QUARANTINE_FIELDS},
             "raw_record": None if row.get("raw_record") is None else self._json_value(row["raw_record"])}
            for row in rows
        ]
        with self._errors_as("quarantining rows"), self._transaction(None) as cur:
            cur.executemany(render.insert_quarantine(self.dialect, spec.target.state_schema), values)
            return cur.rowcount

    def open_quarantine(self, spec: SyncSpec) -> list[dict[str, Any]]:
        sql = render.select_open_quarantine(self.dialect, spec.target.state_schema)
        with self._errors_as("reading the quarantine"), self._transaction(None, commit=False) as cur:
            cur.execute(sql, {"sync_name": spec.name})
            names = [c[0] for c in cur.description]
            entries = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        for entry in entries:
            entry["raw_record"] = self._from_db_json(entry["raw_record"])
            entry["quarantined_at"] = _as_datetime(entry["quarantined_at"])
        return entries

    def mark_replayed(self, spec: SyncSpec, quarantine_ids: Iterable[int], *, run_id: str) -> int:
        ids = list(quarantine_ids)
        if not ids:
            return 0
        params = {"ids": self._list_value(ids), "run_id": run_id, "now": self._timestamp_value(datetime.now(UTC))}
        with self._errors_as("marking quarantine entries replayed"), self._transaction(None) as cur:
            cur.execute(render.mark_replayed(self.dialect, spec.target.state_schema), params)
            return cur.rowcount

    def replayed_by(self, spec: SyncSpec, run_id: str) -> int:
        sql = render.count_replayed_by(self.dialect, spec.target.state_schema)
        return int(self._fetch_one(sql, {"sync_name": spec.name, "run_id": run_id})[0])

    def erase_records(self, spec: SyncSpec, crm_ids: Iterable[str], keys: Iterable[str] = (), *,
                      run_id: str) -> dict[str, int]:
        from conduit.targets import defects

        crm_ids, keys = list(crm_ids), list(keys)
        if not crm_ids and not keys:
            return {"quarantine_erased": 0, "defects_erased": 0}
        d, schema = self.dialect, spec.target.state_schema
        params = defects.erase_params(d, spec, crm_ids, keys, run_id=run_id)
        # the defects' lock: a gate recording defects of this schema waits, and then sees them resolved
        with self._errors_as("erasing the records the CRM no longer has"), \
                self._transaction(defects._lock(schema)) as cur:
            cur.execute(defects.erase(d, schema, render.QUARANTINE_TABLE, raw="raw_record",
                                      closed_at="replayed_at", closed_by="replayed_by_run"), params)
            quarantined = cur.rowcount
            erased = defects.erase_records(self, cur, spec, crm_ids, keys, run_id=run_id)
        return {"quarantine_erased": quarantined, "defects_erased": erased}

    def test_connection(self) -> tuple[bool, str]:
        try:
            self._fetch_one("SELECT 1")
        except TargetError as exc:
            return False, str(exc)
        return True, f"connected to {self.dialect.name}"

    # --- helpers -------------------------------------------------------------------------------

    def _fetch_one(self, sql: str, params: dict[str, Any] | None = None) -> tuple:
        with self._errors_as("reading"), self._transaction(None, commit=False) as cur:
            cur.execute(sql, params or {})
            return cur.fetchone()

    @contextmanager
    def _errors_as(self, doing: str) -> Iterator[None]:
        """Database errors become Conduit's: configuration problems fail the task, the rest retry."""
        try:
            yield
        except self._config_errors as exc:
            raise TargetConfigError(f"{self.dialect.name} target: {doing}: {exc}") from exc
        except self._db_errors as exc:
            raise TargetError(f"{self.dialect.name} target: {doing}: {exc}") from exc


# --- PostgreSQL ---------------------------------------------------------------------------------


class PostgresErpTarget(SqlErpTarget):
    dialect = POSTGRES

    lock_timeout_ms = 30_000
    """How long a write waits for a table lock another session holds (an ERP job's ``LOCK TABLE``,
    a migration's ``ALTER TABLE``) before it fails, retryably, naming the lock timeout. The load
    lock itself (writers of this sync, one at a time) is waited for without a limit: the other
    load ends, and the task's ``execution_timeout`` bounds the wait."""

    def __init__(self, dsn: str, *, connect_timeout: int = 10, lock_timeout_ms: int | None = None):
        import psycopg

        self._dsn = dsn
        self._connect_timeout = connect_timeout
        if lock_timeout_ms is not None:
            self.lock_timeout_ms = lock_timeout_ms
        self._db_errors = (psycopg.Error,)
        self._config_errors = (
            psycopg.errors.InvalidSchemaName,
            psycopg.errors.InsufficientPrivilege,
            psycopg.errors.UndefinedTable,
            psycopg.errors.UndefinedColumn,
            psycopg.DataError,  # bad values (e.g. invalid JSON) do not get better on a retry
        )

    @contextmanager
    def _transaction(self, lock: str | None, *, commit: bool = True) -> Iterator[Any]:
        import psycopg

        with psycopg.connect(self._dsn, connect_timeout=self._connect_timeout, application_name="conduit") as conn:
            with conn.cursor() as cur:
                # UTC: staged CSV carries UTC wall-clock times (Arrow writes zoned ones ~20x slower).
                # Memory: a million staged rows sort and stay in memory instead of spilling to disk.
                cur.execute("SET TIME ZONE 'UTC'; SET work_mem = '256MB'; SET temp_buffers = '256MB'")
                if lock:
                    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%(lock)s))", {"lock": lock})
                    # after the load lock: only waits for other sessions' locks are bounded
                    cur.execute(f"SET LOCAL lock_timeout = {int(self.lock_timeout_ms)}")
                yield cur
            if commit:
                conn.commit()
            else:
                conn.rollback()

    def _stage(self, cur, layout: TableLayout, batches: Iterable[pd.DataFrame]) -> int:
        # CSV built by Arrow's C++ writer: many times faster than Copy.write_row per row
        import pyarrow as pa
        import pyarrow.csv

        options = pyarrow.csv.WriteOptions(include_header=False, quoting_style="all_valid")
        staged = 0
        with cur.copy(render.copy_into_staging(layout)) as copy:
            for frame in batches:
                sink = pa.BufferOutputStream()
                table = _arrow_table(frame, layout)
                _refuse_nul(table, layout.key)
                pyarrow.csv.write_csv(table, sink, options)
                copy.write(memoryview(sink.getvalue()))
                staged += len(frame)
                crash_point("load.mid_copy")
        return staged

    def _stage_deleted_keys(self, cur, keys: list[tuple[str, Any]]) -> None:
        with cur.copy(render.copy_into_deleted_keys()) as copy:
            for row in keys:
                copy.write_row(row)

    def _upsert(self, cur, layout: TableLayout, params: dict[str, Any]) -> tuple[int, int]:
        cur.execute(render.upsert_counts(POSTGRES, layout), params)
        return cur.fetchone()

    def holds_rows(self, spec: SyncSpec) -> bool:
        # bounded like the load's waits: a table another session holds fails loudly on the lock
        # timeout (retryable) instead of keeping plan_extract waiting for as long as it is held
        with self._errors_as("reading"), self._transaction(None, commit=False) as cur:
            cur.execute(f"SET LOCAL lock_timeout = {int(self.lock_timeout_ms)}")
            cur.execute(render.has_rows(self.dialect, TableLayout.of(spec)))
            return bool(cur.fetchone()[0])

    def _key_checksum(self, cur, layout: TableLayout) -> KeyChecksum:
        cur.execute(render.postgres_key_checksum(layout))
        count, digest_sum = cur.fetchone()
        return KeyChecksum(count, int(digest_sum))

    def _json_value(self, value: Any) -> Any:
        from psycopg.types.json import Jsonb

        return Jsonb(value, dumps=_json_dumps)

    def describe(self) -> dict[str, Any]:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(self._dsn)
        port = info.get("port")
        return {"kind": "postgres", "host": info.get("host"), "port": int(port) if port else 5432,
                "database": info.get("dbname"), "path": None}


# --- SQLite -------------------------------------------------------------------------------------


class SqliteErpTarget(SqlErpTarget):
    """A SQLite file. ``spec.target.db_schema`` is ignored: all tables live in the file's main schema."""

    dialect = SQLITE
    _db_errors = (sqlite3.Error,)
    inserts_into_empty = True

    def __init__(self, path: str | Path, *, busy_timeout: float = 60.0):
        self._path = str(path)
        self._busy_timeout = busy_timeout

    @contextmanager
    def _transaction(self, lock: str | None, *, commit: bool = True) -> Iterator[Any]:
        # isolation_level=None: this code, not the sqlite3 module, says where transactions begin
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        try:
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE" if lock else "BEGIN")  # IMMEDIATE: take the write lock now
            try:
                yield cur
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT" if commit else "ROLLBACK")
        finally:
            conn.close()

    def _stage(self, cur, layout: TableLayout, batches: Iterable[pd.DataFrame]) -> int:
        sql = render.insert_positional(render.STAGING_TABLE, len(layout.staged_names))
        staged = 0
        for frame in batches:
            for chunk in _sqlite_chunks(_arrow_table(frame, layout)):
                cur.executemany(sql, zip(*_sqlite_columns(chunk), strict=True))
            staged += len(frame)
        return staged

    def _insert_into_empty(self, cur, layout: TableLayout, batches: Iterable[pd.DataFrame],
                           params: dict[str, Any]) -> int:
        # No staging table: at a million rows, writing them into a temporary table and then
        # copying them over in key order took as long again as the insert itself.
        sql = render.insert_rows_newest_wins(SQLITE, layout)
        constants = [repeat(params["now"]), repeat(params["now"]), repeat(params["run_id"])]
        for frame in batches:
            table = _arrow_table(frame, layout)
            _refuse_missing_keys(table, layout)
            for chunk in _sqlite_chunks(table):
                # strict=False: the constants repeat for every row
                cur.executemany(sql, zip(*_sqlite_columns(chunk), *constants, strict=False))
        return cur.execute(render.count_rows(SQLITE, layout, active_only=False)).fetchone()[0]


    def _stage_deleted_keys(self, cur, keys: list[tuple[str, Any]]) -> None:
        cur.executemany(render.insert_positional(render.DELETED_KEYS_TABLE, 2), keys)

    def _upsert(self, cur, layout: TableLayout, params: dict[str, Any]) -> tuple[int, int]:
        # SQLite cannot aggregate a RETURNING clause in SQL: count the written rows here
        inserted = updated = 0
        for was_inserted, changed in cur.execute(render.upsert(SQLITE, layout), params):
            inserted += bool(was_inserted)
            updated += not was_inserted and bool(changed)
        return inserted, updated

    def _key_checksum(self, cur, layout: TableLayout) -> KeyChecksum:
        return key_checksum_of(cur.execute(render.select_active_key_hashes(SQLITE, layout)))

    def _timestamp_value(self, value: datetime) -> str:
        return _iso_utc(value)

    def _list_value(self, values: list[Any]) -> str:
        return json.dumps(values)

    def _json_value(self, value: Any) -> str:
        return _json_dumps(value)

    def _from_db_json(self, value: Any) -> Any:
        return None if value is None else json.loads(value)

    def describe(self) -> dict[str, Any]:
        return {"kind": "sqlite", "host": None, "port": None, "database": None,
                "path": str(Path(self._path).resolve())}


# --- frames in and out --------------------------------------------------------------------------

_SQLITE_TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%fZ"


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _update_sample(before: dict[str, Any], after: dict[str, Any], layout: TableLayout) -> dict[str, Any]:
    """One planned update: the mapped columns that change, before and after."""
    changed = [n for n in layout.names if before.get(n) != after.get(n)]
    return {"key": after[layout.key], "changed": changed,
            "before": {n: before.get(n) for n in changed}, "after": {n: after.get(n) for n in changed}}


def _iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime(_SQLITE_TIMESTAMP)


def _json_dumps(value: Any) -> str:
    """JSON text both databases store: PostgreSQL's ``jsonb`` cannot hold ``\\u0000``, so a NUL
    in a string (a raw CRM value in the quarantine) is shown as ␀ (U+2400), as in defects."""
    dumped = json.dumps(value, default=str, ensure_ascii=False)
    return dumped if "\\u0000" not in dumped else json.dumps(_nul_shown(value), default=str, ensure_ascii=False)


def _nul_shown(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\u2400")
    if isinstance(value, dict):
        return {_nul_shown(k): _nul_shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nul_shown(v) for v in value]
    return value


def _arrow_type(dtype: str) -> pa.DataType:
    import pyarrow as pa

    return {"string": pa.string(), "integer": pa.int64(), "boolean": pa.bool_(),
            "timestamp": pa.timestamp("us", tz="UTC")}[dtype]


def _arrow_table(frame: pd.DataFrame, layout: TableLayout) -> pa.Table:
    """The batch as Arrow, typed by the spec, timestamps as naive UTC; a column that does not
    fit names itself."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = [*layout.columns, *render.TRACKING_COLUMNS]
    arrays = []
    for column in columns:
        if column.name not in frame.columns:
            raise TargetConfigError(f"batch has no column {column.name!r} (expected {layout.staged_names})")
        try:
            array = pa.array(frame[column.name], type=_arrow_type(column.dtype), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise TargetConfigError(f"batch column {column.name!r} does not hold {column.dtype} values: {exc}") from exc
        arrays.append(pc.cast(array, pa.timestamp("us")) if column.dtype == "timestamp" else array)
    return pa.Table.from_arrays(arrays, names=[c.name for c in columns])


def _refuse_nul(table: pa.Table, key: str) -> None:
    """PostgreSQL text cannot hold NUL, and COPY would fail naming no row: fail naming the first
    one. The mapping removes NULs (``conduit.transforms.mapping``), so only rows that bypassed it
    (a custom source or caller) can get here."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    for name, column in zip(table.column_names, table.columns, strict=True):
        if not pa.types.is_string(column.type):
            continue
        offset = 0
        for chunk in column.chunks:  # a fast look at the bytes, then the rows only if needed
            data, offset = chunk.buffers()[2], offset + len(chunk)
            if data is None or not (np.frombuffer(data, np.uint8) == 0).any():
                continue
            rows = pc.fill_null(pc.match_substring(chunk, "\x00"), False)
            if pc.any(rows).as_py():
                at = offset - len(chunk) + pc.index(rows, True).as_py()
                keys = table.column(key).combine_chunks()
                raise TargetConfigError(
                    f"column {name!r} of {key} {keys[at].as_py()!r} holds a NUL character, which PostgreSQL "
                    "text cannot store (the sync's mapping removes them and records a defect; "
                    "rows that bypass it must too); nothing was loaded")


def _refuse_missing_keys(table: pa.Table, layout: TableLayout) -> None:
    """SQLite's insert into an empty table, without the staging table, must refuse a row without
    its key as the staging table's ``NOT NULL`` does on every other path. The table's own
    ``NOT NULL`` does not: SQLite makes an ``INTEGER PRIMARY KEY`` the rowid, and gives a NULL the
    next number, a key the CRM never had."""
    if table.column(layout.key).null_count:
        raise sqlite3.IntegrityError(f"NOT NULL constraint failed: {layout.table}.{layout.key}")


def _sqlite_chunks(table: pa.Table, rows: int = 2_000) -> list[pa.RecordBatch]:
    """The table in slices of ``rows``: each becomes Python values (an object per value) only for
    its ``executemany``; a whole 10,000-row batch at once held ~10 MiB more at the task's peak."""
    return table.to_batches(max_chunksize=rows)


def _sqlite_columns(table: pa.Table | pa.RecordBatch) -> list[list]:
    """The table's columns as Python values; timestamps (naive UTC, microseconds) as the text
    the SQLite target stores, e.g. ``2024-05-01T12:00:00.000000Z``."""
    import pyarrow as pa

    return [(_sqlite_timestamps(array) if pa.types.is_timestamp(array.type) else array).to_pylist()
            for array in table.columns]


def _sqlite_timestamps(array: pa.ChunkedArray) -> pa.ChunkedArray:
    """``pc.strftime(array, "%Y-%m-%dT%H:%M:%SZ")`` (``%S`` with the microseconds), ~12x faster:
    Arrow's cast to text gives ``2024-05-01 12:00:00.000000`` for every year from 1 to 9999."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.replace_substring(pc.cast(array, pa.string()), " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(text, "Z", "")


def _typed_keys(key: Column, keys: Iterable[str]) -> list[Any]:
    return [int(k) for k in keys] if key.dtype == "integer" else [str(k) for k in keys]


def _typed_ids(column: Column, crm_ids: Iterable[str]) -> list[Any]:
    """CRM ids (text, as the quarantine holds them) as the ERP column stores them: an id that is
    no whole number cannot be in an integer column, so it is left out rather than failing."""
    texts = [str(c).strip() for c in crm_ids]
    if column.dtype != "integer":
        return texts
    return [int(t) for t in texts if t.lstrip("-").isdigit()]


def _as_datetime(value: str | datetime) -> datetime:
    return (datetime.fromisoformat(value) if isinstance(value, str) else value).astimezone(UTC)


def _frame_of(rows: list[tuple], columns: tuple[Column, ...]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame.from_records(rows, columns=[c.name for c in columns])
    for column in columns:
        values = frame[column.name]
        if column.dtype == "timestamp":
            frame[column.name] = pd.to_datetime(values, utc=True, format="ISO8601").astype("datetime64[us, UTC]")
        elif column.dtype == "integer":
            frame[column.name] = values.astype("Int64")
        elif column.dtype == "boolean":
            frame[column.name] = values.astype("boolean")
        else:
            frame[column.name] = values.astype("str")
    return frame
