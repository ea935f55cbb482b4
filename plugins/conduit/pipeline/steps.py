"""The sync's steps over a CRM source, the ERP target and staged files. Operators call these; so
does the benchmark, so what is measured is exactly what runs in Airflow."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from conduit.crash import crash_point
from conduit.pipeline.staging import PartWriter, RunStaging

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from conduit.pipeline.run_plan import RunPlan
    from conduit.sources.base import CrmSource
    from conduit.specs.model import SyncSpec
    from conduit.targets.base import ErpTarget, KeyChecksum

log = logging.getLogger(__name__)
BATCH_ROWS = 10_000
# Raw parts are smaller: each parallel extract builds one part at a time, and a part's Arrow
# chunks plus its Parquet encoder cost memory in every thread (measured at 1M: peak RSS after the
# four-range extract 306 MiB with 10,000-row parts, ~260 with 2,000). The transform reads them
# joined into BATCH_ROWS batches again.
RAW_PART_ROWS = 2_000


def raw_properties(spec: SyncSpec) -> list[str]:
    """The CRM properties staged for every record (the spec's, plus the source's id property)."""
    from conduit.sources import source_for

    return source_for(spec).raw_properties()


def records_to_table(records: list[dict], properties: list[str]) -> pa.Table:
    """JSON records (``{"id", "properties"}`` dicts) as a table: ``id`` and every property, all strings."""
    from conduit.pipeline.pages import RecordPage, pages_to_table

    return pages_to_table([RecordPage.from_records(records, properties)], properties)


class Progress:
    """Logs pages, rows, rows/s and (when the total is known) an estimate of what remains."""

    def __init__(self, what: str, logger: logging.Logger, total: int | None = None, every_s: float = 5.0):
        self.what, self.log, self.total, self.every_s = what, logger, total, every_s
        self.started = self.last = time.monotonic()
        self.pages = self.rows = 0

    def update(self, rows: int) -> None:
        self.pages += 1
        self.rows += rows
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.rows / elapsed
        text = f"{self.what}: {self.pages} pages, {self.rows} rows, {rate:,.0f} rows/s"
        if self.total and rate:
            remaining = max(self.total - self.rows, 0)
            text += f", ~{remaining} rows / {remaining / rate:.0f}s remaining"
        return text


def write_pages(pages: Iterable[Any], writer: PartWriter, properties: list[str], progress: Progress,
                batch_rows: int = RAW_PART_ROWS) -> int:
    """Stream API pages (``RecordPage`` s, or lists of JSON records) into Parquet parts of about
    ``batch_rows`` rows: memory stays flat. Pages are buffered as decoded (a tuple of values per
    record, never a dict) and turned into Arrow once per part."""
    from conduit.pipeline.pages import as_record_page, pages_to_table

    buffer: list = []
    buffered = 0
    for page in pages:
        page = as_record_page(page, properties)
        progress.update(len(page))
        if page:
            buffer.append(page)
            buffered += len(page)
        crash_point("extract.between_pages")
        if buffered >= batch_rows:
            writer.write(pages_to_table(buffer, properties))
            buffer, buffered = [], 0
            crash_point("extract.between_parts")
    if buffer:
        writer.write(pages_to_table(buffer, properties))
    return writer.rows


def webhook_object_ids(triggering_asset_events: Any) -> list[str]:
    """CRM object ids that webhook events (via the AssetWatcher) reported for this run, in order."""
    ids: dict[str, None] = {}
    for events in (triggering_asset_events or {}).values():
        for event in events:
            payload = (event.extra or {}).get("payload") or {}
            ids.update(dict.fromkeys(str(i) for i in payload.get("object_ids", ())))
    return list(ids)


def plan_extract(source: CrmSource, run: RunPlan, *, parallelism: int = 1,
                 object_ids: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The extract's work items, each one mapped task (:meth:`CrmSource.plan`): changed records in
    the run's window (or, for a full read, every record, split into ``parallelism`` id ranges),
    records webhooks named (read by id: a change seconds old is above the window's upper bound and
    may not be in the search index yet), and the archived listing. Every item carries the run's
    decision (:meth:`RunPlan.item_fields`: mode, window, the watermark to store, ``delete_missing``)."""
    run_fields = run.item_fields()
    return [{**run_fields, **item}
            for item in source.plan(run.window, parallelism=parallelism, object_ids=list(object_ids))]


def extract_item(source: CrmSource, staging: RunStaging, item: dict[str, Any],
                 logger: logging.Logger = log) -> dict[str, Any]:
    """Run one work item of :func:`plan_extract` into raw/ (or archived/), in its own subfolder."""
    props = source.raw_properties()
    kind = item["kind"]
    requests_before, retries_before = source.requests_sent, source.retries  # one source may serve many items
    name = f"{kind}-{item['lo']}" if kind == "range" else kind  # each item writes its own subfolder
    progress = Progress(f"extract {source.object_type} {name}", logger)
    with staging.writer("archived" if kind == "archived" else "raw", name) as writer:
        rows = write_pages(source.read(item), writer, props, progress)
    logger.info("%s", progress.line())
    # records read by id: which of those the read did not return are gone from the CRM for good
    gone = {"gone": stage_gone_records(source, staging, item, name, logger)} if kind == "ids" else {}
    return {"kind": kind, "mode": item["mode"], "watermark_ms": item["watermark_ms"], "rows": rows,
            "pages": progress.pages, "requests": source.requests_sent - requests_before,
            "retries": source.retries - retries_before, **gone}


# --- records webhooks named that the CRM no longer has ----------------------------------------

GONE_RECORDS_FILE = "gone_records.json"
"""Beside a run's staged parts: the CRM ids of records webhooks named that the CRM confirmed gone
for good (:meth:`CrmSource.gone_records`), written by the ``ids`` work item, read by the plan and
the load (:func:`gone_records`)."""


