"""Quarantine replay: once the CRM data or the mapping is fixed, the records behind a sync's open
quarantine entries are re-read from the CRM by id, re-mapped with the current spec, re-validated
with its suite, and the ones that now pass are loaded.

Exactly once: the load and the marking of the replayed entries (``replayed_at``,
``replayed_by_run``) are one ERP transaction (``ErpTarget.load(..., replayed_quarantine_ids=...)``),
so a retried or rerun replay finds those entries closed and replays nothing twice. The sync's
watermark does not move. As at the sync's gate, the defects of the rows that load (values an
``on_invalid: null`` transform loads empty) are recorded in conduit_defects before the load. Records that still fail, are archived or gone from the CRM, or cannot be
identified stay in the quarantine, and the summary says why, by record id.

A replay judges records one by one: a record loads only if it breaks no critical expectation of
the suite nor a field check of the mapping (``on_invalid: reject``), as at the sync's gate
(``mostly`` does not tolerate single rows here), duplicated keys among the replayed
records keep those records out, and row-count expectations, which judge the volume of a sync run,
do not apply.

Never under a sync run's feet: a sync run plans its load against the ERP and, when the plan needs
approval, loads exactly that plan or nothing (``StalePlanError``). A replay committing into the
table between a run's plan and its load would make that run fail, so a replay that finds a run of
its sync in flight (``runs_in_flight``, asked before anything is read and again just before the
first write) replays nothing and fails naming the run (:class:`~conduit.exceptions.SyncRunInFlight`,
not retried): replay again after it ends. A dry run commits nothing and is not refused. The other
way round, a run that starts after that last check plans after the replay has committed: on a SQL
target its plan takes the load lock the replay's load holds, and it reaches its plan only through
plan_extract, extract, transform and the gate, tasks that take far longer than the replay's step
from the check to its load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from conduit.crash import crash_point
from conduit.pipeline.steps import key_text, raw_properties, records_to_table

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from conduit.quality.suite import Suite
    from conduit.sources.base import CrmSource
    from conduit.specs.model import SyncSpec
    from conduit.targets.base import ErpTarget

log = logging.getLogger(__name__)

SUMMARY_IDS = 20
"""Record ids listed per category in the task's (XCom) summary; the log lists all."""


def select_spec(specs: Iterable[SyncSpec], name: str) -> SyncSpec:
    """The spec called ``name``; an unknown name fails naming the known ones."""
    from conduit.exceptions import SpecError

    specs = list(specs)
    for spec in specs:
        if spec.name == name:
            return spec
    raise SpecError("(params)", [("sync", f"no sync spec is named {name!r}; known: {sorted(s.name for s in specs)}")])


def crm_id_of(entry: dict[str, Any]) -> str | None:
    """The CRM record id of a quarantine entry: its ``crm_id``, else the ``id`` of the stored raw
    record; None when neither is a record id."""
    for candidate in (entry.get("crm_id"), (entry.get("raw_record") or {}).get("id")):
        text = str(candidate).strip() if candidate is not None else ""
        if text.isdigit():
            return text
    return None


def group_entries(entries: Iterable[dict[str, Any]]) -> tuple[dict[str, list[int]], list[int]]:
    """Open entries as {CRM id: [entry ids]} (one record may have several findings, from several
    runs), in first-seen order, and the ids of entries naming no CRM record."""
    by_record: dict[str, list[int]] = {}
    unidentified: list[int] = []
    for entry in entries:
        crm_id = crm_id_of(entry)
        if crm_id is None:
            unidentified.append(int(entry["id"]))
        else:
            by_record.setdefault(crm_id, []).append(int(entry["id"]))
    return by_record, unidentified


def read_records(source: CrmSource, crm_ids: list[str]) -> tuple[list[dict], list[str]]:
    """The live CRM records of ``crm_ids``, and the ids the CRM did not return (archived, deleted
    or never there)."""
    records = {str(record["id"]): record for record in source.read_records(crm_ids)}
    return [records[i] for i in crm_ids if i in records], [i for i in crm_ids if i not in records]


