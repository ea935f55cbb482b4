"""What the health view shows, computed from plain data: no Airflow, no database, no clock.

The inputs are what the runs already record (each task's returned summary, the plan, task states),
the sync's state store (its watermark and open quarantine entries) and the spec. Everything here is
a pure function of them (``now`` is an argument), so the rules are unit-tested without Airflow.

The verdict, most urgent first:

==========================  ===========================================================
waiting for approval        a run's plan waits for a person (``approve_plan``),
                            also with newer runs queued behind it
failing                     the latest finished run failed (which tasks; a rejected plan)
stale                       nothing loaded yet, or the watermark is older than the last
                            scheduled run should have made it (cron time minus the
                            cursor's lag, once a grace period for the run has passed)
healthy                     otherwise
==========================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

HEALTHY, STALE, FAILING, WAITING = "healthy", "stale", "failing", "waiting for approval"
VERDICTS = (HEALTHY, STALE, FAILING, WAITING)
FINISHED = frozenset({"success", "failed"})
RUNNING = "running"
FAILED_TASK_STATES = frozenset({"failed", "upstream_failed"})
AWAITING_INPUT = "awaiting_input"
APPROVAL_TASK = "approve_plan"
REJECTED_TASK = "plan_rejected"
COUNT_NAMES = ("extracted", "inserted", "updated", "unchanged", "deleted", "rejected", "defects")
DEFAULT_GRACE = timedelta(hours=1)
SAMPLES = 5


@dataclass(frozen=True)
class RunRecord:
    """One DAG run as the metadata database records it. ``summaries`` maps a task id to its
    returned summary (a mapped task's to the list of its map indexes' summaries); ``task_states``
    holds the states of the tasks that matter to the verdict (failed ones, the approval)."""

    run_id: str
    state: str | None
    run_type: str
    run_after: datetime
    start_date: datetime | None = None
    end_date: datetime | None = None
    summaries: Mapping[str, Any] = field(default_factory=dict)
    plan: Mapping[str, Any] | None = None
    task_states: Mapping[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def duration_s(self) -> float | None:
        if self.start_date is None or self.end_date is None:
            return None
        return round((self.end_date - self.start_date).total_seconds(), 3)


@dataclass(frozen=True)
class Freshness:
    age_s: float | None
    """Now minus the watermark (None before the first load)."""
    expected_since: datetime
    """The watermark should be at least this new (the last cron time the data is due for)."""
    stale: bool

    @property
    def never_loaded(self) -> bool:
        return self.age_s is None


@dataclass(frozen=True)
class Verdict:
    status: str
    reason: str


# --- counts ---------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[dict]:
    if value is None:
        return []
    return [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, dict)]


def defect_total(gate: Mapping[str, Any] | None) -> int | None:
    if not gate or not isinstance(gate.get("defects"), Mapping):
        return None
    return sum(int(d.get("count", 0)) for d in gate["defects"].values() if isinstance(d, Mapping))


def run_counts(summaries: Mapping[str, Any]) -> dict[str, int | None]:
    """The run's counts as its tasks reported them; None where the task did not report (did not
    run, or failed). ``extracted`` counts distinct records mapped (the transform's ``mapped``), else
    what the extract items read (archived listings apart)."""
    load = summaries.get("load") if isinstance(summaries.get("load"), Mapping) else {}
    gate = summaries.get("quality_gate") if isinstance(summaries.get("quality_gate"), Mapping) else {}
    transform = summaries.get("transform") if isinstance(summaries.get("transform"), Mapping) else {}
    items = _as_list(summaries.get("extract"))
    extracted = transform.get("mapped")
    if extracted is None and items:
        extracted = sum(int(i.get("rows", 0)) for i in items if i.get("kind") != "archived")
    counts = {"extracted": extracted, "rejected": gate.get("rejected"), "defects": defect_total(gate),
              "archived": transform.get("mapped_archived")}
    for name in ("inserted", "updated", "unchanged", "deleted", "stale_skipped"):
        counts[name] = load.get(name)
    if load.get("refused"):  # the target refused them at the load (Tryton's own checks): quarantined too
        counts["rejected"] = (counts["rejected"] or 0) + int(load["refused"])
    counts["dry_run"] = load.get("dry_run")
    return counts


def changed_rows(counts: Mapping[str, Any]) -> int | None:
    parts = [counts.get(n) for n in ("inserted", "updated", "deleted")]
    return None if all(p is None for p in parts) else sum(p or 0 for p in parts)


# --- freshness and the verdict --------------------------------------------------------------------


def last_cron_time(cron: str, timezone: str, at: datetime) -> datetime:
    """The latest time at or before ``at`` the cron expression fires, in UTC."""
    from croniter import croniter  # Airflow's own dependency, as the spec's cron validator uses

    local = at.astimezone(ZoneInfo(timezone))
    candidate = croniter(cron, local + timedelta(seconds=1)).get_prev(datetime)
    if candidate > local:  # a cron time within the second after ``at``
        candidate = croniter(cron, local).get_prev(datetime)
    return candidate.astimezone(UTC)


def next_cron_time(cron: str, timezone: str, after: datetime) -> datetime:
    from croniter import croniter

    return croniter(cron, after.astimezone(ZoneInfo(timezone))).get_next(datetime).astimezone(UTC)


def cron_interval(cron: str, timezone: str, at: datetime) -> timedelta:
    """The time between the two cron times around ``at`` (a day for a nightly schedule)."""
    previous = last_cron_time(cron, timezone, at)
    return next_cron_time(cron, timezone, previous) - previous


def freshness(watermark_ms: int | None, *, cron: str, timezone: str, lag_seconds: int, now: datetime,
              grace: timedelta = DEFAULT_GRACE) -> Freshness:
    """How old the ERP's data is against what the schedule promises. A scheduled run at cron time
    T reads up to T minus the cursor's lag; it may take ``grace`` (at most half the schedule's
    interval) to finish. So at ``now`` the watermark is due to be at least the cron time last
    reached before ``now - grace``, minus the lag; older is stale."""
    grace = min(grace, cron_interval(cron, timezone, now) / 2)
    due = last_cron_time(cron, timezone, now - grace) - timedelta(seconds=lag_seconds)
    if watermark_ms is None:
        return Freshness(None, due, True)
    watermark = datetime.fromtimestamp(watermark_ms / 1000, UTC)
    return Freshness(max((now - watermark).total_seconds(), 0.0), due, watermark < due)


def describe_age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{int(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "?"


def latest_finished(runs: Sequence[RunRecord]) -> RunRecord | None:
    """``runs`` newest first."""
    return next((r for r in runs if r.finished), None)


def failed_tasks(run: RunRecord) -> list[str]:
    return sorted(t for t, s in run.task_states.items() if s in FAILED_TASK_STATES)


def waiting_for_approval(runs: Sequence[RunRecord]) -> RunRecord | None:
    """The unfinished run whose plan waits for a person, if any: not necessarily the newest run,
    as runs triggered meanwhile (by hand, by webhooks) queue behind it."""
    return next((r for r in runs if not r.finished and r.task_states.get(APPROVAL_TASK) == AWAITING_INPUT), None)


def running_run(runs: Sequence[RunRecord]) -> RunRecord | None:
    """The run that executes now. Not necessarily the newest unfinished one: a sync runs one run
    at a time, so runs triggered meanwhile (by hand, by webhooks) queue behind it, newer and not
    started."""
    return next((r for r in runs if r.state == RUNNING), None)


def in_progress_note(runs: Sequence[RunRecord]) -> str:
    """The verdict's note on an unfinished run (``runs`` newest first): since when the running run
    runs (its start, not a queued run's time), else that a run waits to start."""
    if running := running_run(runs):
        return f"; a run is in progress since {_when(running.start_date or running.run_after)}"
    if queued := next((r for r in runs if not r.finished), None):
        return f"; a run is queued (due {_when(queued.run_after)})"
    return ""


def verdict(runs: Sequence[RunRecord], fresh: Freshness, *, paused: bool = False, cron: str = "",
            state_error: str | None = None) -> Verdict:
    """The sync's health from its runs (newest first) and its data's freshness; see the module
    docstring for the rules. The reason says why, in one sentence a person can act on. With
    ``state_error`` (the state store could not be read) freshness is unknown: failing, unless the
    runs already say worse."""
    if waiting := waiting_for_approval(runs):
        return Verdict(WAITING, f"run {waiting.run_id}: the plan waits for a person's approval "
                                f"(Required Actions); nothing loads until then")
    last = latest_finished(runs)
    if last and last.state == "failed":
        tasks = failed_tasks(last)
        if last.task_states.get(REJECTED_TASK) in FAILED_TASK_STATES:
            why = "the plan was rejected (or not approved in time); nothing was loaded"
        elif "quality_gate" in tasks:
            why = "the quality gate failed; nothing was loaded"
        else:
            why = f"failed task{'s' if len(tasks) != 1 else ''}: {', '.join(tasks)}" if tasks else "the run failed"
        return Verdict(FAILING, f"last run {last.run_id} failed at {_when(last.end_date)}: {why}")
    running = in_progress_note(runs)
    paused_note = " (the DAG is paused)" if paused else ""
    if state_error:
        return Verdict(FAILING, f"the state store could not be read ({state_error}): how fresh the data is "
                                f"is unknown{running}")
    if fresh.never_loaded:
        return Verdict(STALE, f"nothing loaded yet: no watermark in the state store{paused_note}{running}")
    if fresh.stale:
        schedule = f" by the schedule {cron}" if cron else ""
        return Verdict(STALE, f"data is {describe_age(fresh.age_s)} old: due{schedule} is data up to "
                              f"{_when(fresh.expected_since)}{paused_note}{running}")
    done = f"last run {last.run_id} succeeded at {_when(last.end_date)}; " if last else ""
    return Verdict(HEALTHY, f"{done}data is {describe_age(fresh.age_s)} old{running}")


# --- the overview -----------------------------------------------------------------------------------


def overview_row(*, name: str, cron: str, timezone: str, lag_seconds: int, target_type: str,
                 runs: Sequence[RunRecord], watermark_ms: int | None, quarantine_open: int | None,
                 next_run: datetime | None, paused: bool, now: datetime,
                 state_error: str | None = None, grace: timedelta = DEFAULT_GRACE) -> dict[str, Any]:
    """One sync's line of the overview (JSON-able). ``runs`` newest first; ``counts`` are the
    latest finished run's, ``recent`` has each finished run's of ``runs``."""
    fresh = freshness(watermark_ms, cron=cron, timezone=timezone, lag_seconds=lag_seconds, now=now, grace=grace)
    health = verdict(runs, fresh, paused=paused, cron=cron, state_error=state_error)
    latest, last = (runs[0] if runs else None), latest_finished(runs)
    return {
        "name": name,
        "target_type": target_type,
        "schedule": {"cron": cron, "timezone": timezone},
        "paused": paused,
        "last_run": _run_brief(latest),
        "last_finished_run": _run_brief(last),
        "next_run": _iso(next_run),
        "freshness": {"watermark": _iso(datetime.fromtimestamp(watermark_ms / 1000, UTC)) if watermark_ms else None,
                      "age_s": fresh.age_s, "age": describe_age(fresh.age_s),
                      "expected_since": _iso(fresh.expected_since), "stale": fresh.stale},
        "counts": _counts(last) if last else None,
        "recent": [{**_run_brief(r), "counts": _counts(r)} for r in runs if r.finished],
        "quarantine_open": quarantine_open,
        "verdict": health.status,
        "reason": health.reason,
    }


def _counts(run: RunRecord) -> dict[str, int | None]:
    return {n: c for n, c in run_counts(run.summaries).items() if n in COUNT_NAMES}


def _run_brief(run: RunRecord | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {"run_id": run.run_id, "state": run.state, "run_type": run.run_type, "run_after": _iso(run.run_after),
            "start_date": _iso(run.start_date), "end_date": _iso(run.end_date), "duration_s": run.duration_s}


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def verdict_order(status: str) -> int:
    """Most urgent first: failing, waiting, stale, healthy."""
    return {FAILING: 0, WAITING: 1, STALE: 2, HEALTHY: 3}.get(status, 4)


def most_urgent_first(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Overview rows in the order an operator acts on them: by verdict, then by name (a stable
    order, so that paging through them neither skips nor repeats a sync)."""
    return sorted(rows, key=lambda row: (verdict_order(row["verdict"]), row["name"]))


def verdict_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many syncs have each verdict; of all the rows given (every sync, not a page of them)."""
    statuses = [row["verdict"] for row in rows]
    return {status: statuses.count(status) for status in VERDICTS}


# --- one sync: runs, charts, the gate, the quarantine, lineage -----------------------------------


def run_rows(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """The runs table, newest first."""
    return [{**_run_brief(r), "counts": run_counts(r.summaries),
             "failed_tasks": failed_tasks(r), "data_docs": bool((r.summaries.get("data_docs") or {}).get("data_docs"))
             if isinstance(r.summaries.get("data_docs"), Mapping) else False}
            for r in runs]


def loaded_counts(counts: Mapping[str, Any]) -> dict[str, Any]:
    """The load's counts as rows the ERP really changed: a dry run's say what a real load would
    change, and it rolled them back, so none of them happened."""
    if not counts.get("dry_run"):
        return dict(counts)
    return {**counts, **{name: None for name in ("inserted", "updated", "unchanged", "deleted", "stale_skipped")}}


def chart_series(runs: Sequence[RunRecord]) -> dict[str, list]:
    """Oldest first, one point per finished run: x (run start, unix seconds), the load's counts
    (None when nothing was loaded: no load, or a dry run's, which was rolled back) and the run's
    duration in seconds."""
    finished = sorted((r for r in runs if r.finished), key=lambda r: (r.start_date or r.run_after))
    series: dict[str, list] = {"x": [], "run_id": [], "state": [], "inserted": [], "updated": [], "deleted": [],
                               "unchanged": [], "duration_s": []}
    for run in finished:
        counts = loaded_counts(run_counts(run.summaries))
        series["x"].append(int((run.start_date or run.run_after).timestamp()))
        series["run_id"].append(run.run_id)
        series["state"].append(run.state)
        for name in ("inserted", "updated", "deleted", "unchanged"):
            series[name].append(counts[name])
        series["duration_s"].append(run.duration_s)
    return series


@dataclass(frozen=True)
class ExpectationInfo:
    """One entry of the gate: a suite expectation or a field check the spec's mapping adds."""

    name: str
    rule: str
    column: str | None
    severity: str
    defect: bool
    row_level: bool


def expectations_of(entries: Iterable[Any]) -> list[ExpectationInfo]:
    """The gate's entries (the suite's and the field checks the mapping adds, see
    ``conduit.ui.data.suite_entries``), named as the gate names them: ``rule(column)``."""
    from conduit.quality.suite import ROW_LEVEL

    infos = []
    for entry in entries:
        column = getattr(entry.kwargs, "column", None)
        infos.append(ExpectationInfo(f"{entry.rule}({column})" if column else entry.rule, entry.rule, column,
                                     entry.severity, entry.defect, isinstance(entry, ROW_LEVEL)))
    return infos


def expectation_results(expectations: Sequence[ExpectationInfo], gate: Mapping[str, Any] | None,
                        quarantined: Sequence[Mapping[str, Any]] = (),
                        mapping: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Per expectation of one run's gate: rows evaluated, rows failed, passed or not, a sample of
    failing values. From the gate's summary: its per-expectation ``assertions`` when it has them;
    otherwise defect rules' counts and examples, and for the other rules whether they failed
    (``failed_expectations``) with the failing records the run quarantined (``quarantined``, its
    open quarantine entries). ``failed`` is then exact when one rule rejected rows (the gate's
    ``rejected``), else the count of its open entries."""
    if not gate:
        return []
    checked = gate.get("checked")
    assertions = {a.get("name"): a for a in gate.get("assertions") or () if isinstance(a, Mapping)}
    defects = gate.get("defects") if isinstance(gate.get("defects"), Mapping) else {}
    failed_names = set(gate.get("failed_expectations") or ())
    by_rule: dict[str, list[Mapping[str, Any]]] = {}
    for entry in quarantined:
        name = f"{entry.get('expectation')}({entry['column_name']})" if entry.get("column_name") \
            else str(entry.get("expectation"))
        by_rule.setdefault(name, []).append(entry)
    rejecting_failed = [e for e in expectations if not e.defect and e.name in failed_names and e.row_level]
    results = []
    for info in expectations:
        samples = _samples(info, defects.get(info.name), by_rule.get(info.name, ()), mapping)
        if info.name in assertions:
            found = assertions[info.name]
            failed = _int(found.get("actual")) if info.row_level or info.defect or info.rule.endswith("unique") else None
            success = bool(found.get("success"))
            source = "gate"
        elif info.defect:
            failed = int((defects.get(info.name) or {}).get("count", 0))
            success, source = True, "gate"
        else:
            success = info.name not in failed_names
            entries = {e.get("record_key") or e.get("crm_id") for e in by_rule.get(info.name, ())}
            if success:
                failed, source = (0 if info.row_level else None), "gate"
            elif len(rejecting_failed) == 1 and info.row_level and gate.get("rejected") is not None:
                failed, source = int(gate["rejected"]), "gate"
            else:
                failed, source = len(entries), "open quarantine entries"
        rate = None if failed is None or not checked else round(1 - failed / checked, 6)
        results.append({"name": info.name, "column": info.column, "severity": info.severity,
                        "defect": info.defect, "evaluated": checked if info.row_level else None,
                        "failed": failed, "success": success, "pass_rate": rate if info.row_level else
                        (1.0 if success else 0.0), "samples": samples, "failed_from": source})
    return results


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _samples(info: ExpectationInfo, defect: Mapping[str, Any] | None, entries: Iterable[Mapping[str, Any]],
             mapping: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if defect:
        return [{"record": e.get("record"), "value": e.get("value")} for e in list(defect.get("examples") or ())[:SAMPLES]]
    samples = []
    for entry in list(entries)[:SAMPLES]:
        samples.append({"record": entry.get("record_key") or entry.get("crm_id"),
                        "value": raw_value(entry, mapping), "reason": entry.get("reason")})
    return samples


def raw_value(entry: Mapping[str, Any], mapping: Mapping[str, Any] | None) -> Any:
    """The CRM values behind a quarantined record's failing column (its lineage in the mapping):
    one property's value, or ``{property: value}`` for a column made from several."""
    raw = entry.get("raw_record")
    if not isinstance(raw, Mapping):
        return None
    column = entry.get("column_name")
    field_mapping = (mapping or {}).get(column) if column else None
    props = field_mapping.source_properties() if field_mapping is not None else []
    if not props:
        return None
    if len(props) == 1:
        return raw.get(props[0])
    return {p: raw.get(p) for p in props}


def pass_rate_history(runs: Sequence[RunRecord], expectations: Sequence[ExpectationInfo],
                      quarantined_by_run: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list]:
    """Oldest first, one point per run whose gate reported: x (run start, unix seconds) and per
    expectation its pass rate (1 - failed / evaluated rows; 1 or 0 for a table-level one)."""
    gated = sorted((r for r in runs if isinstance(r.summaries.get("quality_gate"), Mapping)),
                   key=lambda r: (r.start_date or r.run_after))
    series: dict[str, list] = {"x": [], "run_id": [], **{e.name: [] for e in expectations}}
    for run in gated:
        results = {r["name"]: r for r in expectation_results(
            expectations, run.summaries["quality_gate"], quarantined_by_run.get(run.run_id, ()))}
        series["x"].append(int((run.start_date or run.run_after).timestamp()))
        series["run_id"].append(run.run_id)
        for info in expectations:
            series[info.name].append(results.get(info.name, {}).get("pass_rate"))
    return series


def quarantine_rows(entries: Sequence[Mapping[str, Any]], mapping: Mapping[str, Any], now: datetime,
                    limit: int = 500) -> list[dict[str, Any]]:
    """The open quarantine list (oldest first, at most ``limit``): record, rule, reason, the raw
    CRM value of the failing column, age."""
    rows = []
    for entry in list(entries)[:limit]:
        at = entry.get("quarantined_at")
        column = entry.get("column_name")
        rows.append({
            "id": entry.get("id"),
            "record_key": entry.get("record_key"),
            "crm_id": entry.get("crm_id"),
            "rule": f"{entry.get('expectation')}({column})" if column else entry.get("expectation"),
            "reason": entry.get("reason"),
            "raw_value": raw_value(entry, mapping),
            "run_id": entry.get("run_id"),
            "quarantined_at": _iso(at) if isinstance(at, datetime) else at,
            "age": describe_age((now - at).total_seconds()) if isinstance(at, datetime) else None,
        })
    return rows


def lineage_rows(mapping: Mapping[str, Any], target_fields: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Per ERP column: the CRM properties it reads and the transforms between (column lineage,
    from the mapping); for an API target also the field it lands in."""
    landing = {column: field for field, column in (target_fields or {}).items() if column}
    return [{"column": column, "sources": m.source_properties(),
             "transforms": [step.type for step in m.transforms], "dtype": m.dtype,
             "default": m.default, "lands_in": landing.get(column)}
            for column, m in mapping.items()]


def latest_plan(runs: Sequence[RunRecord]) -> tuple[str, Mapping[str, Any]] | None:
    """The newest run's plan (run id, plan), if any run planned."""
    return next(((r.run_id, r.plan) for r in runs if r.plan), None)


def group_by_run(entries: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for entry in entries:
        grouped.setdefault(str(entry.get("run_id")), []).append(entry)
    return grouped