def stage_gone_records(source: CrmSource, staging: RunStaging, item: dict[str, Any], partition: str,
                       logger: logging.Logger = log) -> int:
    """After an ``ids`` work item staged the live records of the ids it names (raw/``partition``),
    ask the CRM which of the others are gone for good (erased for privacy, merged away: neither
    live nor archived) and stage their ids, replacing what an earlier try staged. Returns how many."""
    import json
    import os
    import uuid

    from conduit.pipeline.staging import read_part

    read = {str(i) for path in staging.parts("raw") if path.parent.name == partition
            for i in read_part(path, ["id"]).column("id").to_pylist()}
    unread = [str(i) for i in item["ids"] if str(i) not in read]
    gone = source.gone_records(unread) if unread else []
    staging.root.mkdir(parents=True, exist_ok=True)
    path = staging.root / GONE_RECORDS_FILE
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(gone))
    os.replace(tmp, path)
    if gone:
        logger.info("%d of the %d records read by id are gone from the CRM for good (not live, not "
                    "archived): the load removes them from the ERP: %s", len(gone), len(item["ids"]),
                    ", ".join(gone[:20]))
    return len(gone)


@dataclass(frozen=True)
class GoneRecords:
    """What a run learned is gone from the CRM for good (:func:`stage_gone_records`), read once
    per step (:func:`gone_records`)."""

    crm_ids: tuple[str, ...] = ()
    erp_keys: tuple[Any, ...] = ()
    """The keys of their ERP rows, for the load to delete unconditionally (a record gone for good
    has no newer version), but a key this run loads for another, live record (a merge's survivor
    that took the merged-away record's key property)."""
    read_keys: frozenset[str] = frozenset()
    """The staged keys of the ones the window's lagging search still read."""

    @property
    def keys(self) -> set[str]:
        """Every key of theirs, as text: what their quarantine entries and defects are filed under."""
        return {k for k in (*(key_text(k) for k in self.erp_keys), *self.read_keys) if k is not None}


def gone_records(target: ErpTarget, spec: SyncSpec, staging: RunStaging) -> GoneRecords:
    """:class:`GoneRecords` of the run: the ERP rows found by the ERP's CRM id column (a gone
    record has no properties left to map a key from), active or not."""
    ids = gone_record_ids(staging)
    if not ids:
        return GoneRecords()
    keys = target.fetch_rows_of_records(spec, ids)[spec.target.key].tolist()
    taken = _staged_keys_of_records(spec, staging, ids, others=True) if keys else set()
    return GoneRecords(tuple(ids), tuple(k for k in keys if key_text(k) not in taken),
                       frozenset(_staged_keys_of_records(spec, staging, ids)))


def erase_gone_records(target: ErpTarget, spec: SyncSpec, crm_ids: Sequence[str], keys: Iterable[str], *,
                       run_id: str, logger: logging.Logger = log) -> dict[str, int]:
    """After a real load: the quarantine entries and defects of the records the CRM confirmed gone
    for good lose their raw CRM data and are closed (:meth:`ErpTarget.erase_records`), so the
    sync's own tables keep no personal data of an erased person, and no replay or health page
    shows the record again. Called after the load commits; a retried load erases again (idempotent,
    by CRM id: a hard-deleted row no longer tells its key)."""
    counts = target.erase_records(spec, crm_ids, keys, run_id=run_id)
    if any(counts.values()):
        logger.info("erased what the quarantine (%d entries) and the defects (%d) held of %d records gone "
                    "from the CRM for good: raw values removed, entries closed by this run",
                    counts["quarantine_erased"], counts["defects_erased"], len(crm_ids))
    return counts


def gone_record_ids(staging: RunStaging) -> list[str]:
    """The CRM ids :func:`stage_gone_records` staged for this run (none without the file)."""
    import json

    path = staging.root / GONE_RECORDS_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def _staged_keys_of_records(spec: SyncSpec, staging: RunStaging, crm_ids: Iterable[str], *,
                            others: bool = False) -> set[str]:
    """The keys of the staged mapped rows of these CRM records (``others``: of every other record)."""
    from conduit.targets.base import CRM_ID

    if CRM_ID not in spec.mapping:
        return set()
    lookup, key = key_lookup(crm_ids), spec.target.key
    return {key_text(k) for f in staging.read_frames("mapped", [key, CRM_ID])
            for k in f.loc[in_keys(f[CRM_ID], lookup) != others, key]}


def extract(source: CrmSource, staging: RunStaging, run: RunPlan, *, parallelism: int = 1,
            logger: logging.Logger = log) -> dict[str, Any]:
    """CRM -> raw/ and archived/ in one process (what the mapped extract tasks do in parallel), as
    ``run`` (:func:`conduit.pipeline.run_plan.plan_run`) decided."""
    staging.reset("raw")
    staging.reset("archived")
    results = [extract_item(source, staging, item, logger)
               for item in plan_extract(source, run, parallelism=parallelism)]
    return summarize_extract(results)


