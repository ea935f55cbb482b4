"""The crash matrix's harness: a sync run as its Airflow tasks (the operators' ``execute``), each
task's return value kept like an XCom (a JSON file written when the task returns), a forked task
process killed with SIGKILL at an armed crash point (:mod:`conduit.crash`), and the retry: every
task without an XCom runs again, in this process, on the same staged files and run id.

Airflow's task runner forks the task process too; the fork keeps the harness cheap (no imports per
child). What is compared with one clean run: the ERP's rows (minus the columns a later write
legitimately stamps differently), the watermark and the quarantine (record keys + reasons).

Registered as a plugin by ``test_crash_matrix.py``'s fixture: the terminal summary prints the matrix.
"""

from __future__ import annotations

import json
import os
import shutil
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from conduit.crash import ARM, ONCE

DAG_ID = "crm_to_erp_customer_sync"
RUN_ID = "scheduled__crash-matrix"
VOLATILE = ("created_at", "updated_at", "last_run_id")  # stamped by whichever write came last

# the sync's tasks in order, and the crash points inside each
POINTS: dict[str, list[str]] = {
    "plan_extract": ["plan_extract.start", "plan_extract.end"],
    "extract": ["extract.start", "extract.between_pages", "extract.between_parts", "extract.end"],
    "transform": ["transform.start", "transform.between_batches", "transform.end"],
    "quality_gate": ["quality_gate.start", "quality_gate.quarantined", "quality_gate.end"],
    "plan": ["plan.start", "plan.end"],
    "load": ["load.start", "load.before_copy", "load.mid_copy", "load.after_copy", "load.after_merge",
             "load.before_commit", "load.end"],
    "reconcile": ["reconcile.start", "reconcile.before_staging_removal", "reconcile.end"],
}
TASKS = list(POINTS)
WRITES_ERP = {"quality_gate", "load"}  # earlier tasks that write the ERP: run again for each point's own ERP
SMALL_PARTS = 100  # raw part rows in a child killed between parts (600 contacts fit one 2,000-row part)

RESULTS: list[dict[str, Any]] = []  # one row per killed point, printed at the end


def task_of(point: str) -> str:
    return next(task for task, points in POINTS.items() if point in points)


class _Outlets(dict):
    """The asset events a task adds, kept in ``added`` (asset, extra)."""

    def __init__(self, added: list | None = None):
        super().__init__()
        self.added = [] if added is None else added

    def __missing__(self, key):
        return SimpleNamespace(add=lambda asset, extra=None, **kwargs: self.added.append((asset, extra)))


def _context(run_id: str = RUN_ID, *, try_number: int = 1, events: list | None = None) -> dict[str, Any]:
    """What the operators read of an Airflow context."""
    return {"run_id": run_id, "dag_run": SimpleNamespace(run_type="manual", run_after=None),
            "ti": SimpleNamespace(xcom_push=lambda **kwargs: None, try_number=try_number),
            "outlet_events": _Outlets(events), "triggering_asset_events": None}


class SyncRun:
    """One DAG run of a sync, task by task (the operators of ``conduit.operators.sync``), staging and
    XComs under ``home``. ``run()`` runs every task that has no XCom yet: the first call is the run,
    a later one after a kill is Airflow's retry of the killed task and the run's remaining tasks."""

    def __init__(self, spec, suite_path: Path, home: Path):
        from conduit.pipeline.staging import RunStaging

        self.spec, self.suite_path, self.home = spec, suite_path, Path(home)
        self.xcoms = self.home / "xcom"
        self.staging = RunStaging.for_run(DAG_ID, RUN_ID, base=self.home / "staging")
        self.tries = 0  # run() calls in this process: a later one is Airflow's retry (try_number 2)
        self.asset_events: list = []

    def operator(self, task: str, **kwargs):
        from conduit.operators import sync as ops

        cls = {"plan_extract": ops.CrmExtractPlanOperator, "extract": ops.CrmExtractOperator,
               "transform": ops.MappingTransformOperator, "quality_gate": ops.QualityGateOperator,
               "plan": ops.ErpPlanOperator, "load": ops.ErpUpsertOperator, "reconcile": ops.ReconcileOperator}[task]
        if task == "quality_gate":
            kwargs["suite_path"] = str(self.suite_path)
        op = cls(task_id=task, spec=self.spec, **kwargs)
        op.staging = lambda _context: self.staging  # the run's staging, wherever the DAG's would be
        if task == "plan":
            op.do_branch = lambda _context, branch: branch  # the branch taken, without a DAG to skip in
        return op

    def xcom(self, name: str, execute: Callable[[], Any]) -> Any:
        path = self.xcoms / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
        value = json.loads(json.dumps(execute(), default=str))
        self.xcoms.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
        return value

    def run(self, *, stop_before: str | None = None, after_task: Callable[[str], None] | None = None,
            try_number: int | None = None) -> None:
        self.tries += 1
        tries = try_number or self.tries

        def context() -> dict[str, Any]:
            return _context(try_number=tries, events=self.asset_events)

        def task(name: str, execute: Callable[[Any], Any], **kwargs) -> Any:
            return self.xcom(name, lambda: execute(self.operator(name.split("-")[0], **kwargs)))

        for name in TASKS:
            if name == stop_before:
                return
            if name == "plan_extract":
                plan = task(name, lambda op: op.execute(context()))
            elif name == "extract":
                for i, item in enumerate(plan):  # mapped: one task per item
                    self.xcom(f"extract-{i}", lambda item=item: self.operator("extract", item=item).execute(context()))
            else:
                extra = {} if name == "transform" else {"extract_plan": plan}
                task(name, lambda op: op.execute(context()), **extra)
            if after_task:
                after_task(name)

    def task_names(self) -> list[str]:
        """The run's task instances in order (one ``extract-<i>`` per planned item)."""
        plan = self.xcoms / "plan_extract.json"
        items = len(json.loads(plan.read_text())) if plan.exists() else 0
        return [name for task in TASKS
                for name in ([f"extract-{i}" for i in range(items)] if task == "extract" else [task])]

    def first_unfinished(self) -> str | None:
        """The first task without an XCom: after a kill, the killed one."""
        return next((n for n in self.task_names() if not (self.xcoms / f"{n}.json").exists()), None)

    def count_as_done(self, name: str) -> None:
        """Take a killed task as succeeded, so the run goes on with what it staged (only the
        mechanism-off cases do this: Airflow never does)."""
        self.xcoms.mkdir(parents=True, exist_ok=True)
        (self.xcoms / f"{name}.json").write_text(json.dumps({"killed": True}))

    def copy_from(self, snapshot: Path, skip_xcoms: set[str]) -> None:
        """Start from the staged files and XComs a snapshot of another run holds."""
        shutil.rmtree(self.home, ignore_errors=True)
        if (snapshot / "staging").exists():
            shutil.copytree(snapshot / "staging", self.home / "staging")
        self.xcoms.mkdir(parents=True)
        for path in (snapshot / "xcom").glob("*.json"):
            if path.stem.split("-")[0] not in skip_xcoms:
                shutil.copy(path, self.xcoms / path.name)


