"""What every ERP target offers, whatever the ERP behind it (a SQL table now, a REST API later).

A target receives mapped customer rows as pandas DataFrames: the spec's ``mapping`` columns in
order, then ``source_modified_at`` (UTC timestamp) and ``row_hash`` (hex text). It loads them
idempotently, keyed by ``spec.target.key``, and keeps the sync's watermark and quarantine next
to the data so that a load and its bookkeeping commit or fail together.

pandas is imported inside functions only: operators import this module at DAG-parse time.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    import pandas as pd

    from conduit.specs.model import SyncSpec

SOURCE_MODIFIED_AT = "source_modified_at"
ROW_HASH = "row_hash"
TRACKING_COLUMNS = (SOURCE_MODIFIED_AT, ROW_HASH)
"""What the transform adds to the mapped columns of every row: the source's modification time and
a hash of the mapped values."""
BOOKKEEPING_COLUMNS = (*TRACKING_COLUMNS, "active", "deleted_at", "created_at", "updated_at", "last_run_id")
"""What a target keeps per row besides the mapped columns: the one list of these names."""
CRM_ID = "crm_id"
"""The mapped column holding the CRM record's id (what the gate's findings and the quarantine call
``crm_id``): it links an ERP row to its CRM record when the key does not (a record that lost it)."""


@dataclass(frozen=True, order=True)
class Watermark:
    """How far the source has been read: a (last-modified ms, object id) cursor.

    Ordered as a tuple, so ties on the timestamp are broken by the id.
    """

    ts_ms: int
    id: int


@dataclass(frozen=True)
class LoadResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    stale_skipped: int = 0
    """Incoming rows older than what the target holds: left alone."""
    refused: int = 0
    """Rows the target itself refused (a validation the gate does not know): quarantined, the rest loaded."""

    @property
    def changed(self) -> int:
        """Rows the load changed: inserted, updated or deleted."""
        return self.inserted + self.updated + self.deleted


@dataclass(frozen=True)
class LoadPlan:
    """What a load would change, computed by running it and rolling it back. ``result`` holds the
    counts; ``active_before`` and ``erp_checksum`` describe the ERP it was planned against (a load
    given this plan refuses when either moved); ``changed_columns`` counts, per column, the
    updates that change it; ``samples`` holds a few rows per kind: ``insert`` (the new row),
    ``update`` (key, changed columns, before and after), ``delete`` (the row as it was)."""

    result: LoadResult
    active_before: int
    erp_checksum: KeyChecksum
    changed_columns: dict[str, int]
    samples: dict[str, list[dict[str, Any]]]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.result), "active_before": self.active_before, "erp_checksum": str(self.erp_checksum),
                "changed_columns": self.changed_columns, "samples": self.samples}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadPlan:
        count, digest = str(data["erp_checksum"]).split(":")
        checksum = KeyChecksum(int(count), int(digest, 16))
        result = LoadResult(**{f: int(data.get(f, 0)) for f in LoadResult.__dataclass_fields__})
        return cls(result, int(data["active_before"]), checksum,
                   dict(data.get("changed_columns", {})), dict(data.get("samples", {})))


def refuse_unless_planned(where: str, result: LoadResult, expected: LoadPlan, *, applied_earlier: bool) -> None:
    """An approved load applies exactly the plan, or nothing (``StalePlanError``). When the ERP
    moved since the plan only because an earlier try of this run committed the plan and died
    before reporting it (``applied_earlier``), the retry's load must find nothing left to change:
    any change would be one nobody approved."""
    from conduit.exceptions import StalePlanError

    if applied_earlier:
        if result.changed:
            raise StalePlanError(f"{where}: an earlier try of this run applied the approved plan, yet the load "
                                 f"would now make {result}: the ERP changed since; nothing changed, run the sync "
                                 "again to plan anew")
    elif result != expected.result:
        raise StalePlanError(f"{where}: the load would make {result} but the approved plan said "
                             f"{expected.result}; nothing changed, run the sync again to plan anew")


class SyncStateStore(ABC):
    """A sync's bookkeeping: how far the source has been read (the watermark), the records the
    quality gate parked (quarantine) and, through :attr:`state`, the defects table. A SQL target
    keeps it beside the rows and commits both together; a target behind an HTTP API keeps it in
    a SQL database of its own (:class:`~conduit.targets.sql.SqlErpTarget` used as a store)."""

    @property
    def state(self) -> Any:
        """The SQL store holding this sync's state tables (``conduit.targets.defects`` writes
        there). A SQL target is its own store."""
        return self

    @abstractmethod
    def read_watermark(self, spec: SyncSpec) -> Watermark | None:
        """The watermark stored by the last load of this sync, or None before the first."""

    @abstractmethod
    def quarantine(self, spec: SyncSpec, rows: list[dict[str, Any]], *, run_id: str) -> int:
        """Park rejected records. Each row has ``expectation`` and optionally ``record_key``,
        ``crm_id``, ``column_name``, ``reason``, ``raw_record`` (JSON-able). The same finding of
        one record (its key, or without one its CRM id) quarantined twice by one run is kept once.
        Returns how many rows were added."""

    @abstractmethod
    def open_quarantine(self, spec: SyncSpec) -> list[dict[str, Any]]:
        """Quarantined records not yet replayed, oldest first, each with its ``id``."""

    @abstractmethod
    def mark_replayed(self, spec: SyncSpec, quarantine_ids: Iterable[int], *, run_id: str) -> int:
        """Mark entries replayed by ``run_id`` (each at most once); returns how many were marked.
        To make a replay exactly-once, pass the ids to :meth:`ErpTarget.load` instead."""

    @abstractmethod
    def replayed_by(self, spec: SyncSpec, run_id: str) -> int:
        """How many entries the replay run ``run_id`` closed (a retried replay asks whether an
        earlier try of its run committed)."""

    def erase_records(self, spec: SyncSpec, crm_ids: Iterable[str], keys: Iterable[str] = (), *,
                      run_id: str) -> dict[str, int]:
        """Remove what the sync's own tables hold of records the CRM confirmed gone for good
        (erased for privacy, merged away): their quarantine entries (by CRM id, or without one by
        ``keys``, the keys their ERP rows had) lose the raw record and their reason, and open ones
        are closed by ``run_id`` (``replayed_at``, ``replayed_by_run``: no replay or health page
        shows them again); their defects lose the raw value and are resolved likewise. Each entry
        keeps its record, rule and column, and says it was erased in the CRM and by which run. One
        transaction; idempotent. Returns ``quarantine_erased`` and ``defects_erased`` (entries
        changed). This default erases in :attr:`state`, the SQL store that holds those tables."""
        if self.state is self:
            raise NotImplementedError(f"{type(self).__name__} keeps its own state: it must erase records itself")
        return self.state.erase_records(spec, crm_ids, keys, run_id=run_id)


class RecordSink(ABC):
    """Where the records land: upsert and delete (:meth:`ErpTarget.load`), and read back for
    reconciliation (:meth:`count`, :meth:`key_checksum`, :meth:`fetch_rows`)."""

    @abstractmethod
    def ensure_ready(self, spec: SyncSpec) -> None:
        """Create what the spec needs if missing (idempotent, safe to run concurrently), the
        state store's tables included. Raises ``TargetConfigError`` when what exists does not
        fit the spec."""

    @abstractmethod
    def count(self, spec: SyncSpec, *, active_only: bool = True) -> int: ...

    def holds_rows(self, spec: SyncSpec) -> bool:
        """Whether the table holds any row, soft-deleted ones too (a new or emptied table holds none)."""
        return self.count(spec, active_only=False) > 0

    @abstractmethod
    def key_checksum(self, spec: SyncSpec) -> KeyChecksum:
        """Order-independent checksum of (key, row_hash) over active rows; equals
        :func:`frame_key_checksum` of a frame holding the same rows."""

    @abstractmethod
    def fetch_rows(self, spec: SyncSpec, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Stored rows (all, or those with ``keys``), ordered by key: the mapped columns, then
        the bookkeeping ones (:data:`BOOKKEEPING_COLUMNS`)."""

    def fetch_rows_of_records(self, spec: SyncSpec, crm_ids: Iterable[str]) -> pd.DataFrame:
        """Stored rows of these CRM records, by the mapped :data:`CRM_ID` column (no rows when the
        spec maps none), as :meth:`fetch_rows` gives them. This default reads every row; a target
        that can select by a column overrides it."""
        wanted = {str(c) for c in crm_ids}
        rows = self.fetch_rows(spec)
        if not wanted or CRM_ID not in rows:
            return rows.iloc[:0]
        return rows[rows[CRM_ID].astype(str).isin(wanted)]

    @abstractmethod
    def test_connection(self) -> tuple[bool, str]: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain facts about where the data lands, for lineage: ``kind`` and where it applies
        ``host``, ``port``, ``database``, ``path``, ``url``. Never credentials."""


class ErpTarget(RecordSink, SyncStateStore):
    """An ERP customer master that Conduit loads into: a record sink and the sync's state store.

    :meth:`load` is exactly-once: rows, deletes, the watermark and replay marks all take effect,
    or the watermark does not move and a retried load finishes the same changes without
    duplicating any (a SQL target: one transaction; an HTTP target: idempotent writes keyed by
    ``spec.target.key`` and the watermark written last).
    """

    @abstractmethod
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
        """Upsert the rows, apply deletes, advance the watermark and mark replayed quarantine
        entries, atomically.

        - A stored row changes only for data at least as new as its own; older data is counted
          as ``stale_skipped``. Unchanged rows are not rewritten. A soft-deleted row that comes
          back with newer data is re-activated. Of several rows with one key, the newest wins.
        - ``deleted_keys`` are deleted per ``spec.target.delete_mode`` after the upsert; a key given
          as (key, archived version's timestamp) spares a stored row newer than that version.
        - ``full_refresh`` also deletes every row this load did not bring, except ``kept_keys``
          (records the source still has but this load leaves out, e.g. quarantined ones).
        - The stored watermark moves to ``watermark`` only if that is later.
        - ``dry_run`` does all of it, reports the counts and rolls back.
        - With ``expected`` (a :class:`LoadPlan` of the same rows), the load refuses
          (``StalePlanError``, nothing changed) when the ERP moved since the plan or the changes
          would differ from it: an approved plan is applied exactly, or not at all. A retry of
          ``run_id`` whose earlier try committed the plan (the state store's last load is this
          run's) is no stale plan: it changes nothing and returns no changes
          (:func:`refuse_unless_planned`).
        """

    @abstractmethod
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
        """What :meth:`load` with the same arguments would change, without changing anything."""


# --- key checksum -------------------------------------------------------------------------------

_MODULUS = 1 << 64


@dataclass(frozen=True)
class KeyChecksum:
    """Count and sum (mod 2**64) of the first 64 bits of ``md5(f"{key}:{row_hash}")`` per row.

    A sum, unlike a XOR, does not cancel out duplicated rows, and it adds up: the checksum of a
    table is the sum of its parts', and a part can be taken out again. A database can compute it
    in SQL (see ``sql_render.postgres_key_checksum``)."""

    count: int = 0
    digest_sum: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest_sum", self.digest_sum % _MODULUS)

    def __add__(self, other: KeyChecksum) -> KeyChecksum:
        return KeyChecksum(self.count + other.count, self.digest_sum + other.digest_sum)

    def __sub__(self, other: KeyChecksum) -> KeyChecksum:
        return KeyChecksum(self.count - other.count, self.digest_sum - other.digest_sum)

    def __str__(self) -> str:
        return f"{self.count}:{self.digest_sum:016x}"


_CHECKSUM_BATCH = 10_000


def key_checksum_of(pairs: Iterable[tuple[object, str]]) -> KeyChecksum:
    """:class:`KeyChecksum` of (key, row_hash) pairs (a cursor's rows, say), in batches."""
    pairs, total = iter(pairs), KeyChecksum()
    while batch := list(islice(pairs, _CHECKSUM_BATCH)):
        total += _texts_checksum([f"{key}:{row_hash}" for key, row_hash in batch])
    return total


def frame_key_checksum(frame: pd.DataFrame, key: str) -> KeyChecksum:
    """:meth:`ErpTarget.key_checksum` of the rows in ``frame`` (one row per key)."""
    # lists first: iterating pandas' Arrow-backed columns value by value costs ~4x the digests
    keys, row_hashes = frame[key].astype(str).tolist(), frame[ROW_HASH].tolist()
    return _texts_checksum([f"{k}:{row_hash}" for k, row_hash in zip(keys, row_hashes, strict=True)])


def _texts_checksum(texts: list[str]) -> KeyChecksum:
    """:class:`KeyChecksum` of ``key:row_hash`` texts."""
    import numpy as np

    md5 = hashlib.md5
    digests = b"".join([md5(text.encode()).digest() for text in texts])
    # the first 8 bytes of each 16-byte digest, big-endian; numpy's uint64 sum wraps mod 2**64
    firsts = np.frombuffer(digests, dtype=">u8")[::2]
    return KeyChecksum(len(texts), int(firsts.sum(dtype=np.uint64)))