def summarize_extract(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary of the extract's items (mode and watermark are the same on every item)."""
    return {"mode": results[0]["mode"], "watermark_ms": results[0]["watermark_ms"],
            "rows": sum(r["rows"] for r in results if r["kind"] != "archived"),
            "webhook_records": sum(r["rows"] for r in results if r["kind"] == "ids"),
            "gone_records": sum(r.get("gone", 0) for r in results),
            "archived": sum(r["rows"] for r in results if r["kind"] == "archived"),
            "pages": sum(r["pages"] for r in results), "requests": sum(r["requests"] for r in results),
            "retries": sum(r["retries"] for r in results)}


def transform(spec: SyncSpec, staging: RunStaging) -> dict[str, int]:
    """raw/ -> mapped/ and archived/ -> mapped_archived/, part by part (Arrow end to end). A
    record that more than one work item read is mapped once, in its newest version (``dedup``)."""
    from conduit.pipeline.dedup import superseded_reads

    read_any = bool(staging.parts("raw") or staging.parts("archived"))
    # nothing read (a no-change run): nothing superseded, and none of dedup's imports (pandas)
    superseded = superseded_reads(staging, spec.source.cursor.property) if read_any else {}
    counts = {}
    for source_kind, mapped_kind in (("raw", "mapped"), ("archived", "mapped_archived")):
        with staging.writer(mapped_kind) as writer:
            for frame in staging.read_frames(source_kind, min_rows=BATCH_ROWS, drop=superseded):
                # imported with the first rows: a run that read nothing never loads the transforms
                from conduit.transforms.mapping import map_table

                writer.write(map_table(frame, spec))
                crash_point("transform.between_batches")
        counts[mapped_kind] = writer.rows
    counts["superseded_reads"] = sum(len(rows) for rows in superseded.values())
    return counts


def load_inputs(target: ErpTarget, spec: SyncSpec, staging: RunStaging, *, full_refresh: bool,
                gone: GoneRecords | None = None) -> dict[str, Any]:
    """What the load (and its plan) take from the staged files: mapped rows minus rejected ones,
    the archived keys and those of records gone for good (``gone``, read here when not given) to
    delete, the keys a full refresh must keep (rejected ones, and the ERP rows of rejected records
    that arrived without their key: :func:`held_keys`)."""
    if not staging.root.is_dir():
        from conduit.exceptions import StagedFilesGone

        raise StagedFilesGone(
            f"the run's staged files are gone ({staging.root.name}): reconcile removed them after it checked "
            "this run's load, so there is nothing to plan or load again; to sync again, trigger a new run "
            "(or clear this run from plan_extract, which reads the CRM anew)")
    key = spec.target.key
    rejected = read_rejected(staging)
    left_out = rejected.lookups()

    def batches():
        for frame in staging.read_frames("mapped"):
            yield frame[~rejected_rows(frame, key, *left_out)] if rejected.lists_rows else frame

    deleted = [(k, ts.to_pydatetime()) for frame in staging.read_frames("mapped_archived", [key, "source_modified_at"])
               for k, ts in zip(frame[key].tolist(), frame["source_modified_at"], strict=True)]
    deleted += list((gone or gone_records(target, spec, staging)).erp_keys)  # named by webhooks, gone for good
    if full_refresh and staging.count("mapped") == 0:
        from conduit.exceptions import EmptySourceError

        raise EmptySourceError("full refresh read no CRM records; refusing to delete every ERP customer")
    # quarantined records still exist: a full refresh keeps them
    kept = (rejected.keys | held_keys(target, spec, rejected.keyless_crm_ids)) if full_refresh else rejected.keys
    return {"batches": batches(), "deleted_keys": deleted, "full_refresh": full_refresh, "kept_keys": kept}


def load(target: ErpTarget, spec: SyncSpec, staging: RunStaging, *, run_id: str, watermark_ms: int | None,
         full_refresh: bool = False, dry_run: bool = False, expected=None):
    """mapped/ minus rejected/ -> the ERP, in one transaction with deletes and the new watermark;
    with ``expected`` (the approved :class:`~conduit.targets.base.LoadPlan`), exactly that or nothing."""
    from conduit.targets.base import Watermark

    # before the load: a hard delete takes the ERP rows that tell a gone record's key
    gone = gone_records(target, spec, staging)
    inputs = load_inputs(target, spec, staging, full_refresh=full_refresh, gone=gone)
    result = target.load(spec, inputs.pop("batches"), run_id=run_id,
                         watermark=Watermark(watermark_ms, 0) if watermark_ms is not None else None,
                         dry_run=dry_run, expected=expected, **inputs)
    if gone.crm_ids and not dry_run:
        erase_gone_records(target, spec, gone.crm_ids, gone.keys, run_id=run_id)
    return result


def plan(target: ErpTarget, spec: SyncSpec, staging: RunStaging, *, run_id: str, full_refresh: bool = False,
         sample_rows: int = 5):
    """What :func:`load` would change: a :class:`~conduit.targets.base.LoadPlan`, nothing changed."""
    inputs = load_inputs(target, spec, staging, full_refresh=full_refresh)
    return target.plan(spec, inputs.pop("batches"), run_id=run_id, sample_rows=sample_rows, **inputs)


def _raw_records(spec: SyncSpec, staging: RunStaging, crm_ids: set[str]) -> dict[str, dict]:
    """The raw CRM records of a few ids (for quarantine), read part by part: the versions the
    transform mapped."""
    from conduit.pipeline.dedup import superseded_reads

    found: dict[str, dict] = {}
    lookup = key_lookup(crm_ids)
    for frame in staging.read_frames("raw", drop=superseded_reads(staging, spec.source.cursor.property)):
        hits = frame[in_keys(frame["id"], lookup)]
        hits = hits.astype(object).where(hits.notna(), None)  # JSON has no NaN: empty properties are null
        found.update({row["id"]: row for row in hits.to_dict("records")})
    return found


def evaluate_suite(spec: SyncSpec, staging: RunStaging, suite_path, *, previous_row_count: int | None = None):
    """The suite, plus a field check per column whose transform sets ``on_invalid``, on mapped/."""
    from conduit.quality.defects import field_checks
    from conduit.quality.engine import SuiteEvaluator
    from conduit.quality.suite import load_suite

    suite = load_suite(suite_path).with_field_checks(field_checks(spec))
    # reread: repeated hashes of a unique column are confirmed on a second read of the staged rows
    def mapped():
        return (_integer_keys(spec, frame) for frame in staging.read_frames("mapped"))

    evaluator = SuiteEvaluator(suite, key=spec.target.key, previous_row_count=previous_row_count, reread=mapped)
    for frame in mapped():
        evaluator.add(frame)
    return evaluator.report()


def gate(target: ErpTarget, spec: SyncSpec, staging: RunStaging, suite_path, *, run_id: str,
         full_extract: bool, dry_run: bool = False, deletes_missing: bool = False):
    """Evaluate the suite on mapped/ and decide. Rows rejected under ``quarantine`` are parked in
    the ERP's quarantine table with their reasons and raw record, and listed in rejected/ so the
    load leaves them out. Defects of the rows that load go to the ERP's defects table, marked with
    this run's id; clean values this run read resolve open ones. A failed gate writes neither.
    ``dry_run`` (a dry run or a plan_only run, which must change nothing) decides the same and
    still writes rejected/ (the plan and the rolled-back load leave those rows out), but parks
    nothing: a replay would otherwise load records no real run rejected. Its summary says what a
    real run would write (defect counts from a rolled-back transaction).
    ``deletes_missing`` (a full refresh, or a periodic full read): the load deletes the records this
    run did not read, so their open defects are over too.
    Returns (report, decision, summary)."""
    from conduit.quality.engine import decide
    from conduit.quality.summary import defect_counts

    # A change in row count is only meaningful when this run read everything.
    report = evaluate_suite(spec, staging, suite_path,
                            previous_row_count=target.count(spec) if full_extract else None)
    quality = spec.quality
    decision = decide(report, quality.policy, quality.max_rejected_ratio, quality.max_defect_ratio,
                      quality.defect_ratio_min_rows, quality.rejected_ratio_min_rows)
    # rows without their key can never load: block stops, quarantine and warn park them by CRM id
    keyless = _unrejected_keyless(spec, staging, decision) if decision.load else None
    key_findings = keyless_findings(spec, keyless) if keyless is not None else []
    if key_findings:
        decision = with_keyless_rejected(spec, decision, keyless, key_findings, checked=report.row_count)
    findings = [*report.row_failures(), *key_findings]
    if decision.load and rejected_count(decision):
        decision = _refuse_unparkable(spec, findings, decision)
    # rows, not keys: a row without its key (an empty CRM property mapped to the key) is rejected too
    rejecting = decision.load and rejected_count(decision) > 0
    with staging.writer("rejected") as writer:  # replaced as a whole: a retried gate decides afresh
        if rejecting:
            _write_rejected(writer, decision)
    if rejecting and not dry_run:
        target.quarantine(spec, _quarantine_entries(spec, staging, findings, decision), run_id=run_id)
        crash_point("quality_gate.quarantined")
    recorded = (_record_defects(target, spec, staging, decision, run_id=run_id, dry_run=dry_run,
                                deletes_missing=deletes_missing)
                if decision.load else {})
    summary = {"checked": report.row_count, "rejected": rejected_count(decision), "passed": decision.load,
               "policy": quality.policy, "reason": decision.reason,
               "failed_expectations": [r.name for r in report.results if not r.success and not r.defect],
               "defects": defect_counts(report), **recorded, "dry_run": dry_run}
    return report, decision, summary


def rejected_count(decision) -> int:
    """Records the gate rejects: one per rejected key, plus each rejected row without a key (it
    is no key's, and a CRM record is mapped once per run, so each is a record of its own)."""
    keyless = 0 if decision.rejected is None else int(decision.rejected["key"].isna().sum())
    return len(decision.rejected_keys) + keyless


def _write_rejected(writer, decision) -> None:
    """rejected/ lists the rejected rows for the plan, the load and reconcile: by key, and a row
    without its key (key null, not the text "nan") by its CRM id."""
    import pyarrow as pa

    rejected = decision.rejected
    schema = pa.schema([("key", pa.string()), ("crm_id", pa.string()), ("reasons", pa.string())])
    writer.write(pa.table({"key": _texts(rejected["key"]), "crm_id": _texts(rejected["crm_id"]),
                           "reasons": rejected["reasons"].tolist()}, schema=schema))


def _texts(values: pd.Series) -> list[str | None]:
    """The values as :func:`key_text` makes them (``astype(str)`` makes a null "nan" or "None")."""
    return [key_text(value) for value in values]


def key_text(value: Any) -> str | None:
    """A key (or CRM id) as text, the way :func:`in_keys` reads a frame's: a whole number read
    back as a float (Parquet into pandas, an integer column of a part holding a null) is the
    integer, "1002" and not "1002.0"; a null is None."""
    if _missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _quarantine_entries(spec: SyncSpec, staging: RunStaging, findings: list, decision) -> list[dict[str, Any]]:
    """The quarantine table's entries: every finding (:class:`~conduit.quality.engine.RowFailure`)
    of a rejected row, with its raw record. A row without its key is entered by its CRM id
    (``record_key`` null)."""
    crm_ids = {key_text(c) for c in decision.rejected["crm_id"] if not _missing(c)}
    raw = _raw_records(spec, staging, crm_ids)
    keyless = _keyless_rejections(decision)
    return [{"record_key": key_text(f.key), "crm_id": key_text(f.crm_id), "expectation": f.expectation,
             "column_name": f.column, "reason": f.reason, "raw_record": raw.get(key_text(f.crm_id))}
            for f in findings if _of_rejected_row(f, decision.rejected_keys, keyless)]


KEY_MISSING_RULE = "target_key_not_null"
"""The quarantine's name for the finding "this row has no key": the ERP cannot hold it, whether
or not the suite checks the key (or its policy loads rows that break that check)."""


def _unrejected_keyless(spec: SyncSpec, staging: RunStaging, decision) -> pd.DataFrame:
    """The mapped rows without their key that ``decision`` does not reject (no not-null check on
    the key, a policy that loads rows breaking it, ``mostly``): columns key and crm_id, indexed by
    row position as the gate's report is (the parts in :meth:`RunStaging.read_frames` order). Reads
    the key column alone, in Arrow (a few ms per part; through pandas a million rows took ~1 s),
    and the CRM ids only of a part with a row without its key."""
    import numpy as np
    import pandas as pd

    from conduit.pipeline.staging import read_part

    key, with_crm_id = spec.target.key, "crm_id" in spec.mapping
    positions, crm_ids, offset = [], [], 0
    for path in staging.parts("mapped"):
        keys = read_part(path, [key]).column(0)
        if keys.null_count:
            at = np.flatnonzero(keys.is_null().to_numpy())
            positions.extend((at + offset).tolist())
            crm_ids += read_part(path, ["crm_id"]).column(0).take(at).to_pylist() if with_crm_id else [None] * len(at)
        offset += len(keys)
    found = pd.DataFrame({"key": None, "crm_id": crm_ids}, index=positions, dtype=object)
    rejected = decision.rejected.index if decision.rejected is not None else []
    return found[~found.index.isin(rejected)]


def keyless_findings(spec: SyncSpec, rows: pd.DataFrame) -> list:
    """One finding per row of ``rows`` (:func:`_unrejected_keyless`): its key is missing, with the
    reason a replay gives (``conduit.pipeline.replay.without_key``)."""
    from conduit.pipeline.replay import without_key
    from conduit.quality.engine import RowFailure

    key = spec.target.key
    reasons = without_key(spec, rows.rename(columns={"key": key}))
    return [RowFailure(None, crm_id, KEY_MISSING_RULE, key, reasons[position])
            for position, crm_id in enumerate(rows["crm_id"])]


def with_keyless_rejected(spec: SyncSpec, decision, rows: pd.DataFrame, findings: list, *, checked: int):
    """``decision`` (one that loads) given ``rows`` (:func:`_unrejected_keyless`, whose
    :func:`keyless_findings` are ``findings``), which the ERP cannot hold, as the spec's policy
    treats a rejected row: ``block`` stops the load; ``quarantine`` rejects them with the rest, held
    to ``max_rejected_ratio`` (a key mapping that lost every key fails the run, it does not park the
    whole CRM); ``warn`` rejects them whatever their number. Rejected, they are listed in rejected/
    by CRM id like every rejected row without its key, parked, and without defects of theirs."""
    from fractions import Fraction

    import pandas as pd

    from conduit.quality.engine import GateDecision

    quality, key = spec.quality, spec.target.key
    ids = ", ".join(str(c) for c in rows["crm_id"].head(10))
    what = f"{len(rows)} rows without their key ({key} null; CRM ids {ids})"
    if quality.policy == "block":
        return GateDecision(False, f"policy block: {what}; fill {key} in the CRM or fix its mapping",
                            decision.rejected, decision.rejected_keys)
    added = rows.assign(reasons=[f.reason for f in findings])
    rejected = added if decision.rejected is None else pd.concat([decision.rejected, added]).sort_index()
    if (quality.policy == "quarantine" and checked >= quality.rejected_ratio_min_rows
            and Fraction(len(rejected), checked) > Fraction(str(quality.max_rejected_ratio))):
        return GateDecision(False, f"policy quarantine: {len(rejected)} of {checked} rows rejected, {what}, "
                                   f"exceeds max_rejected_ratio {quality.max_rejected_ratio:.4%}",
                            rejected, decision.rejected_keys)
    defects = decision.defects
    if defects is not None:
        defects = defects[~defects.index.isin(rows.index)]
    reason = f"{decision.reason}; {what} rejected (the ERP cannot hold them): parked by CRM id"
    return GateDecision(True, reason, rejected, decision.rejected_keys, defects)


def _refuse_unparkable(spec: SyncSpec, findings: list, decision):
    """``decision``, or a failed one when rejected rows could not all be parked. The quarantine
    keeps one entry per run, record and finding (its unique index): a record is its key, or
    without one its CRM id. Two rejected rows with neither, breaking the same expectation, would
    share one entry, and the second would be lost, neither loaded nor quarantined. Better no load,
    no retry (the same rows fail the same way) than a record gone unnoticed."""
    from conduit.quality.engine import GateDecision

    clashes = _unidentified_clashes(findings, _keyless_rejections(decision))
    if not clashes:
        return decision
    key = spec.target.key
    described = "; ".join(f"{finding} ({count} rows)" for finding, count in clashes.items())
    return GateDecision(False, f"rows without their key ({key} null) and without a CRM id "
                               f"cannot all be quarantined, one entry per run, record and finding: {described}; "
                               f"nothing loaded, fix the mapping of {key} and crm_id and run again",
                        decision.rejected, decision.rejected_keys)


def _unidentified_clashes(findings: list, keyless: tuple[frozenset[str], bool]) -> dict[str, int]:
    """{finding: rows} of the findings that more than one rejected row with neither key nor CRM
    id breaks."""
    by_finding: dict[str, int] = {}
    for f in findings:
        if _missing(f.key) and _missing(f.crm_id) and _of_rejected_row(f, frozenset(), keyless):
            name = f"{f.expectation}({f.column})"
            by_finding[name] = by_finding.get(name, 0) + 1
    return {finding: count for finding, count in by_finding.items() if count > 1}


def _keyless_rejections(decision) -> tuple[frozenset[str], bool]:
    """(CRM ids of the rejected rows without a key, whether one of them has no CRM id either)."""
    keyless = decision.rejected[decision.rejected["key"].isna()]
    crm_ids = keyless["crm_id"]
    return frozenset(key_text(c) for c in crm_ids if not _missing(c)), bool(crm_ids.isna().any())


def _of_rejected_row(finding, rejected_keys: frozenset, keyless: tuple[frozenset[str], bool]) -> bool:
    """Whether a finding belongs to a rejected row: by its key, or, without one, by its CRM id."""
    if not _missing(finding.key):
        return finding.key in rejected_keys
    crm_ids, unidentified = keyless
    return unidentified if _missing(finding.crm_id) else key_text(finding.crm_id) in crm_ids


def _record_defects(target: ErpTarget, spec: SyncSpec, staging: RunStaging, decision, *,
                    run_id: str, dry_run: bool = False, deletes_missing: bool = False) -> dict[str, int]:
    """Open, touch and resolve defects (see ``conduit.quality.defects``); returns the counts."""
    from conduit.quality.defects import found_defects
    from conduit.targets.defects import record_defects

    key, kept_out = spec.target.key, {key_text(k) for k in decision.rejected_keys}
    # gone from the CRM for good (webhooks named them): the load deletes them, their defects are over
    learned = gone_records(target, spec, staging)
    gone = learned.keys
    # a gone record the window's lagging search still read: no defect of its row opens (a raw value)
    found = [d for d in found_defects(decision.defects) if d.record_key not in learned.read_keys]

    def clean_keys(open_keys: set[str]) -> set[str]:
        """The open defects' records that this run read and loads, or read archived, or learned
        are gone for good, or (when the load deletes what it did not read) did not read at all:
        the load deactivates or deletes those, so their defects are over."""
        lookup = key_lookup(open_keys)
        read = {key_text(k) for frame in staging.read_frames("mapped", [key])
                for k in frame[key][in_keys(frame[key], lookup)]}
        archived = {key_text(k) for frame in staging.read_frames("mapped_archived", [key])
                    for k in frame[key][in_keys(frame[key], lookup)]}
        # a read of nothing deletes nothing (the load refuses it): its defects stay open
        unread = open_keys - read - archived if deletes_missing and staging.count("mapped") else set()
        return (read - kept_out) | archived | unread | (open_keys & gone)

    changes = record_defects(target.state, spec, found, run_id=run_id,
                             clean_keys=clean_keys, dry_run=dry_run)
    return changes.counts()


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


def key_lookup(keys: Iterable[Any]) -> pa.Array:
    """Keys (as text) to look frames' key columns up in with :func:`in_keys`, built once."""
    import pyarrow as pa

    return pa.array([key_text(k) for k in keys], pa.string())


def in_keys(values: pd.Series, lookup: pa.Array) -> np.ndarray:
    """``values.astype(str).isin(keys)`` as a boolean array (a null is in no lookup). pandas'
    ``isin`` on Arrow-backed text rebuilds its lookup from the Python values on every call: 0.14 s
    per 10,000-row frame against 47,000 keys, 42 s of a million-row gate with that many open
    defects, where Arrow's ``is_in`` takes milliseconds."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = pa.array(values, from_pandas=True)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        array = pc.cast(array, pa.string())
    return pc.is_in(array, value_set=lookup).to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class Rejected:
    """What rejected/ lists: the rejected keys, and the rejected rows without a key, which only
    their CRM id tells apart (``unidentified``: one of those has no CRM id either)."""

    keys: frozenset[str] = frozenset()
    keyless_crm_ids: frozenset[str] = frozenset()
    unidentified: bool = False

    @property
    def lists_rows(self) -> bool:
        return bool(self.keys or self.keyless_crm_ids or self.unidentified)

    @property
    def records(self) -> int:
        """How many records: one per key, one per CRM id without a key (and one for rows with neither)."""
        return len(self.keys) + len(self.keyless_crm_ids) + int(self.unidentified)

    def lookups(self) -> tuple[pa.Array, pa.Array, bool]:
        """The arguments :func:`rejected_rows` takes after the frame and the key, built once."""
        return key_lookup(self.keys), key_lookup(self.keyless_crm_ids), self.unidentified


def read_rejected(staging: RunStaging) -> Rejected:
    if not staging.dir("rejected").is_dir():
        return Rejected()
    keys, crm_ids, unidentified = set(), set(), False
    for frame in staging.read_frames("rejected", ["key", "crm_id"]):
        keyless = frame["key"].isna()
        keys.update(frame["key"][~keyless].tolist())
        crm_ids.update(frame["crm_id"][keyless].dropna().tolist())
        unidentified |= bool(frame["crm_id"][keyless].isna().any())
    return Rejected(frozenset(keys), frozenset(crm_ids), unidentified)


def rejected_keys(staging: RunStaging) -> frozenset[str]:
    return read_rejected(staging).keys


def rejected_rows(frame: pd.DataFrame, key: str, keys: pa.Array, keyless_crm_ids: pa.Array,
                  unidentified: bool) -> np.ndarray:
    """The rows of ``frame`` that rejected/ lists (see :meth:`Rejected.lookups`): by key, and a
    row without its key by its CRM id. Leaving rows out by key alone let a keyless row through
    to the load, which the target refuses (a row without its key cannot load), failing the run."""
    import pandas as pd

    rows = in_keys(frame[key], keys)
    if len(keyless_crm_ids) or unidentified:
        crm_ids = frame["crm_id"] if "crm_id" in frame else pd.Series(None, index=frame.index, dtype=object)
        by_crm_id = in_keys(crm_ids, keyless_crm_ids) | (unidentified & crm_ids.isna().to_numpy())
        rows |= frame[key].isna().to_numpy() & by_crm_id
    return rows


def data_docs(spec: SyncSpec, staging: RunStaging, suite_path, out_dir, *, run_name: str):
    """GX's own validation of the staged rows (all when few, failing rows + a sample when many)
    and its Data Docs site, with the gate's field checks and its defect rules marked as such (their
    failing rows load; the page says how many). Slow to import, so it runs beside the gate, not in
    the load's path, and only when there is something to show (:func:`has_findings`): a run whose
    rows broke no expectation and no defect rule returns ``(report, None)`` without importing
    Great Expectations (~6 s and ~110 MiB of the task process at 1M rows, for a page of green
    ticks; the gate's XCom and the health page already say "all passed"). A run that mapped no
    rows returns ``(None, None)`` before importing anything (GX, pandas, the suite)."""
    if not staging.parts("mapped"):  # parts are only written with rows in them
        return None, None
    report = evaluate_suite(spec, staging, suite_path)
    if report.row_count == 0 or not has_findings(report):
        return report, None
    from conduit.quality.gx_runner import validate

    validation = validate(staging.read_frames("mapped"), report, out_dir=out_dir, run_name=run_name)
    return report, validation


def has_findings(report) -> bool:
    """Whether a gate report has something for Data Docs to show: an expectation that failed, or
    rows that broke one (rejected, tolerated by ``mostly``, or defects)."""
    return any(not r.success or r.unexpected_count for r in report.results)


def held_rows(target: ErpTarget, spec: SyncSpec, crm_ids: Iterable[str]) -> pd.DataFrame | None:
    """The ERP's active rows of these CRM records, found by the ERP's CRM id column (None when no
    id is asked for). A record rejected without its key (removed in the CRM after it loaded) has
    its last good version there, under its old key, as a quarantined record with a key has."""
    crm_ids = sorted(crm_ids)
    if not crm_ids:
        return None
    rows = target.fetch_rows_of_records(spec, crm_ids)
    return rows[rows["active"].astype(bool)]


def held_keys(target: ErpTarget, spec: SyncSpec, crm_ids: Iterable[str]) -> frozenset[str]:
    """The keys of :func:`held_rows`: rows a full refresh keeps and reconcile leaves alone."""
    rows = held_rows(target, spec, crm_ids)
    return frozenset() if rows is None else frozenset(key_text(k) for k in rows[spec.target.key])


def _unloaded_quarantine(target: ErpTarget, spec: SyncSpec) -> int:
    """Open quarantine entries whose record never reached the ERP (they explain a count gap). A
    record parked without its key counts once, by CRM id, unless the ERP holds its last good
    version (:func:`held_rows`)."""
    from conduit.targets.base import CRM_ID

    entries = target.open_quarantine(spec)
    keys = {str(e["record_key"]) for e in entries if e.get("record_key") is not None}
    keyless = {e.get("crm_id") or f"entry {e['id']}" for e in entries if e.get("record_key") is None}
    held = held_rows(target, spec, {e["crm_id"] for e in entries if e.get("record_key") is None and e.get("crm_id")})
    if held is not None:
        keyless -= {key_text(c) for c in held[CRM_ID]}
    if not keys:
        return len(keyless)
    stored = target.fetch_rows(spec, keys=sorted(keys))
    return len(keys) - int(stored["active"].astype(bool).sum()) + len(keyless)


def _late_missing(source: CrmSource, target: ErpTarget, spec: SyncSpec, upper_ms: int) -> int:
    """Records created before the run's upper bound but modified after it: this run could not read
    them, so the ERP may legitimately miss the ones it has never seen."""
    from conduit.transforms.mapping import map_frame

    created = source.modified_since_created_before(upper_ms)
    if not created:
        return 0
    raw = records_to_table(created, source.raw_properties()).to_pandas()
    mapped = map_frame(raw, spec)[spec.target.key]
    # a record without its key cannot be in the ERP: missing, and not something to look up
    keys = [key_text(k) for k in mapped.dropna()]
    stored = target.fetch_rows(spec, keys=keys) if keys else None
    return len(mapped) - (int(stored["active"].astype(bool).sum()) if stored is not None and len(stored) else 0)


def _staged_mismatches(target: ErpTarget, spec: SyncSpec, staging: RunStaging) -> tuple[int, list[str]]:
    """Every accepted staged row must be in the ERP, active, as loaded or newer."""
    import pandas as pd

    key = spec.target.key
    skip = key_lookup(_skipped_keys(target, spec, staging))
    checked, bad = 0, []
    columns = [key, "row_hash", "source_modified_at"]
    for frame in newest_per_key(lambda: staging.read_frames("mapped", columns), key, LOAD_ORDER):
        frame = frame[loaded_rows(frame, key, skip)]
        if frame.empty:
            continue
        stored = target.fetch_rows(spec, keys=frame[key].tolist())[[key, "row_hash", "source_modified_at", "active"]]
        joined = frame.merge(stored, on=key, how="left", suffixes=("", "_erp"))
        newer = pd.to_datetime(joined["source_modified_at_erp"], utc=True) > joined["source_modified_at"]
        wrong = (joined["row_hash_erp"].isna() | ~joined["active"].fillna(False).astype(bool)
                 | ((joined["row_hash"] != joined["row_hash_erp"]) & ~newer))
        checked += len(frame)
        bad += joined.loc[wrong, key].astype(str).tolist()
    return checked, bad


LOAD_ORDER = ["source_modified_at", "row_hash"]
"""Of several staged rows of one key, the target keeps the greatest by these (a tie in time goes to
the greater hash: ``sql_render``, ``tryton.newest_rows``); reconcile expects the same row."""


def newest_per_key(read: Callable[[], Iterable[pd.DataFrame]], key: str, order: list[str]) -> Iterator[pd.DataFrame]:
    """The frames ``read()`` yields, holding only the row with the greatest ``order`` of each key
    across all of them, whatever order they were read in. Reads twice; memory is 8 bytes per row (a
    hash of the key) plus the rows whose key hash repeats, held back and yielded last, deduplicated."""
    import numpy as np
    import pandas as pd

    from conduit.pipeline.dedup import hash_values, repeated_hashes

    hashes = [hash_values(f[key]) for f in read()]
    repeated = repeated_hashes(hashes)
    held = []
    for frame, hashed in zip(read(), hashes, strict=True):
        clash = np.isin(hashed, repeated)
        held.append(frame[clash])
        yield frame[~clash]
    if repeated.size:
        yield pd.concat(held).sort_values(order, kind="stable").drop_duplicates(key, keep="last")


def staged_key_checksum(spec: SyncSpec, staging: RunStaging, skip: frozenset[str]) -> KeyChecksum:
    """:class:`KeyChecksum` of the staged rows the load applied: one per key, the newest, minus
    ``skip`` (rejected and archived keys)."""
    from conduit.targets.base import KeyChecksum, frame_key_checksum

    key, total, lookup = spec.target.key, KeyChecksum(), key_lookup(skip)
    columns = [key, "row_hash", "source_modified_at"]
    for frame in newest_per_key(lambda: staging.read_frames("mapped", columns), key, LOAD_ORDER):
        total += frame_key_checksum(_integer_keys(spec, frame[loaded_rows(frame, key, lookup)]), key)
    return total


def _integer_keys(spec: SyncSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with an integer key as integers again (nullable). Parquet read into pandas makes
    an integer column holding a null floats: a part with a row without its key gives 1001.0, which
    reads as "1001.0", not as the ERP's key 1001 (in rejected keys, quarantine entries, defects
    and the staged key checksum)."""
    key = spec.target.key
    field = spec.mapping.get(key)
    if field is None or field.dtype != "integer" or frame[key].dtype.kind != "f":
        return frame
    return frame.assign(**{key: frame[key].astype("Int64")})


def loaded_rows(frame: pd.DataFrame, key: str, skip: pa.Array) -> np.ndarray:
    """The staged rows a load that committed applied: not skipped, and with a key. A row without
    its key never loads (the target refuses it, so a committed load did not carry one: the gate
    rejected it), so reconcile has nothing of it to check in the ERP."""
    return ~in_keys(frame[key], skip) & frame[key].notna().to_numpy()


def _skipped_keys(target: ErpTarget, spec: SyncSpec, staging: RunStaging) -> frozenset[str]:
    """Keys the load did not upsert, or upserted and deleted: rejected by the gate, archived in the
    CRM, gone from it for good (:func:`gone_record_ids`), or held in the ERP for a record the gate
    rejected without its key (:func:`held_keys`)."""
    key, rejected = spec.target.key, read_rejected(staging)
    archived = {k for f in staging.read_frames("mapped_archived", [key]) for k in f[key]}
    # gone for good, yet read by the window's search (its index lags behind an erasure): loaded,
    # then deleted in the same transaction
    gone = gone_record_ids(staging)
    gone_keys = _staged_keys_of_records(spec, staging, gone) if gone else set()
    return rejected.keys | archived | gone_keys | held_keys(target, spec, rejected.keyless_crm_ids)


def _key_checksums(target: ErpTarget, spec: SyncSpec, staging: RunStaging, skip: frozenset[str]):
    """(staged, ERP) key checksums after a full read. ERP rows of skipped keys stay out: a
    quarantined record keeps its last good version in the ERP."""
    from conduit.targets.base import frame_key_checksum

    left_alone = target.fetch_rows(spec, keys=sorted(skip)) if skip else None
    erp = target.key_checksum(spec)
    if left_alone is not None and len(left_alone):
        erp -= frame_key_checksum(left_alone[left_alone["active"].astype(bool)], spec.target.key)
    return staged_key_checksum(spec, staging, skip), erp


def reconcile(source: CrmSource, target: ErpTarget, spec: SyncSpec, staging: RunStaging, *,
              upper_ms: int, full_read: bool = False) -> dict[str, Any]:
    """Staged rows vs the ERP, then CRM vs ERP counts as of the run's upper bound.

    After a full read the ERP's active rows must be exactly the staged ones: their key checksums
    (count and digest sum of key + row hash) are compared, and row by row only when they differ.
    Raises ``ReconciliationError`` when the ERP lacks rows it should have (a row deleted behind
    the sync's back, a lost update) or, after a full read, holds active rows the CRM no longer
    has; after an incremental read such extra rows are reported for the full read to repair."""
    from conduit.exceptions import ReconciliationError

    checksums: dict[str, Any] = {}
    if full_read:
        skip = _skipped_keys(target, spec, staging)
        staged_sum, erp_sum = _key_checksums(target, spec, staging, skip)
        checksums = {"key_checksum_staged": str(staged_sum), "key_checksum_erp": str(erp_sum),
                     "key_checksum_match": staged_sum == erp_sum}
    if checksums.get("key_checksum_match"):
        checked, bad = staged_sum.count, []  # equal sums: every row is there, as staged
    else:
        checked, bad = _staged_mismatches(target, spec, staging)
    if full_read and not bad and erp_sum.count != staged_sum.count:
        raise ReconciliationError(
            f"after a full read the ERP holds {erp_sum.count} active customers outside quarantine but the run "
            f"staged {staged_sum.count}: {erp_sum.count - staged_sum.count} written behind the sync's back or "
            f"not deleted; trigger the DAG with full_refresh to repair. {checksums}")
    crm = source.count_created_before(upper_ms)
    erp = target.count(spec)
    quarantined = _unloaded_quarantine(target, spec)
    late = _late_missing(source, target, spec, upper_ms) if erp + quarantined < crm else 0
    expected = crm - quarantined - late
    summary = {"staged_checked": checked, "staged_mismatched": len(bad), "crm_live": crm, "erp_active": erp,
               "quarantined_unloaded": quarantined, "modified_after_window": late,
               "missing_in_erp": max(expected - erp, 0), "extra_in_erp": max(erp - expected, 0), **checksums}
    if bad:
        raise ReconciliationError(
            f"{len(bad)} of {checked} loaded rows differ in the ERP ({spec.target.key}: {', '.join(bad[:10])}): {summary}")
    if erp < expected:
        raise ReconciliationError(
            f"the ERP holds {erp} active customers but the CRM has {crm} created before the run "
            f"({quarantined} quarantined, {late} modified after the window): {expected - erp} missing; "
            f"trigger the DAG with full_refresh to repair. {summary}")
    return summary