def killed_in_child(run: Callable[[], None], point: str, marker: Path, setup: Callable[[], None] | None = None) -> int:
    """Fork a task process, arm ``point`` in it, run; return its exit code (-9: SIGKILLed at the point)."""
    marker.unlink(missing_ok=True)
    pid = os.fork()
    if pid == 0:  # the task process: never returns into pytest
        code = 0
        try:
            os.environ[ARM], os.environ[ONCE] = point, str(marker)
            if setup:
                setup()
            run()
        except BaseException:  # noqa: BLE001 - reported through the exit code
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def small_parts() -> None:
    """In a child only: raw parts of SMALL_PARTS rows, so a 600-contact extract writes several."""
    from conduit.pipeline import steps

    steps.write_pages.__defaults__ = (SMALL_PARTS,)


# --- what is compared ------------------------------------------------------------------------------


@dataclass
class Outcome:
    rows: pd.DataFrame
    watermark: Any
    quarantine: list[tuple[str, ...]] = field(default_factory=list)


def outcome(target, spec) -> Outcome:
    rows = target.fetch_rows(spec)
    frame = rows.drop(columns=[c for c in VOLATILE if c in rows.columns])
    frame["deleted_at"] = rows["deleted_at"].notna()  # when it was deleted is the killed run's own time
    frame = frame.sort_values(spec.target.key, kind="stable").reset_index(drop=True)
    frame = frame.astype(object).where(frame.notna(), None)
    quarantine = sorted((str(e["record_key"]), str(e["expectation"]), str(e["column_name"]), str(e["reason"]))
                        for e in target.open_quarantine(spec))
    return Outcome(frame, target.read_watermark(spec), quarantine)


def differences(clean: Outcome, got: Outcome, key: str) -> dict[str, Any]:
    """Rows lost (missing, or holding another version than the clean run's), rows duplicated (a key
    twice, or a row the clean run does not have), and whether state and quarantine match."""
    def by_key(frame: pd.DataFrame) -> dict[Any, tuple]:
        return {row[0]: tuple(row) for row in frame[[key, *[c for c in frame.columns if c != key]]].itertuples(
            index=False)}

    want, have = by_key(clean.rows), by_key(got.rows)
    lost = sum(1 for k, row in want.items() if have.get(k) != row)
    duplicated = int(got.rows[key].duplicated().sum()) + len(set(have) - set(want))
    return {"rows": len(got.rows), "lost": lost, "duplicated": duplicated,
            "watermark_equal": clean.watermark == got.watermark,
            "quarantine_equal": clean.quarantine == got.quarantine,
            "watermark": _ms(got.watermark), "clean_watermark": _ms(clean.watermark),
            "quarantine_entries": len(got.quarantine), "clean_quarantine_entries": len(clean.quarantine),
            "equal": lost == 0 and duplicated == 0 and clean.watermark == got.watermark
            and clean.quarantine == got.quarantine and list(clean.rows.columns) == list(got.rows.columns)}


def _ms(watermark) -> int | None:
    return None if watermark is None else watermark.ts_ms


