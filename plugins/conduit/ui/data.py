"""Where the health view's data comes from: Airflow's metadata database (runs, their tasks'
returned summaries, task states) and each sync's state store (watermark, open quarantine). Read
only; never logs, never the CRM.

Queries are bounded and use the tables' indexes: runs by ``dag_id`` (``idx_dag_run_dag_id``),
at most a few per sync for the overview and ``limit`` for one sync; XCom by ``dag_run_id`` (the
primary key's first column), only the sync's own tasks and keys; task instances by
``(dag_id, run_id)`` (``ti_dag_run``), only the states the verdict reads. State stores are read
in parallel with a deadline and remembered until a run of the sync (or a replay) changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conduit.ui.health import RunRecord

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from conduit.specs.model import SyncSpec

log = logging.getLogger(__name__)

REPLAY_DAG_ID = "conduit_quarantine_replay"
SYNC_TASKS = ("plan_extract", "extract", "transform", "quality_gate", "data_docs", "plan", "load", "reconcile")
XCOM_KEYS = ("return_value", "plan")
TASK_STATES = ("failed", "upstream_failed", "up_for_retry", "awaiting_input")
RUNNING = "running"
RUNS_PER_SYNC_OVERVIEW = 3
MAX_RUNS = 200
STATE_WORKERS = 8
STATE_DEADLINE_S = 15.0
STATE_CACHE_TTL_S = 60.0


# --- specs -----------------------------------------------------------------------------------------

_specs_lock = threading.Lock()
_specs_cache: dict[str, Any] = {}


@dataclass(frozen=True)
class SpecProblem:
    """A spec file that does not load (or a sync name more than one file claims). ``name``: the
    sync it is for, as far as that can be read (its ``name`` field, else the file's stem);
    ``error``: what is wrong, naming file and field (its message holds the server's paths)."""

    name: str | None
    error: Any  # conduit.exceptions.SpecError


def syncs_dir() -> Path:
    from conduit.factory import include_dir

    return include_dir() / "syncs"


def load_sync_specs(directory: Path | None = None) -> dict[str, SyncSpec]:
    """Every spec that loads, by name (parsed again only when a file in the folder changed). Each
    spec stands on its own: a broken one is left out (see :func:`spec_problems`), the others are
    here."""
    return dict(_load(directory)[0])


def spec_problems(directory: Path | None = None) -> list[SpecProblem]:
    """The specs that do not load, one per file (a name used by more than one spec: one for the
    name, naming the files)."""
    return list(_load(directory)[1])


def _load(directory: Path | None) -> tuple[dict[str, SyncSpec], list[SpecProblem]]:
    folder = directory or syncs_dir()
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    stamp = (str(folder), tuple((str(p), p.stat().st_mtime_ns) for p in files))
    with _specs_lock:
        if _specs_cache.get("stamp") != stamp:
            _specs_cache["loaded"] = _load_each(folder, files)
            _specs_cache["stamp"] = stamp
        return _specs_cache["loaded"]


def _load_each(folder: Path, files: list[Path]) -> tuple[dict[str, SyncSpec], list[SpecProblem]]:
    """Each file on its own (``load_specs`` fails them all for one): the DAG of a broken spec
    cannot run, but the other syncs' health is still theirs."""
    from conduit.exceptions import SpecError
    from conduit.specs.model import load_spec

    by_name: dict[str, list[tuple[Path, SyncSpec]]] = {}
    problems: list[SpecProblem] = []
    for path in files:
        try:
            spec = load_spec(path)
        except SpecError as exc:
            problems.append(SpecProblem(_claimed_name(path), exc))
        else:
            by_name.setdefault(spec.name, []).append((path, spec))
    for name, found in by_name.items():
        if len(found) > 1:
            names = ", ".join(str(p.relative_to(folder)) for p, _ in found)
            problems.append(SpecProblem(name, SpecError(str(folder), [
                ("name", f"{name!r} is used by more than one spec: {names}")])))
    broken = {p.name for p in problems}
    specs = {name: found[0][1] for name, found in by_name.items() if len(found) == 1 and name not in broken}
    return specs, problems


def _claimed_name(path: Path) -> str | None:
    """The sync a broken spec is for: its ``name`` when the file reads as YAML, else its stem."""
    from conduit.specs.model import read_yaml

    try:
        data = read_yaml(path)
    except Exception:  # noqa: BLE001 - the spec's own error says why it does not read
        return path.stem
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else path.stem


def expectations_dir() -> Path:
    return syncs_dir().parent / "expectations"


def suite_entries(spec: SyncSpec) -> list[Any]:
    """What the spec's gate evaluates: its suite plus the field checks its mapping adds (empty
    without a quality gate). A suite that does not load raises ``SpecError`` (naming its file and
    field), as it fails the sync's quality gate."""
    if spec.quality is None:
        return []
    from conduit.quality.defects import field_checks

    suite = _suite(expectations_dir() / spec.quality.suite)
    return list(suite.with_field_checks(field_checks(spec)).expectations)


def suite_error(spec: SyncSpec) -> Any:
    """The ``SpecError`` of the spec's expectation suite when it does not load, else None."""
    from conduit.exceptions import SpecError

    try:
        suite_entries(spec)
    except SpecError as exc:
        return exc
    return None


_suites_lock = threading.Lock()
_suites_cache: dict[Path, tuple[Any, Any]] = {}


def _suite(path: Path) -> Any:
    """The suite file, parsed again only when it changed (the overview asks for every sync's);
    raises its ``SpecError`` when it does not load."""
    from conduit.exceptions import SpecError
    from conduit.quality.suite import load_suite

    try:
        info = path.stat()
        stamp: Any = (info.st_mtime_ns, info.st_size, info.st_ino)
    except OSError:
        stamp = None  # missing or unreadable: load_suite says which
    with _suites_lock:
        cached = _suites_cache.get(path)
    if cached is None or cached[0] != stamp or stamp is None:
        try:
            found: Any = load_suite(path)
        except SpecError as exc:
            found = exc
        with _suites_lock:
            _suites_cache[path] = (stamp, found)
    else:
        found = cached[1]
    if isinstance(found, SpecError):
        raise found
    return found


# --- the metadata database ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DagFacts:
    paused: bool
    next_run: Any
    stale: bool


def dag_facts(session: Session, dag_ids: Iterable[str]) -> dict[str, DagFacts]:
    from airflow.models.dag import DagModel
    from sqlalchemy import select

    ids = list(dag_ids)
    if not ids:
        return {}
    rows = session.execute(select(DagModel.dag_id, DagModel.is_paused, DagModel.next_dagrun_create_after,
                                  DagModel.is_stale).where(DagModel.dag_id.in_(ids)))
    return {dag_id: DagFacts(bool(paused), next_run, bool(stale)) for dag_id, paused, next_run, stale in rows}


_RUN_COLUMNS = ("id", "dag_id", "run_id", "state", "run_type", "run_after", "start_date", "end_date")


def _run_columns():
    from airflow.models.dagrun import DagRun

    return [DagRun.id, DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.run_type, DagRun.run_after,
            DagRun.start_date, DagRun.end_date]


def latest_runs(session: Session, dag_ids: Sequence[str], per_dag: int = RUNS_PER_SYNC_OVERVIEW
                ) -> dict[str, list[RunRecord]]:
    """The newest ``per_dag`` runs of each DAG (newest first), with their summaries: one query for
    the runs (ranked per DAG), one for their XComs, one for the task states that matter.

    A running run is always among them, however many newer runs queue behind it: a sync runs one
    run at a time (``max_active_runs=1``), so runs triggered by hand or by webhooks while a plan
    waits for approval queue up, and the verdict must still see the run that waits."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import func, or_, select

    if not dag_ids:
        return {}
    rank = func.row_number().over(partition_by=DagRun.dag_id,
                                  order_by=(DagRun.run_after.desc(), DagRun.id.desc())).label("rank")
    ranked = select(DagRun.id.label("pk"), rank).where(DagRun.dag_id.in_(list(dag_ids))).subquery()
    stmt = (select(*_run_columns()).join(ranked, ranked.c.pk == DagRun.id)
            .where(or_(ranked.c.rank <= per_dag, DagRun.state == RUNNING))
            .order_by(DagRun.dag_id, ranked.c.rank))
    return _records(session, [dict(zip(_RUN_COLUMNS, row, strict=True)) for row in session.execute(stmt)])


def recent_runs(session: Session, dag_id: str, limit: int) -> list[RunRecord]:
    """The DAG's newest ``limit`` runs, newest first, with their summaries (and its running run,
    see :func:`latest_runs`)."""
    return latest_runs(session, [dag_id], per_dag=max(1, min(limit, MAX_RUNS))).get(dag_id, [])


def _records(session: Session, rows: list[dict[str, Any]]) -> dict[str, list[RunRecord]]:
    summaries, plans = _summaries(session, [r["id"] for r in rows])
    states = _task_states(session, [(r["dag_id"], r["run_id"]) for r in rows])
    records: dict[str, list[RunRecord]] = {}
    for row in rows:
        records.setdefault(row["dag_id"], []).append(RunRecord(
            run_id=row["run_id"], state=str(row["state"]) if row["state"] else None, run_type=str(row["run_type"]),
            run_after=row["run_after"], start_date=row["start_date"], end_date=row["end_date"],
            summaries=summaries.get(row["id"], {}), plan=plans.get(row["id"]),
            task_states=states.get((row["dag_id"], row["run_id"]), {})))
    return records


def _summaries(session: Session, run_pks: list[int]) -> tuple[dict[int, dict[str, Any]], dict[int, Any]]:
    """Per run: each sync task's returned summary (a mapped task's as the list of its map
    indexes'), and the plan task's ``plan``."""
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    if not run_pks:
        return {}, {}
    stmt = (select(XComModel.dag_run_id, XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.value)
            .where(XComModel.dag_run_id.in_(run_pks), XComModel.key.in_(XCOM_KEYS),
                   XComModel.task_id.in_(SYNC_TASKS))
            .order_by(XComModel.dag_run_id, XComModel.task_id, XComModel.map_index))
    summaries: dict[int, dict[str, Any]] = {}
    plans: dict[int, Any] = {}
    for row in session.execute(stmt):
        value = XComModel.deserialize_value(row)
        if row.key == "plan":
            plans[row.dag_run_id] = value
        elif row.map_index >= 0:
            summaries.setdefault(row.dag_run_id, {}).setdefault(row.task_id, []).append(value)
        else:
            summaries.setdefault(row.dag_run_id, {})[row.task_id] = value
    return summaries, plans


def _task_states(session: Session, runs: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    """Per run: the tasks in a state the verdict reads (a mapped task's worst index counts)."""
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select, tuple_

    if not runs:
        return {}
    stmt = select(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.task_id, TaskInstance.state).where(
        tuple_(TaskInstance.dag_id, TaskInstance.run_id).in_(runs), TaskInstance.state.in_(TASK_STATES))
    states: dict[tuple[str, str], dict[str, str]] = {}
    for dag_id, run_id, task_id, state in session.execute(stmt):
        states.setdefault((dag_id, run_id), {})[task_id] = str(state)
    return states


def replay_runs(session: Session, limit: int = 20) -> list[dict[str, Any]]:
    """The replay DAG's newest runs (which sync each replayed: its conf's ``sync``)."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    stmt = (select(DagRun.run_id, DagRun.state, DagRun.conf, DagRun.start_date, DagRun.end_date)
            .where(DagRun.dag_id == REPLAY_DAG_ID).order_by(DagRun.run_after.desc(), DagRun.id.desc()).limit(limit))
    return [{"run_id": run_id, "state": str(state) if state else None,
             "sync": (conf or {}).get("sync") if isinstance(conf, dict) else None,
             "start_date": start, "end_date": end} for run_id, state, conf, start, end in session.execute(stmt)]


# --- the state stores ----------------------------------------------------------------------------------


@dataclass
class StateFacts:
    watermark_ms: int | None = None
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    """What went wrong reading it: the exception's type and the connection, never its message
    (a driver's message may name hosts and users)."""


def read_state(spec: SyncSpec) -> StateFacts:
    """The sync's watermark and open quarantine entries, from its state store (only that: a
    Tryton sync's state is read without its Tryton connection)."""
    from conduit.hooks.erp import ErpHook

    target_spec = spec.target
    try:
        store = ErpHook(erp_conn_id=target_spec.conn_id, state_conn_id=target_spec.state_conn_id).get_state_store()
        watermark = store.read_watermark(spec)
        entries = store.open_quarantine(spec)
    except Exception as exc:  # noqa: BLE001 - one unreadable store must not take the page down
        log.warning("could not read the state of sync %s (connection %s): %s", spec.name,
                    target_spec.state_conn_id, type(exc).__name__)
        return StateFacts(error=f"connection {target_spec.state_conn_id}: {type(exc).__name__}")
    return StateFacts(watermark.ts_ms if watermark else None, entries)


_state_lock = threading.Lock()
_state_cache: dict[str, tuple[Any, float, StateFacts]] = {}


def read_states(specs: Sequence[SyncSpec], versions: dict[str, Any], *, deadline_s: float = STATE_DEADLINE_S,
                ttl_s: float = STATE_CACHE_TTL_S) -> dict[str, StateFacts]:
    """Many syncs' state, read in parallel. A sync's state is read again when ``versions[name]``
    (what its runs and the replays look like) changed or ``ttl_s`` passed; one that does not
    answer within ``deadline_s`` gets an error."""
    now = time.monotonic()
    found: dict[str, StateFacts] = {}
    todo = []
    with _state_lock:
        for spec in specs:
            cached = _state_cache.get(spec.name)
            if cached and cached[0] == versions.get(spec.name) and now - cached[1] < ttl_s:
                found[spec.name] = cached[2]
            else:
                todo.append(spec)
    if not todo:
        return found
    pool = ThreadPoolExecutor(max_workers=min(STATE_WORKERS, len(todo)), thread_name_prefix="conduit-ui-state")
    futures = {pool.submit(read_state, spec): spec for spec in todo}
    done, _ = wait(futures, timeout=deadline_s)
    pool.shutdown(wait=False, cancel_futures=True)
    with _state_lock:
        for future, spec in futures.items():
            if future in done:
                found[spec.name] = future.result()
                if found[spec.name].error is None:
                    _state_cache[spec.name] = (versions.get(spec.name), now, found[spec.name])
            else:
                found[spec.name] = StateFacts(error=f"connection {spec.target.state_conn_id}: no answer "
                                                    f"within {deadline_s:.0f} s")
    return found


def clear_state_cache() -> None:
    with _state_lock:
        _state_cache.clear()


# --- Data Docs -------------------------------------------------------------------------------------------


def data_docs_dir(dag_id: str, run_id: str) -> Path:
    """Where the run's ``data_docs`` task wrote its site (see ``DataDocsOperator``)."""
    from conduit.pipeline.staging import RunStaging, data_docs_root

    return data_docs_root() / dag_id / RunStaging.for_run(dag_id, run_id, base=Path(".")).root.name
