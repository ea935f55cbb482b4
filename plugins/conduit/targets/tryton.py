"""Customers as parties of a Tryton ERP, written over its REST API.

Tryton has no transaction spanning requests, so exactly-once comes from three rules:

* every write is idempotent by the party's ``code`` (``spec.target.key``): the load reads the
  parties it is about to touch, creates only codes Tryton does not hold, and writes only parties
  whose values differ from what Tryton holds (a second run writes nothing);
* a create that races another writer ("The code on party must be unique") re-reads the party and
  updates it;
* the sync's state lives in a SQL state store (:class:`~conduit.targets.sql.SqlErpTarget` used as
  a store): the sink ledger (:mod:`conduit.targets.ledger`) is written after each batch is in
  Tryton, and the watermark and replay marks only once every change is.
* each batch of creates or updates is announced in the ledger before Tryton is written (its
  pending entries: key, version, the hash of the values written): a load that follows a killed
  one settles them against Tryton first (:func:`settled_entries`), so the ledger knows the version
  Tryton holds whatever the next load is (a deletion, an older version, a full refresh).

A load killed half way therefore leaves the watermark where it was; the retried load compares with
Tryton again and finishes the same changes, without duplicating a party. Where Tryton alone cannot
tell what a killed load left half done (a party re-activated by the first of its two writes, not
yet given its values), the ledger decides (:func:`as_the_ledger_left_it`). Where the ledger is the
one behind on a deletion (the party deactivated or deleted, the kill before its ledger write: crash
point ``tryton.batch_deleted``), Tryton decides: before it writes anything, a load touching such a
party records it as deactivated, and forgets a deleted key whose party Tryton no longer holds
(:attr:`Changes.ledger_deactivated`, :attr:`Changes.ledger_forget`). Reconciliation reads the
parties back and hashes them exactly as the transform hashed the mapped rows.

Tryton validates what it stores (e-mail syntax and, with DNS, the domain; phone numbers), and can
refuse a party the gate let through. One refused party does not stop the others: a batch Tryton
refuses is retried party by party, and each party it still refuses goes to the quarantine (rule
``tryton_accepts_party``, Tryton's message as the reason) while the rest load and the watermark
moves; a replay brings it back once the CRM record is fixed. A refusal that is not about one party
(every party of a batch refused, or more than the gate's ``max_rejected_ratio``) fails the load.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from conduit.crash import crash_point
from conduit.exceptions import (
    QualityGateFailed,
    StalePlanError,
    TargetConfigError,
    TrytonAuthError,
    TrytonRequestError,
)
from conduit.targets import ledger
from conduit.targets.base import (
    BOOKKEEPING_COLUMNS,
    ROW_HASH,
    SOURCE_MODIFIED_AT,
    ErpTarget,
    KeyChecksum,
    LoadPlan,
    LoadResult,
    Watermark,
    frame_key_checksum,
    refuse_unless_planned,
)

if TYPE_CHECKING:
    import pandas as pd

    from conduit.hooks.tryton import TrytonHook
    from conduit.specs.model import SyncSpec
    from conduit.targets.sql import SqlErpTarget

log = logging.getLogger(__name__)

PARTY = "party.party"
PARTY_FIELDS = ["code", "name", "active", "contact_mechanisms.type", "contact_mechanisms.value",
                "contact_mechanisms.value_compact", "addresses.country.code", "identifiers.type",
                "identifiers.code"]
ALL_RECORDS = {"active_test": False}  # inactive (soft-deleted) parties too
UNIQUE_CODE = "must be unique"
REFUSED_RULE = "tryton_accepts_party"


# --- parties <-> rows (pure) --------------------------------------------------------------------


def _mechanism(party: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((m for m in party.get("contact_mechanisms") or () if m.get("type") == kind), None)


def _source_identifier(party: dict[str, Any]) -> dict[str, Any] | None:
    """The identifier the sync writes: the first without a type (Tryton's types are tax numbers)."""
    return next((i for i in party.get("identifiers") or () if not i.get("type")), None)


def _address(party: dict[str, Any]) -> dict[str, Any] | None:
    return next(iter(party.get("addresses") or ()), None)


def party_row(party: dict[str, Any], spec: SyncSpec) -> dict[str, Any]:
    """The mapped columns a party holds, typed as the spec maps them (what reconcile compares)."""
    parts = spec.target.fields
    row: dict[str, Any] = {spec.target.key: party.get("code")}
    if parts.name:
        row[parts.name] = party.get("name") or None
    if parts.email:
        email = _mechanism(party, "email")
        row[parts.email] = (email or {}).get("value") or None
    if parts.phone:
        phone = _mechanism(party, "phone")  # Tryton formats phone values; the compact one is E.164
        row[parts.phone] = ((phone or {}).get("value_compact") or (phone or {}).get("value")) or None
    if parts.country:
        country = (_address(party) or {}).get("country")
        row[parts.country] = country.get("code") if isinstance(country, dict) else None
    if parts.source_id:
        code = (_source_identifier(party) or {}).get("code")
        row[parts.source_id] = _typed(code, spec.mapping[parts.source_id].dtype)
    return row


def _typed(value: Any, dtype: str) -> Any:
    if value is None or value == "":
        return None
    return int(value) if dtype == "integer" else value


def party_values(row: dict[str, Any], spec: SyncSpec, country_ids: dict[str, int]) -> dict[str, Any]:
    """A new party's values (one2many parts as Tryton's ``create`` commands)."""
    parts = spec.target.fields
    values: dict[str, Any] = {"code": row[spec.target.key], "active": True}
    if parts.name:
        values["name"] = row.get(parts.name)
    mechanisms = [{"type": kind, "value": row[column]} for kind, column in (("email", parts.email),
                                                                           ("phone", parts.phone))
                  if column and row.get(column)]
    if mechanisms:
        values["contact_mechanisms"] = [["create", mechanisms]]
    if parts.country and row.get(parts.country):
        values["addresses"] = [["create", [{"country": country_ids[row[parts.country]]}]]]
    if parts.source_id and row.get(parts.source_id) is not None:
        values["identifiers"] = [["create", [{"code": str(row[parts.source_id])}]]]
    return values


def party_changes(party: dict[str, Any], row: dict[str, Any], spec: SyncSpec,
                  country_ids: dict[str, int]) -> dict[str, Any]:
    """What to write so that ``party`` holds ``row`` (and is active): only what differs."""
    parts, have = spec.target.fields, party_row(party, spec)
    values: dict[str, Any] = {} if party.get("active", True) else {"active": True}
    if parts.name and have[parts.name] != row.get(parts.name):
        values["name"] = row.get(parts.name)
    mechanisms: list[list[Any]] = []
    for kind, column in (("email", parts.email), ("phone", parts.phone)):
        if column and have[column] != row.get(column):
            mechanisms.append(_one2many(_mechanism(party, kind), {"type": kind, "value": row.get(column)},
                                        {"value": row.get(column)}, row.get(column)))
    if mechanisms:
        values["contact_mechanisms"] = mechanisms
    if parts.country and have[parts.country] != row.get(parts.country):
        country = row.get(parts.country)
        wanted = country_ids[country] if country else None
        address = _address(party)
        values["addresses"] = [["write", [address["id"]], {"country": wanted}] if address
                               else ["create", [{"country": wanted}]]]
    if parts.source_id and have[parts.source_id] != row.get(parts.source_id):
        code = row.get(parts.source_id)
        values["identifiers"] = [_one2many(_source_identifier(party), {"code": str(code)},
                                           {"code": str(code)}, code)]
    return values


def _one2many(current: dict[str, Any] | None, create: dict[str, Any], write: dict[str, Any],
              wanted: Any) -> list[Any]:
    if current is None:
        return ["create", [create]]
    if wanted is None:
        return ["delete", [current["id"]]]
    return ["write", [current["id"]], write]


def rows_frame(rows: list[dict[str, Any]], spec: SyncSpec) -> pd.DataFrame:
    """Party rows as the transform's mapped frame (typed, in spec order) with their ``row_hash``."""
    import pandas as pd
    import pyarrow as pa

    from conduit.transforms.mapping import mapped_schema, row_hashes

    schema = mapped_schema(spec)
    arrays = [pa.array([r.get(c) for r in rows], schema.field(c).type) for c in spec.mapping]
    frame = pd.DataFrame({c: [r.get(c) for r in rows] for c in spec.mapping})
    frame[ROW_HASH] = row_hashes(arrays).to_pylist() if rows else []
    return frame


def _plain(value: Any) -> Any:
    """pandas/numpy values as JSON's (None for missing)."""
    import pandas as pd

    if value is None or (not isinstance(value, (list, dict, str)) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


# --- the load's changes -------------------------------------------------------------------------


@dataclass
class Changes:
    """What a load would do to Tryton, and the ledger entries that go with it."""

    creates: list[dict[str, Any]] = field(default_factory=list)
    updates: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    """(party, row, the values to write)"""
    deletes: list[dict[str, Any]] = field(default_factory=list)  # parties
    unchanged: list[dict[str, Any]] = field(default_factory=list)  # rows
    ledger_behind: list[dict[str, Any]] = field(default_factory=list)
    """Unchanged rows the ledger does not know as written (a killed load wrote them to Tryton)."""
    ledger_deactivated: list[dict[str, Any]] = field(default_factory=list)
    """Parties Tryton holds inactive that the ledger records as active: a deactivation whose ledger
    write a kill cut off (crash point ``tryton.batch_deleted``). Rows of the key and the version
    the ledger holds, recorded as deactivated before anything else is written."""
    ledger_forget: list[str] = field(default_factory=list)
    """Keys to delete whose party Tryton no longer holds and the ledger still does: a hard delete
    whose ledger write a kill cut off."""
    ledger_settled: list[ledger.LedgerEntry] = field(default_factory=list)
    """Entries of announced writes Tryton holds: a create or update whose ledger write a kill cut
    off (crash points ``tryton.batch_written``, ``tryton.batch_updated``)."""
    pending: list[str] = field(default_factory=list)
    """Keys of every announced write found (settled or not): their pending entries go."""
    stale: int = 0
    modified_at: dict[str, datetime | None] = field(default_factory=dict)
    """The version the ledger records per key: the incoming row's, or a deleted record's stored one."""
    refused: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    """Rows Tryton refused while the load applied them: (row, Tryton's message)."""
    refused_creates: int = 0

    @property
    def result(self) -> LoadResult:
        refused_updates = len(self.refused) - self.refused_creates
        return LoadResult(inserted=len(self.creates) - self.refused_creates,
                          updated=len(self.updates) - refused_updates, unchanged=len(self.unchanged),
                          deleted=len(self.deletes), stale_skipped=self.stale, refused=len(self.refused))


def refused_findings(refused: Iterable[tuple[dict[str, Any], str]], spec: SyncSpec) -> list[dict[str, Any]]:
    """Quarantine rows for the parties Tryton refused (what the gate's findings hold: the key, the
    CRM id the replay reads again, the rule and the reason)."""
    source_id = spec.target.fields.source_id
    return [{"record_key": str(row[spec.target.key]),
             "crm_id": None if not source_id or row.get(source_id) is None else str(row[source_id]),
             "expectation": REFUSED_RULE, "column_name": None,
             "reason": f"Tryton refused the party: {message}"[:1000],
             "raw_record": None}
            for row, message in refused]


def archived_versions(deleted_keys: Iterable[str | tuple[str, datetime | None]]) -> dict[str, datetime | None]:
    """Per key to delete, the archived version that decides (None: delete unconditionally). A key
    given more than once is decided as the SQL target decides it, by whichever of its versions
    allows the delete most (no version, else the newest), not by the order it came in."""
    versions: dict[str, datetime | None] = {}
    for item in deleted_keys:
        code, archived_at = (item, None) if isinstance(item, str) else item
        code = str(code)
        if code not in versions or archived_at is None or (versions[code] is not None
                                                             and archived_at > versions[code]):
            versions[code] = archived_at
    return versions


def newest_rows(batches: Iterable[pd.DataFrame], spec: SyncSpec) -> dict[str, dict[str, Any]]:
    """One row per key (as text): of several rows of one key, the one with the greatest
    (``source_modified_at``, ``row_hash``), whatever order and batches they come in. This is the SQL
    target's rule (``sql_render``: the staged rows newest first, a tie to the greater hash), so
    both targets keep the same version of a key staged twice with the same modification time. A
    frame without its ``row_hash`` is hashed as the transform hashes (:func:`rows_frame`)."""
    key, columns = spec.target.key, [*spec.mapping, SOURCE_MODIFIED_AT]
    kept: dict[str, dict[str, Any]] = {}
    for frame in batches:
        rows = [{name: _plain(value) for name, value in row.items()} for row in frame[columns].to_dict("records")]
        hashes = (frame[ROW_HASH].tolist() if ROW_HASH in frame.columns
                  else rows_frame(rows, spec)[ROW_HASH].tolist())
        for row, row_hash in zip(rows, hashes, strict=True):
            row[ROW_HASH] = row_hash
            code = str(row[key])
            if code not in kept or _version(row) > _version(kept[code]):
                kept[code] = row
    return kept


def _version(row: dict[str, Any]) -> tuple[datetime, str]:
    return row[SOURCE_MODIFIED_AT], row[ROW_HASH]


def as_the_ledger_left_it(party: dict[str, Any] | None, entry: ledger.LedgerEntry | None
                          ) -> dict[str, Any] | None:
    """``party`` as the sync last left it. A party the ledger records as deactivated but Tryton
    holds active is one whose re-activation did not finish: the first of its two writes
    (``active``, see :meth:`TrytonTarget._write_party`) went through, the process was killed
    before the values (crash point ``tryton.reactivated``). It counts as deactivated, so the load
    decides and writes it exactly as it would have before the kill: the same stale rule, the same
    two writes, and when Tryton refuses the values, deactivated again (as a clean load leaves it)."""
    if party is not None and entry is not None and not entry.active and party.get("active", True):
        return {**party, "active": False}
    return party


def held_hashes(rows: Iterable[dict[str, Any]], spec: SyncSpec) -> list[str]:
    """Per row, the hash of the mapped columns a party keeps (:func:`party_row`'s): equal for a row
    and the party Tryton holds once the row is written (reconcile's comparison)."""
    columns = list(party_row({}, spec))
    return rows_frame([{c: row.get(c) for c in columns} for row in rows], spec)[ROW_HASH].tolist()


def settled_entries(pending: dict[str, ledger.PendingWrite], parties: dict[str, dict[str, Any]],
                    held: dict[str, str]) -> list[ledger.LedgerEntry]:
    """The ledger entries of the announced writes Tryton holds: the party active with the values
    announced (``held``: the hash of what each party holds, :func:`held_hashes`). A write Tryton
    does not hold was not made (the kill came first, Tryton refused it, or only the first of a
    re-activation's two writes went through): its entry goes, and the ledger stays as it was."""
    return [ledger.LedgerEntry(code, write.source_modified_at, True, None) for code, write in sorted(pending.items())
            if (party := parties.get(code)) is not None and party.get("active", True)
            and held.get(code) == write.row_hash]


def _stale(entry: ledger.LedgerEntry | None, party: dict[str, Any], modified_at: datetime) -> bool:
    """Whether Tryton holds a newer version of the record than ``modified_at`` or, for a
    deactivated party, one as new: as in the SQL target, a deleted record comes back only with
    strictly newer data (the version it was deleted in does not re-activate it)."""
    stored = entry.source_modified_at if entry else None
    if stored is None:
        return False
    return stored > modified_at or (stored == modified_at and not party.get("active", True))


def _refusal(exc: TrytonRequestError) -> str | None:
    """Tryton's message when it refused a record's values (400), None for anything else (a wrong
    key, a missing model or database: not about one record)."""
    if isinstance(exc, TrytonAuthError) or exc.status != 400 or UNIQUE_CODE in str(exc):
        return None
    return exc.tryton_message + (f" ({exc.description})" if exc.description and exc.description not in
                                 exc.tryton_message else "")


class TrytonTarget(ErpTarget):
    """Parties in Tryton (``spec.target``: :class:`~conduit.specs.model.TrytonTarget`); the sync's
    state in ``state``, a SQL store."""

    def __init__(self, hook: TrytonHook, state: SqlErpTarget):
        self.hook = hook
        self._state = state
        self._pending_ready: set[str] = set()  # schemas whose pending-writes table is known to exist

    @property
    def state(self) -> SqlErpTarget:
        return self._state

    # --- state: the SQL store's ----------------------------------------------------------------

    def ensure_ready(self, spec: SyncSpec) -> None:
        self._state.ensure_state(spec)
        ledger.ensure_pending_table(self._state, spec.target.state_schema)
        self.hook.search(PARTY, [["id", "=", 0]], ["code"], limit=1)  # the model is there and readable

    def read_watermark(self, spec: SyncSpec) -> Watermark | None:
        return self._state.read_watermark(spec)

    def quarantine(self, spec: SyncSpec, rows: list[dict[str, Any]], *, run_id: str) -> int:
        return self._state.quarantine(spec, rows, run_id=run_id)

    def open_quarantine(self, spec: SyncSpec) -> list[dict[str, Any]]:
        return self._state.open_quarantine(spec)

    def mark_replayed(self, spec: SyncSpec, quarantine_ids: Iterable[int], *, run_id: str) -> int:
        return self._state.mark_replayed(spec, quarantine_ids, run_id=run_id)

    def replayed_by(self, spec: SyncSpec, run_id: str) -> int:
        return self._state.replayed_by(spec, run_id)

    # --- reading parties -----------------------------------------------------------------------

    def _chunks(self, spec: SyncSpec, items: list[Any]) -> Iterator[list[Any]]:
        size = spec.target.batch_size
        for i in range(0, len(items), size):
            yield items[i:i + size]

    def _parallel(self, spec: SyncSpec, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """``fn`` over ``items`` with at most ``max_concurrent_requests`` requests in flight."""
        items = list(items)
        if len(items) <= 1 or spec.target.max_concurrent_requests == 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(spec.target.max_concurrent_requests) as pool:
            return list(pool.map(fn, items))

    def _parties(self, spec: SyncSpec, codes: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The parties (active or not) holding these codes, by code."""
        codes = sorted({str(c) for c in codes})

        def read(chunk: list[str]) -> list[dict[str, Any]]:
            return self.hook.search(PARTY, [["code", "in", chunk]], PARTY_FIELDS, context=ALL_RECORDS)

        return {p["code"]: p for found in self._parallel(spec, read, self._chunks(spec, codes)) for p in found}

    def _countries(self, spec: SyncSpec, codes: set[str], keys_by_code: dict[str, str]) -> dict[str, int]:
        codes = {c for c in codes if c}
        if not codes:
            return {}
        found = {c["code"]: c["id"] for c in self.hook.search("country.country", [["code", "in", sorted(codes)]],
                                                                ["code"])}
        missing = sorted(codes - set(found))
        if missing:
            raise TargetConfigError(
                f"Tryton ({self.hook.tryton_conn_id}) has no country {', '.join(missing)} (e.g. for "
                f"{spec.target.key} {keys_by_code[missing[0]]}); import the countries into Tryton "
                "(trytond_import_countries) before loading")
        return found

    def _settled_ledger(self, spec: SyncSpec, keys: Iterable[str] | None
                        ) -> tuple[dict[str, ledger.LedgerEntry], dict[str, dict[str, Any]], Changes]:
        """(ledger, parties, settlement) of the sync (or of ``keys``): the ledger with the writes a
        killed load announced settled against Tryton (:func:`settled_entries`; in memory, the
        load writes them: ``settlement.ledger_settled``, ``settlement.pending``); the parties read
        so far (those of the announced writes)."""
        schema, wanted = spec.target.state_schema, None if keys is None else {str(k) for k in keys}
        if schema not in self._pending_ready:
            # once per target (a task): a run whose ensure_ready ran before an upgrade made the table
            ledger.ensure_pending_table(self._state, schema)
            self._pending_ready.add(schema)
        pending = ledger.read_pending(self._state, schema, spec.name)
        entries = ledger.read(self._state, schema, spec.name, wanted)
        parties = self._parties(spec, pending) if pending else {}
        held = dict(zip(parties, held_hashes([party_row(p, spec) for p in parties.values()], spec), strict=True))
        settlement = Changes(ledger_settled=settled_entries(pending, parties, held), pending=sorted(pending))
        for entry in settlement.ledger_settled:
            if wanted is None or entry.record_key in wanted:
                old = entries.get(entry.record_key)
                entries[entry.record_key] = entry if old is None else ledger.LedgerEntry(
                    entry.record_key, entry.source_modified_at, True, None, old.created_at, old.updated_at,
                    old.last_run_id)
        return entries, parties, settlement

    def _stored_rows(self, spec: SyncSpec, keys: Iterable[str] | None) -> tuple[list[dict], dict]:
        """(rows with their bookkeeping, ledger) of the sync's parties (or of ``keys``)."""
        entries, parties, _ = self._settled_ledger(spec, keys)
        codes = set(entries) if keys is None else {str(k) for k in keys}
        parties = {code: party for code, party in parties.items() if code in codes}
        parties.update(self._parties(spec, codes - set(parties)))
        rows = []
        for code in sorted(parties):
            party, entry = parties[code], entries.get(code)
            rows.append({**party_row(party, spec), "active": bool(party.get("active", True)),
                         SOURCE_MODIFIED_AT: entry.source_modified_at if entry else None,
                         "deleted_at": entry.deleted_at if entry else None,
                         "created_at": entry.created_at if entry else None,
                         "updated_at": entry.updated_at if entry else None,
                         "last_run_id": entry.last_run_id if entry else None})
        return rows, entries

    def fetch_rows(self, spec: SyncSpec, keys: Iterable[str] | None = None) -> pd.DataFrame:
        import pandas as pd

        rows, _ = self._stored_rows(spec, keys)
        frame = rows_frame(rows, spec)
        for name in BOOKKEEPING_COLUMNS:
            if name != ROW_HASH:
                frame[name] = [r[name] for r in rows]
        frame[SOURCE_MODIFIED_AT] = pd.to_datetime(frame[SOURCE_MODIFIED_AT], utc=True)
        return frame[[*spec.mapping, *BOOKKEEPING_COLUMNS]]

    def count(self, spec: SyncSpec, *, active_only: bool = True) -> int:
        rows, _ = self._stored_rows(spec, None)
        return sum(1 for r in rows if r["active"] or not active_only)

    def key_checksum(self, spec: SyncSpec) -> KeyChecksum:
        frame = self.fetch_rows(spec)
        return frame_key_checksum(frame[frame["active"].astype(bool)], spec.target.key)

    # --- planning and loading ------------------------------------------------------------------

    def _changes(self, spec: SyncSpec, batches: Iterable[pd.DataFrame], deleted_keys, full_refresh: bool,
                 kept_keys: Iterable[str]) -> tuple[Changes, dict[str, int]]:
        incoming = newest_rows(batches, spec)  # of several rows of one key, the SQL target's choice
        deleted = archived_versions(deleted_keys)
        # a full refresh deletes what the sync wrote and this load did not bring: the whole ledger,
        # with the writes a killed load made in Tryton (settled first)
        entries, parties, changes = self._settled_ledger(spec, None if full_refresh else set(incoming) | set(deleted))
        if full_refresh:
            # every record of the sync this load did not bring, deactivated ones too (as the SQL
            # target's full refresh chooses every row not staged): a hard delete removes a party an
            # earlier soft delete deactivated; a soft one passes over a party Tryton holds inactive
            kept = {str(k) for k in kept_keys} | set(incoming)
            deleted.update({code: None for code in entries if code not in kept})
        parties.update(self._parties(spec, (set(incoming) | set(deleted)) - set(parties)))
        country = spec.target.fields.country
        country_ids = self._countries(spec, {r[country] for r in incoming.values() if country and r[country]},
                                      {r[country]: code for code, r in incoming.items() if country}) \
            if country else {}
        for code, row in incoming.items():
            entry = entries.get(code)
            party = as_the_ledger_left_it(parties.get(code), entry)
            changes.modified_at[code] = row[SOURCE_MODIFIED_AT]
            if party is None:
                changes.creates.append(row)
            elif _stale(entry, party, row[SOURCE_MODIFIED_AT]):
                changes.stale += 1
            elif values := party_changes(party, row, spec, country_ids):
                changes.updates.append((party, row, values))
            else:
                changes.unchanged.append(row)
                if entry is None or not entry.active or entry.source_modified_at != row[SOURCE_MODIFIED_AT]:
                    changes.ledger_behind.append(row)
        for code, archived_at in deleted.items():
            party, entry = parties.get(code), entries.get(code)
            if code in incoming:
                continue
            if archived_at and entry and entry.source_modified_at and entry.source_modified_at > archived_at:
                continue  # recreated in the source after it was archived: the newer version stays
            if party is None:
                if entry is not None:
                    changes.ledger_forget.append(code)  # deleted in Tryton; a kill kept it in the ledger
                continue
            if spec.target.delete_mode == "soft" and not party.get("active"):
                continue
            changes.deletes.append(party)
            # the ledger keeps the version it held (as the SQL target's row does), or older data
            # could later re-activate the deactivated party
            changes.modified_at[code] = entry.source_modified_at if entry else None
        deleting = {p["code"] for p in changes.deletes}
        for code, party in parties.items():
            entry = entries.get(code)
            if entry is not None and entry.active and not party.get("active", True) and code not in deleting:
                # deactivated in Tryton, "active" in the ledger: a kill cut off the ledger write
                changes.ledger_deactivated.append({spec.target.key: code, SOURCE_MODIFIED_AT: entry.source_modified_at})
        return changes, country_ids

    def plan(self, spec: SyncSpec, batches: Iterable[pd.DataFrame], *, run_id: str,
             deleted_keys: Iterable[str | tuple[str, datetime | None]] = (), full_refresh: bool = False,
             kept_keys: Iterable[str] = (), sample_rows: int = 5) -> LoadPlan:
        """The load's changes, computed against what Tryton holds; nothing is written."""
        checksum = self.key_checksum(spec)
        changes, _ = self._changes(spec, batches, deleted_keys, full_refresh, kept_keys)
        per_column: dict[str, int] = {}
        update_samples = []
        for party, row, _ in changes.updates:
            have = party_row(party, spec)
            changed = [c for c in spec.mapping if have.get(c) != row.get(c)]
            for column in changed:
                per_column[column] = per_column.get(column, 0) + 1
            if len(update_samples) < sample_rows:
                update_samples.append({"key": row[spec.target.key], "changed": changed,
                                       "before": {c: have.get(c) for c in changed},
                                       "after": {c: row.get(c) for c in changed}})
        samples = {"insert": [{c: _json(row.get(c)) for c in spec.mapping} for row in changes.creates[:sample_rows]],
                   "update": update_samples,
                   "delete": [party_row(p, spec) for p in changes.deletes[:sample_rows]]}
        return LoadPlan(changes.result, checksum.count, checksum, per_column, samples)

    def load(self, spec: SyncSpec, batches: Iterable[pd.DataFrame], *, run_id: str,
             deleted_keys: Iterable[str | tuple[str, datetime | None]] = (), watermark: Watermark | None = None,
             full_refresh: bool = False, kept_keys: Iterable[str] = (), dry_run: bool = False,
             replayed_quarantine_ids: Iterable[int] = (), expected: LoadPlan | None = None) -> LoadResult:
        applied_earlier = False
        if expected is not None and (now := self.key_checksum(spec)) != expected.erp_checksum:
            # a retry whose earlier try committed the plan (its watermark names this run) moved
            # the parties itself: then it must find nothing left to change (refuse_unless_planned)
            applied_earlier = self._state.last_load_run_id(spec) == run_id
            if not applied_earlier:
                raise StalePlanError(f"Tryton's parties changed since the plan ({expected.erp_checksum} -> {now}): "
                                     "nothing changed; run the sync again to plan anew")
        changes, country_ids = self._changes(spec, batches, deleted_keys, full_refresh, kept_keys)
        if expected is not None:
            refuse_unless_planned("Tryton's parties", changes.result, expected, applied_earlier=applied_earlier)
        if dry_run:
            return changes.result
        self._apply(spec, changes, country_ids, run_id=run_id)
        if changes.refused:
            self._quarantine_refused(spec, changes, run_id=run_id)
        crash_point("tryton.before_watermark")
        # the last step: only now is every change in Tryton
        self._state.commit_load(spec, run_id=run_id, watermark=watermark,
                                replayed_quarantine_ids=replayed_quarantine_ids)
        return changes.result

    def _apply(self, spec: SyncSpec, changes: Changes, country_ids: dict[str, int], *, run_id: str) -> None:
        key, schema, total = spec.target.key, spec.target.state_schema, len(changes.creates) + len(
            changes.updates) + len(changes.deletes)
        done, started = 0, time.monotonic()

        def record(rows: list[dict[str, Any]], *, active: bool = True, forget: Iterable[str] = (),
                   settled: Iterable[str] = (), entries: Iterable[ledger.LedgerEntry] = ()) -> None:
            now = datetime.now(UTC)
            ledger.record(self._state, schema, spec.name, [*entries, *(
                ledger.LedgerEntry(str(r[key]), r.get(SOURCE_MODIFIED_AT), active, None if active else now)
                for r in rows)], run_id=run_id, forget=forget, settled=settled)

        def announce(rows: list[dict[str, Any]]) -> None:
            """The writes about to be made, before Tryton is written (see :mod:`conduit.targets.ledger`)."""
            ledger.record(self._state, schema, spec.name, [], run_id=run_id, pending=[
                ledger.PendingWrite(str(r[key]), r.get(SOURCE_MODIFIED_AT), h)
                for r, h in zip(rows, held_hashes(rows, spec), strict=True)])

        def progress(what: str, n: int) -> None:
            nonlocal done
            done += n
            log.info("tryton %s: %s %d parties (%d/%d changes, %.0f s)", spec.name, what, n, done, total,
                     time.monotonic() - started)

        def write(item: tuple[dict[str, Any], dict[str, Any], dict[str, Any]]) -> str | None:
            try:
                self._write_party(item[0], item[2])
            except TrytonRequestError as exc:
                if (message := _refusal(exc)) is None:
                    raise
                return message
            return None

        # first the ledger catches up with what a killed load wrote to Tryton: its announced writes
        # Tryton holds, and its deletions (a party it then re-activates must be known as
        # deactivated should the re-activation be cut off in turn: as_the_ledger_left_it)
        record(changes.ledger_deactivated, active=False, forget=changes.ledger_forget,
               settled=changes.pending, entries=changes.ledger_settled)
        for chunk in self._chunks(spec, changes.creates):
            announce(chunk)
            refused = self._create(spec, chunk, country_ids)
            crash_point("tryton.batch_written")
            changes.refused += refused
            changes.refused_creates += len(refused)
            codes = {str(row[key]) for row, _ in refused}
            record([row for row in chunk if str(row[key]) not in codes], settled=[str(row[key]) for row in chunk])
            progress("created", len(chunk) - len(refused))
        for chunk in self._chunks(spec, changes.updates):
            announce([row for _, row, _ in chunk])
            messages = self._parallel(spec, write, chunk)
            crash_point("tryton.batch_updated")
            refused = [(row, message) for (_, row, _), message in zip(chunk, messages, strict=True) if message]
            changes.refused += refused
            record([row for (_, row, _), message in zip(chunk, messages, strict=True) if not message],
                   settled=[str(row[key]) for _, row, _ in chunk])
            progress("updated", len(chunk) - len(refused))
        record(changes.ledger_behind)
        for chunk in self._chunks(spec, changes.deletes):
            if spec.target.delete_mode == "hard":
                self._parallel(spec, lambda party: self.hook.delete(PARTY, party["id"], context=ALL_RECORDS), chunk)
                crash_point("tryton.batch_deleted")
                record([], forget=[p["code"] for p in chunk])
            else:
                self._parallel(spec, lambda party: self.hook.write(PARTY, party["id"], {"active": False},
                                                                       context=ALL_RECORDS), chunk)
                crash_point("tryton.batch_deleted")
                record([{key: p["code"], SOURCE_MODIFIED_AT: changes.modified_at.get(p["code"])} for p in chunk],
                       active=False)
            progress("deleted" if spec.target.delete_mode == "hard" else "deactivated", len(chunk))

    def _create(self, spec: SyncSpec, rows: list[dict[str, Any]], country_ids: dict[str, int]
                ) -> list[tuple[dict[str, Any], str]]:
        """One request per batch (Tryton creates all of it or nothing). When Tryton refuses the
        batch, party by party: create; re-read and update a code another writer created meanwhile;
        set aside a party Tryton refuses. Returns the refused rows with Tryton's message; raises
        when it refused every party of the batch (then it is not about one party)."""
        try:
            self.hook.create_many(PARTY, [party_values(r, spec, country_ids) for r in rows], context=ALL_RECORDS)
            return []
        except TrytonRequestError as exc:
            if UNIQUE_CODE not in str(exc) and _refusal(exc) is None:
                raise
            batch_error = exc
        refused: list[tuple[dict[str, Any], str]] = []
        for row in rows:
            code = str(row[spec.target.key])
            try:
                self.hook.create(PARTY, party_values(row, spec, country_ids), ["id"], context=ALL_RECORDS)
            except TrytonRequestError as exc:
                if UNIQUE_CODE in str(exc):
                    party = self._parties(spec, [code])[code]
                    values = party_changes(party, row, spec, country_ids)
                    if values:
                        self._write_party(party, values)
                elif (message := _refusal(exc)) is not None:
                    refused.append((row, message))
                else:
                    raise
        if len(rows) > 1 and len(refused) == len(rows):
            raise batch_error
        return refused

    def _write_party(self, party: dict[str, Any], values: dict[str, Any]) -> None:
        """Write ``values`` (:func:`party_changes`) to ``party``. Tryton keeps a deactivated party's
        fields read-only and refuses a write that re-activates it and changes them at once, so such
        a party is re-activated first; when Tryton then refuses the values, it is deactivated again
        (a refused party stays as it was). The two writes are two Tryton transactions: a process
        killed between them (crash point ``tryton.reactivated``) leaves the party active with its
        old values and the ledger saying deactivated; the retried load takes such a party as
        deactivated (:func:`as_the_ledger_left_it`) and writes both again."""
        if party.get("active", True) or values.keys() == {"active"}:
            self.hook.write(PARTY, party["id"], values, context=ALL_RECORDS)
            return
        self.hook.write(PARTY, party["id"], {"active": True}, context=ALL_RECORDS)
        crash_point("tryton.reactivated")
        try:
            self.hook.write(PARTY, party["id"], {k: v for k, v in values.items() if k != "active"},
                            context=ALL_RECORDS)
        except TrytonRequestError as exc:
            if _refusal(exc) is not None:
                self.hook.write(PARTY, party["id"], {"active": False}, context=ALL_RECORDS)
            raise

    def _quarantine_refused(self, spec: SyncSpec, changes: Changes, *, run_id: str) -> None:
        """The refused parties into the quarantine, or the load fails when there are too many to be
        a few bad records (the gate's ``max_rejected_ratio``, for loads of its minimum size)."""
        quality, total = spec.quality, len(changes.creates) + len(changes.updates)
        ratio = len(changes.refused) / total
        if quality is None or (total >= quality.rejected_ratio_min_rows and ratio > quality.max_rejected_ratio):
            row, message = changes.refused[0]
            raise QualityGateFailed(
                f"Tryton refused {len(changes.refused)} of {total} parties ({ratio:.2%}, more than the gate's "
                f"max_rejected_ratio allows), e.g. {row[spec.target.key]}: {message}. The parties it accepted are "
                "written; the watermark did not move, so the next run tries the refused ones again")
        for row, message in changes.refused:
            log.warning("tryton %s: Tryton refused party %s (quarantined): %s", spec.name, row[spec.target.key],
                        message)
        self._state.quarantine(spec, refused_findings(changes.refused, spec), run_id=run_id)

    def test_connection(self) -> tuple[bool, str]:
        return self.hook.test_connection()

    def describe(self) -> dict[str, Any]:
        return {"kind": "tryton", **self.hook.describe()}


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