def found(r: dict[str, Any]) -> str:
    """What the comparison with the clean run found, in words (the mechanism-off table)."""
    said = []
    if r.get("lost"):
        said.append(f"{r['lost']} rows lost")
    if r.get("duplicated"):
        said.append(f"{r['duplicated']} duplicated")
    got, clean = r.get("watermark"), r.get("clean_watermark")
    if not r.get("watermark_equal", True):
        where = "ahead" if got is not None and (clean is None or got > clean) else "behind"
        said.append(f"watermark {where} the clean run's ({got} vs {clean})" if "watermark" in r
                    else "saga/state differs")
    elif (r.get("lost") and got is not None and r.get("recovery") != "none" and not r.get("note")
          and not r["point"].startswith("replay.")):
        said.append("watermark already past them (the next run will not read them again)")
    if not r.get("quarantine_equal", True) and "quarantine_entries" in r:
        said.append(f"quarantine {r['quarantine_entries']} open entries vs {r['clean_quarantine_entries']}")
    elif not r.get("quarantine_equal", True) and not r.get("note"):
        said.append("log differs")
    if r.get("note"):
        said.append(r["note"])
    if r.get("recovery") == "none":
        said.append("run left failed (no retry)")
    elif r.get("error"):
        said.append(f"recovery failed: {r['error'][:90]}")
    return "; ".join(said) or "EQUAL (the switch-off made no difference)"


def commit_watermark_first(monkeypatch) -> None:
    """Exactly-once switched off: the SQL load commits the watermark in its own transaction before
    it stages the rows (what the load did before one transaction held both)."""
    from conduit.targets.sql import SqlErpTarget

    load = SqlErpTarget.load

    def watermark_then_rows(self, spec, batches, *, watermark=None, **kwargs):
        if watermark is not None:
            self.commit_load(spec, run_id=kwargs["run_id"], watermark=watermark)
        return load(self, spec, batches, watermark=None, **kwargs)

    monkeypatch.setattr(SqlErpTarget, "load", watermark_then_rows)


def in_schema(spec, schema: str):
    return spec.model_copy(update={"target": spec.target.model_copy(update={"db_schema": schema})})


# --- the table -------------------------------------------------------------------------------------


def pytest_terminal_summary(terminalreporter) -> None:
    if not RESULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("crash matrix")
    write(f"{'crash point':36} {'target':8} {'mech.':5} {'killed':6} {'recovery':8} {'rows':>5} {'lost':>5} "
          f"{'dup':>4} {'state':6} {'quar.':6} {'equal':6} {'seconds':>7}  recovery error")
    for r in RESULTS:
        write(f"{r['point']:36} {r['target']:8} {r['mechanism']:5} {str(r['exit']):6} {r['recovery']:8} "
              f"{r['rows']:>5} {r['lost']:>5} {r['duplicated']:>4} {str(r['watermark_equal']):6} "
              f"{str(r['quarantine_equal']):6} {str(r['equal']):6} {r['seconds']:>7.1f}  {r.get('error') or ''}")
    on = [r for r in RESULTS if r["mechanism"] == "on"]
    if on:
        write(f"crash points covered: {len({r['point'].split(' ')[0] for r in on})}, killed with SIGKILL: "
              f"{sum(r['exit'] == -9 for r in on)}, rows lost: {sum(r['lost'] for r in on)}, "
              f"rows duplicated: {sum(r['duplicated'] for r in on)}, runs unequal to the clean run: "
              f"{sum(not r['equal'] for r in on)}")
    off = [r for r in RESULTS if r["mechanism"] == "off"]
    if off:
        terminalreporter.section("crash points with their exactly-once mechanism switched off")
        write(f"{'crash point':34} {'mechanism switched off':58} {'recovery':8}  what the comparison found")
        for r in off:
            write(f"{r['point']:34} {r.get('switched_off', '?'):58} {r['recovery']:8}  {found(r)}")
        write(f"mechanism-off cases: {len(off)}, unequal to the clean run: {sum(not r['equal'] for r in off)} "
              f"(an equal one says why in its row), rows lost: {sum(r['lost'] for r in off)}, "
              f"rows duplicated: {sum(r['duplicated'] for r in off)}")


class SyncBench(SimpleNamespace):
    """What the crash matrix and the storms share: the stand-in CRM (``crm``), PostgreSQL (``dsn``),
    last night's staged full read (``night``), this run's pinned start (``start_ms``) and the ERP
    target; each case gets a fresh schema (dropped by the fixture via ``schemas``)."""

    schema_prefix = "bench_"
    night_ms = 3_600_000  # last night's run: its watermark is an hour before this run starts

    def fresh_schema(self) -> str:
        import psycopg

        schema = f"{self.schema_prefix}{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        self.schemas.append(schema)
        return schema

    def last_night(self, spec) -> None:
        """The ERP as last night's full load left it (watermark an hour before this run)."""
        from conduit.pipeline import steps

        self.target.ensure_ready(spec)
        steps.load(self.target, spec, self.night, run_id="scheduled__last-night",
                   watermark_ms=self.start_ms - self.night_ms)


context = _context