def gate_suite(spec: SyncSpec, suite_path: Path) -> Suite:
    """What the sync's gate judges with: the suite plus the field checks of the spec's mapping
    (``on_invalid: reject`` keeps a record out through these, and no expectation of the suite
    need see it: a damaged value the transform cleaned, say)."""
    from conduit.quality.defects import field_checks
    from conduit.quality.suite import load_suite

    return load_suite(suite_path).with_field_checks(field_checks(spec))


def revalidate(frame: pd.DataFrame, suite: Suite, key: str) -> dict[int, list[str]]:
    """{row position: reasons} of the rows of ``frame`` that break a critical expectation of the
    suite (every breaking row, whether or not ``mostly`` lets the expectation pass; for
    uniqueness, every row of a duplicated value). Row-count expectations are not per row."""
    from conduit.quality.engine import evaluate

    failures: dict[int, list[str]] = {}
    for result in evaluate(frame, suite, key=key).results:
        if result.failing_rows is None or not result.expectation.blocking:
            continue
        for position, failure in zip(result.failing_rows.index, result.row_failures(), strict=True):
            failures.setdefault(int(position), []).append(f"{result.name}: {failure.reason}")
    return failures


def found_defects_of(rows: pd.DataFrame, suite: Suite, key: str) -> list:
    """The defects (:class:`~conduit.quality.defects.Defect`) of rows that load, as the sync's
    gate finds them: what the defect-level expectations and field checks flag (a junk phone an
    ``on_invalid: null`` transform loads empty, say)."""
    from conduit.quality.defects import found_defects
    from conduit.quality.engine import defect_rows, evaluate

    return found_defects(defect_rows(evaluate(rows, suite, key=key))) if len(rows) else []


def without_key(spec: SyncSpec, mapped: pd.DataFrame) -> dict[int, str]:
    """{row position: reason} of the rows mapped without their key, whatever the suite says: the
    ERP refuses such a row, and one in the load would fail the whole replay, every record with it."""
    key = spec.target.key
    source = spec.mapping[key].source
    fill = f"fill CRM property {source!r}" if source else f"fix the mapping of {key!r}"
    missing = mapped[key].isna().to_numpy().nonzero()[0]
    return {int(position): f"target key {key} is null after mapping: the ERP cannot hold a record without "
                           f"its key ({fill})" for position in missing}


def plan(spec: SyncSpec, records: list[dict], suite: Suite | None) -> tuple[pd.DataFrame, list[str], dict[str, list[str]]]:
    """Map the re-read records with the spec and re-validate them: (rows that pass, their CRM
    ids, {CRM id: reasons} of those that still fail)."""
    from conduit.transforms.mapping import map_frame

    raw = records_to_table(records, raw_properties(spec)).to_pandas()
    mapped = map_frame(raw, spec)
    failures = revalidate(mapped, suite, spec.target.key) if suite is not None else {}
    for position, reason in without_key(spec, mapped).items():
        failures.setdefault(position, []).append(reason)
    crm_ids = raw["id"].astype(str).tolist()
    passing = [i for i in range(len(mapped)) if i not in failures]
    still_failing = {crm_ids[i]: reasons for i, reasons in sorted(failures.items())}
    return mapped.iloc[passing].reset_index(drop=True), [crm_ids[i] for i in passing], still_failing


def record_replay_defects(target: ErpTarget, spec: SyncSpec, rows: pd.DataFrame, suite: Suite, *, run_id: str,
                          dry_run: bool = False) -> dict[str, int]:
    """Open, see again and resolve the defects of the rows the replay loads (only theirs: a replay
    reads no other record); returns the counts."""
    from conduit.targets.defects import record_defects

    key = spec.target.key
    loaded = {key_text(k) for k in rows[key]}
    changes = record_defects(target.state, spec, found_defects_of(rows, suite, key), run_id=run_id,
                             clean_keys=lambda open_keys: open_keys & loaded, dry_run=dry_run)
    return changes.counts()


