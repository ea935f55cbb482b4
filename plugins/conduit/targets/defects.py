"""The defects table of a SQL ERP target, ``conduit_defects``, next to ``conduit_quarantine``.

One row per defect: a record (key, CRM id) whose value in one column broke a defect rule (the raw
value, the rule, the reason), with the runs and times it was first and last seen, and once a run
read a clean value, when and by which run it was resolved. At most one defect per (sync, record,
column, rule) is open (a partial unique index). What a run changes is decided by
:func:`conduit.quality.defects.plan_defects`; here it is read and written in one transaction,
serialised per ERP schema, so a retried gate repeats nothing (its defects are "seen again").

SQL text is rendered by the pure functions below (named parameters in the dialect's style); the
statements run through the target's own transaction and error handling.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conduit.quality.defects import Defect, DefectChanges, OpenDefect, plan_defects
from conduit.targets.sql_render import Dialect, quote_ident

if TYPE_CHECKING:
    from conduit.specs.model import SyncSpec

DEFECTS_TABLE = "conduit_defects"
DEFECT_FIELDS = ("record_key", "crm_id", "column_name", "rule", "raw_value", "reason")
COLUMNS = ("id", "sync_name", *DEFECT_FIELDS, "first_run_id", "last_run_id", "first_seen_at", "last_seen_at",
           "resolved_at", "resolved_by_run")
_SQLITE_TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%fZ"  # as the SQL target writes them: text order is time order


# --- SQL ----------------------------------------------------------------------------------------


def create_defects_table(d: Dialect, schema: str) -> list[str]:
    text, ts = d.column_types["string"], d.column_types["timestamp"]
    table = d.qualify(schema, DEFECTS_TABLE)
    return [
        f"CREATE TABLE IF NOT EXISTS {table} (\n"
        f"  {d.identity_column},\n"
        f"  sync_name {text} NOT NULL,\n"
        f"  record_key {text} NOT NULL,\n"
        f"  crm_id {text},\n"
        f"  column_name {text} NOT NULL,\n"
        f"  rule {text} NOT NULL,\n"
        f"  raw_value {text},\n"
        f"  reason {text},\n"
        f"  first_run_id {text} NOT NULL,\n"
        f"  last_run_id {text} NOT NULL,\n"
        f"  first_seen_at {ts} NOT NULL,\n"
        f"  last_seen_at {ts} NOT NULL,\n"
        f"  resolved_at {ts},\n"
        f"  resolved_by_run {text}\n)",
        f"CREATE UNIQUE INDEX IF NOT EXISTS {quote_ident(DEFECTS_TABLE + '_one_open')} ON {table} "
        "(sync_name, record_key, column_name, rule) WHERE resolved_at IS NULL",
    ]


def select_open(d: Dialect, schema: str) -> str:
    return (f"SELECT id, record_key, column_name, rule, raw_value FROM {d.qualify(schema, DEFECTS_TABLE)} "
            f"WHERE sync_name = {d.param('sync_name')} AND resolved_at IS NULL ORDER BY id")


def select_all(d: Dialect, schema: str) -> str:
    return (f"SELECT {', '.join(COLUMNS)} FROM {d.qualify(schema, DEFECTS_TABLE)} "
            f"WHERE sync_name = {d.param('sync_name')} ORDER BY id")


def resolve(d: Dialect, schema: str) -> str:
    """Parameters: ``ids``, ``run_id``, ``now``; each defect is resolved once."""
    return (f"UPDATE {d.qualify(schema, DEFECTS_TABLE)} SET resolved_at = {d.param('now')}, "
            f"resolved_by_run = {d.param('run_id')} "
            f"WHERE {d.any_of.format(column='id', param=d.param('ids'))} AND resolved_at IS NULL")


def see_again(d: Dialect, schema: str) -> str:
    """Parameters: ``ids``, ``run_id``, ``now``."""
    return (f"UPDATE {d.qualify(schema, DEFECTS_TABLE)} SET last_seen_at = {d.param('now')}, "
            f"last_run_id = {d.param('run_id')} "
            f"WHERE {d.any_of.format(column='id', param=d.param('ids'))} AND resolved_at IS NULL")


def insert(d: Dialect, schema: str) -> str:
    """Parameters: ``sync_name``, ``run_id``, ``now`` and :data:`DEFECT_FIELDS`."""
    names = ("sync_name", *DEFECT_FIELDS)
    return (f"INSERT INTO {d.qualify(schema, DEFECTS_TABLE)} ({', '.join(names)}, first_run_id, last_run_id, "
            f"first_seen_at, last_seen_at) VALUES ({', '.join(d.param(n) for n in names)}, "
            f"{d.param('run_id')}, {d.param('run_id')}, {d.param('now')}, {d.param('now')})")


ERASED_REASON = "erased in the CRM (gone for good: a GDPR erasure or merged away)"
"""What an entry of a record the CRM no longer has says once its personal data is removed (the
run that removed it follows); its raw value or raw record is gone (:func:`erase`)."""


def erase(d: Dialect, schema: str, table: str, *, raw: str, closed_at: str, closed_by: str) -> str:
    """Remove the personal data of the records a run learned are gone for good from ``table`` (the
    quarantine or the defects table): the ``raw`` column emptied, the reason replaced by
    :data:`ERASED_REASON` and the run, open entries closed (``closed_at``, ``closed_by``) by the
    run, closed ones keeping who closed them. A record is its CRM id (parameter ``crm_ids``), or,
    for an entry without one, the key its ERP row had (``keys``): an entry of another CRM record
    under the same key (a merge's survivor) stays. Entries already erased are left as they are.
    Parameters: ``sync_name``, ``crm_ids``, ``keys``, ``reason``, ``erased_like``, ``run_id``, ``now``."""
    by_id = d.any_of.format(column="crm_id", param=d.param("crm_ids"))
    by_key = d.any_of.format(column="record_key", param=d.param("keys"))
    return (f"UPDATE {d.qualify(schema, table)} SET {raw} = NULL, reason = {d.param('reason')}, "
            f"{closed_at} = COALESCE({closed_at}, {d.param('now')}), "
            f"{closed_by} = COALESCE({closed_by}, {d.param('run_id')}) "
            f"WHERE sync_name = {d.param('sync_name')} AND ({by_id} OR (crm_id IS NULL AND {by_key})) "
            f"AND (reason IS NULL OR reason NOT LIKE {d.param('erased_like')})")


# --- running it on a target ---------------------------------------------------------------------


def ensure_table(target: Any, spec: SyncSpec) -> None:
    schema = spec.target.state_schema
    with target._errors_as("preparing the defects table"), target._transaction(_lock(schema)) as cur:
        for statement in create_defects_table(target.dialect, schema):
            cur.execute(statement)


def record_defects(target: Any, spec: SyncSpec, found: Iterable[Defect], *, run_id: str,
                   clean_keys: Callable[[set[str]], Iterable[str]], dry_run: bool = False) -> DefectChanges:
    """Apply a run's defects to the table in one transaction (creating it if needed): open new
    ones, mark repeated ones seen again, resolve fixed ones. ``clean_keys`` gets the record keys
    of the open defects and returns those this run read and loads (see ``plan_defects``).
    ``dry_run`` does all of it and rolls it back: the counts of what a real run would change."""
    d, schema = target.dialect, spec.target.state_schema
    found = list(found)
    with target._errors_as("recording defects"), target._transaction(_lock(schema), commit=not dry_run) as cur:
        for statement in create_defects_table(d, schema):
            cur.execute(statement)
        cur.execute(select_open(d, schema), {"sync_name": spec.name})
        open_defects = [OpenDefect(int(i), *rest) for i, *rest in cur.fetchall()]
        keys = {o.record_key for o in open_defects}
        changes = plan_defects(open_defects, found, set(clean_keys(keys)) if keys else set())
        now = _now(d)
        for sql, ids in ((resolve(d, schema), changes.resolved), (see_again(d, schema), changes.seen_again)):
            if ids:  # resolved first: a replaced defect's slot must be free for its successor
                cur.execute(sql, {"ids": _id_list(d, ids), "run_id": run_id, "now": now})
        if changes.opened:
            cur.executemany(insert(d, schema), [
                {"sync_name": spec.name, "run_id": run_id, "now": now,
                 **{name: getattr(defect, name) for name in DEFECT_FIELDS}}
                for defect in changes.opened])
    return changes


def read_defects(target: Any, spec: SyncSpec, *, open_only: bool = False) -> list[dict[str, Any]]:
    """The sync's defects (all, or the open ones), oldest first, as dicts of :data:`COLUMNS`."""
    d, schema = target.dialect, spec.target.state_schema
    ensure_table(target, spec)
    with target._errors_as("reading defects"), target._transaction(None, commit=False) as cur:
        cur.execute(select_all(d, schema), {"sync_name": spec.name})
        rows = [dict(zip(COLUMNS, row, strict=True)) for row in cur.fetchall()]
    for row in rows:
        for name in ("first_seen_at", "last_seen_at", "resolved_at"):
            row[name] = _as_datetime(row[name])
    return [r for r in rows if r["resolved_at"] is None] if open_only else rows


def _lock(schema: str) -> str:
    return f"conduit:defects:{schema}"


def _now(d: Dialect) -> Any:
    now = datetime.now(UTC)
    return now.strftime(_SQLITE_TIMESTAMP) if d.name == "sqlite" else now


def _id_list(d: Dialect, ids: list[int]) -> Any:
    return json.dumps(ids) if d.name == "sqlite" else ids


def _as_datetime(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.strptime(value, _SQLITE_TIMESTAMP).replace(tzinfo=UTC)


def erase_records(target: Any, cur: Any, spec: SyncSpec, crm_ids: Iterable[str], keys: Iterable[str], *,
                  run_id: str) -> int:
    """In ``cur`` (a transaction of ``target``, the sync's state store, holding :func:`_lock`):
    the defects of records gone for good from the CRM resolved by ``run_id`` with their raw values
    removed (:func:`erase`), resolved ones too. Returns how many defects were changed."""
    d, schema = target.dialect, spec.target.state_schema
    for statement in create_defects_table(d, schema):
        cur.execute(statement)
    cur.execute(erase(d, schema, DEFECTS_TABLE, raw="raw_value", closed_at="resolved_at",
                      closed_by="resolved_by_run"),
                erase_params(d, spec, crm_ids, keys, run_id=run_id))
    return cur.rowcount


def erase_params(d: Dialect, spec: SyncSpec, crm_ids: Iterable[str], keys: Iterable[str], *,
                 run_id: str) -> dict[str, Any]:
    """The parameters of :func:`erase`."""
    return {"sync_name": spec.name, "crm_ids": _text_list(d, crm_ids), "keys": _text_list(d, keys),
            "reason": f"{ERASED_REASON}: personal data removed by run {run_id}",
            "erased_like": f"{ERASED_REASON}%", "run_id": run_id, "now": _now(d)}


def _text_list(d: Dialect, values: Iterable[str]) -> Any:
    texts = sorted({str(v) for v in values if v is not None})
    return json.dumps(texts) if d.name == "sqlite" else texts