def refuse_while_in_flight(spec: SyncSpec, runs_in_flight: Callable[[], list[str]] | None) -> None:
    """Raise :class:`~conduit.exceptions.SyncRunInFlight` naming the sync's runs in flight, if any
    (``runs_in_flight`` lists them: run ids, or a description when their ids are unknown)."""
    from conduit.exceptions import SyncRunInFlight

    runs = runs_in_flight() if runs_in_flight is not None else []
    if runs:
        named = ", ".join(runs)
        raise SyncRunInFlight(
            f"{spec.name} has a run in flight ({named}): a replay committing into "
            f"{'.'.join(spec.target.location)} now would move the ERP under that run's plan, and its "
            f"load would refuse an approved plan as stale. Nothing was replayed and this replay is not "
            f"retried: trigger it again after {named} has ended.")


def replay(source: CrmSource, target: ErpTarget, spec: SyncSpec, suite_path: Path | None, *, run_id: str,
           dry_run: bool = False, logger: logging.Logger = log,
           runs_in_flight: Callable[[], list[str]] | None = None) -> dict[str, Any]:
    """Replay the spec's open quarantine entries (see the module's docstring); returns a small,
    JSON-able summary. ``runs_in_flight`` lists the sync's runs in flight: with any, a replay that
    would commit refuses (``SyncRunInFlight``) before reading and again before its first write."""
    from conduit.targets.base import LoadResult

    guard = None if dry_run else runs_in_flight
    refuse_while_in_flight(spec, guard)
    target.ensure_ready(spec)
    entries = target.open_quarantine(spec)
    by_record, unidentified = group_entries(entries)
    logger.info("%s: %d open quarantine entries on %d CRM records", spec.name, len(entries), len(by_record))
    records, not_in_crm = read_records(source, list(by_record)) if by_record else ([], [])

    still_failing: dict[str, list[str]] = {}
    replayed: list[str] = []
    result = LoadResult()
    recorded: dict[str, int] = {}
    if records:
        suite = gate_suite(spec, suite_path) if spec.quality and suite_path is not None else None
        rows, replayed, still_failing = plan(spec, records, suite)
        entry_ids = sorted(e for crm_id in replayed for e in by_record[crm_id])
        if entry_ids:
            # as late as can be: a sync run started while the CRM was read must not see this commit
            refuse_while_in_flight(spec, guard)
        if entry_ids and suite is not None:
            # as the gate does before the sync's load: a replayed record is not read again by a
            # later incremental sync unless it changes, so its defects would go unrecorded
            recorded = record_replay_defects(target, spec, rows, suite, run_id=run_id, dry_run=dry_run)
        if entry_ids:
            crash_point("replay.before_load")
            # watermark None: the sync's incremental cursor is the sync's business, not the replay's
            result = target.load(spec, [rows], run_id=run_id, watermark=None, dry_run=dry_run,
                                 replayed_quarantine_ids=entry_ids)
            crash_point("replay.after_load")

    for crm_id in not_in_crm:
        logger.warning("not replayed: CRM %s record %s is archived or deleted (entries %s stay open)",
                       spec.source.object, crm_id, by_record[crm_id])
    for crm_id, reasons in still_failing.items():
        logger.warning("not replayed: CRM record %s still fails: %s (entries %s stay open)",
                       crm_id, "; ".join(reasons), by_record[crm_id])
    if unidentified:
        logger.warning("not replayed: quarantine entries %s name no CRM record id", unidentified)

    summary = {
        "sync": spec.name,
        "dry_run": dry_run,
        "open_entries": len(entries),
        "records": len(by_record),
        "replayed_records": len(replayed),
        "replayed_entries": sum(len(by_record[c]) for c in replayed),
        "still_failing": len(still_failing),
        "not_in_crm": len(not_in_crm),
        "unidentified_entries": len(unidentified),
        **asdict(result),
        **recorded,
        "replayed_ids": replayed[:SUMMARY_IDS],
        "still_failing_ids": {c: r for c, r in list(still_failing.items())[:SUMMARY_IDS]},
        "not_in_crm_ids": not_in_crm[:SUMMARY_IDS],
        "unidentified_entry_ids": unidentified[:SUMMARY_IDS],
    }
    logger.info("replayed %s", {k: v for k, v in summary.items() if not k.endswith("_ids")})
    return summary
