"""Issue 17, the crash matrix: the sync killed with SIGKILL at every named crash point
(:mod:`conduit.crash`), then retried, leaves the ERP, the watermark and the quarantine exactly as
one clean run of the same DAG run does.

The run: an incremental run after last night's full load (300 updated contacts, 20 new, 5
archived, 3 that the gate quarantines), its start pinned so that every retry plans the same window.
Each point gets its own ERP schema holding last night's load, the staged files and XComs of the
clean run up to the killed task, and a forked task process that runs from that task until the
point kills it (exit code -9). The retry runs the killed task and the rest in this process
(``crash_helpers``). The table is printed in the terminal summary.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from crash_helpers import (
    POINTS,
    RESULTS,
    TASKS,
    WRITES_ERP,
    SyncBench,
    SyncRun,
    commit_watermark_first,
    context,
    differences,
    in_schema,
    killed_in_child,
    outcome,
    small_parts,
    task_of,
)

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
SPEC_FILE = REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"
SUITE = REPO / "include" / "expectations" / "erp_customers.yaml"
CONTACTS, SEED = 600, 11
NIGHT_MS = SyncBench.night_ms


class Matrix(SyncBench):
    """The stand-in CRM, last night's staged full read, this run's pinned start and one clean run."""

    schema_prefix = "crash_"


@pytest.fixture(scope="module")
def matrix(pg_server_dsn, tmp_path_factory, request):
    import crash_helpers
    import psycopg

    from conduit.hooks.erp import ErpHook
    from conduit.operators import sync as sync_operators
    from conduit.pipeline import steps
    from conduit.pipeline.run_plan import plan_run
    from conduit.pipeline.staging import RunStaging
    from conduit.sources import source_for
    from conduit.specs.model import load_spec
    from conduit.standin.testing import run_standin

    if not request.config.pluginmanager.is_registered(crash_helpers):
        request.config.pluginmanager.register(crash_helpers, "crash_helpers")  # prints the table at the end
    home = tmp_path_factory.mktemp("crash-matrix")
    with pytest.MonkeyPatch.context() as mp, run_standin(contacts=CONTACTS, seed=SEED) as crm:
        mp.setenv("AIRFLOW_CONN_ERP_DEFAULT", pg_server_dsn)
        mp.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", json.dumps({
            "conn_type": "hubspot", "host": crm.base_url, "password": crm.token,
            "extra": {"api_version": "2026-09", "max_retries": 4, "backoff_max": 0.5}}))
        m = Matrix(dsn=pg_server_dsn, crm=crm, home=home, schemas=[], target=ErpHook().get_target())
        base = load_spec(SPEC_FILE)
        # last night's full read, staged once; every point's ERP starts from its load
        m.start_ms = crm.admin.clock_ms() // 1000 * 1000 + 1000
        m.night = RunStaging(home / "night")
        night_plan = plan_run(base, stored_watermark_ms=None, run_start_ms=m.start_ms - NIGHT_MS, full_refresh=True)
        steps.extract(source_for(base), m.night, night_plan)
        steps.transform(base, m.night)
        # what changed since: updates, new contacts, archived ones, and three the gate quarantines
        ids = [r["id"] for page in source_for(base).hook.iter_list_pages("contacts", ["email"], limit=100)
               for r in page]
        past = m.start_ms - NIGHT_MS // 2
        crm.admin.bulk_modify(ids=ids[:300], properties={"company": "Crash Test AG"}, lastmodifieddate_ms=past)
        for i in range(20):
            crm.admin.create({"email": f"new{i}@example.com", "firstname": f"New{i}", "lastname": "Kill",
                              "country": "Germany"}, createdate_ms=past, lastmodifieddate_ms=past + i)
        for record_id in ids[300:305]:
            crm.admin.archive(record_id)
        m.nameless, m.nameless_ms = ids[310:313], past + 50  # the gate quarantines them (the replay cases fix them)
        crm.admin.bulk_modify(ids=m.nameless, properties={"firstname": "", "lastname": ""},
                              lastmodifieddate_ms=m.nameless_ms)
        # this run starts at start_ms, on every try (plan_extract reads the clock through this module)
        mp.setattr(sync_operators, "time", SimpleNamespace(time=lambda: m.start_ms / 1000))
        while crm.admin.clock_ms() < m.start_ms:
            time.sleep(0.05)

        # one clean run, with a snapshot of its staged files and XComs after each task
        m.spec = in_schema(base, m.fresh_schema())
        m.last_night(m.spec)
        clean = SyncRun(m.spec, SUITE, home / "clean")
        snapshots = home / "snapshots"

        def snapshot(task: str) -> None:
            shutil.copytree(clean.home, snapshots / task, dirs_exist_ok=True)

        started = time.monotonic()
        clean.run(after_task=snapshot)
        m.clean_seconds = time.monotonic() - started
        m.snapshots = snapshots
        m.clean = outcome(m.target, m.spec)
        m.clean_summary = {p.stem: json.loads(p.read_text()) for p in (clean.xcoms).glob("*.json")}
        load = m.clean_summary["load"]
        assert (load["inserted"], load["updated"], load["deleted"]) == (20, 300, 5), load
        assert len(m.clean.quarantine) >= 3 and m.clean.watermark.ts_ms == m.start_ms - 60_000
        try:
            yield m
        finally:
            with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
                for schema in m.schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def snapshot_before(m: Matrix, task: str) -> Path:
    index = TASKS.index(task)
    return m.snapshots / TASKS[index - 1] if index else m.home / "empty"


def kill_and_retry(m: Matrix, point: str, *, recovery: str = "retry", mechanism: str = "on",
                   switched_off: str | None = None, setup=None, between=None) -> dict:
    """Kill the run at ``point`` and recover: ``retry`` runs the killed task again and the rest
    (Airflow's retry); ``rerun`` runs every task again from plan_extract (a cleared DAG run).
    Two recoveries exist only to switch the retry off (``mechanism_off.py``): ``none`` (no retry:
    the killed task stays failed, the tasks after it never run) and ``continue`` (the killed task
    taken as succeeded: the run goes on with what it staged). ``setup`` runs in the task process;
    ``between(spec)`` runs after the kill, before the recovery (what happened meanwhile), and may
    return the outcome to compare with instead of the clean run's."""
    started = time.monotonic()
    task = task_of(point)
    spec = in_schema(m.spec, m.fresh_schema())
    m.last_night(spec)
    run = SyncRun(spec, SUITE, m.home / f"{point}-{mechanism}-{recovery}")
    run.copy_from(snapshot_before(m, task), skip_xcoms=WRITES_ERP)
    run.run(stop_before=task)  # the tasks before it that wrote the ERP (the gate), for this ERP

    def child_setup() -> None:
        if point == "extract.between_parts":
            small_parts()
        if setup:
            setup()

    code = killed_in_child(run.run, point, m.home / f"{point}.fired", setup=child_setup)
    expected = (between(spec) if between else None) or m.clean
    if recovery == "rerun":
        shutil.rmtree(run.xcoms)
    if recovery == "continue":
        run.count_as_done(run.first_unfinished())
    error = None
    try:
        if recovery != "none":
            run.run()
    except Exception as exc:  # noqa: BLE001 - a recovery that fails loudly is a result too
        error = f"{type(exc).__name__} in the recovery: {str(exc)[:100]}"
    diff = differences(expected, outcome(m.target, spec), spec.target.key)
    complete = recovery != "none" and error is None  # the run ended as the clean one did: every task succeeded
    result = {"point": point, "target": "postgres", "exit": code, "recovery": recovery, "mechanism": mechanism,
              "switched_off": switched_off, "error": error, **diff, "complete": complete,
              "equal": diff["equal"] and complete, "seconds": time.monotonic() - started,
              "recovery_asset_events": len(run.asset_events)}
    RESULTS.append(result)
    return result


ALL_POINTS = [p for points in POINTS.values() for p in points]


@pytest.mark.parametrize("point", ALL_POINTS)
def test_killed_at_the_point_then_retried_equals_one_clean_run(matrix, point):
    result = kill_and_retry(matrix, point)
    assert result["exit"] == -9, f"{point}: the task process was not killed there (exit {result['exit']})"
    assert result["error"] is None and result["equal"], result
    if task_of(point) in ("load", *TASKS[:TASKS.index("load")]):
        # the load's changes reach downstream DAGs as an ERP asset event even when the killed try
        # had committed them (the retry then changes nothing itself)
        assert result["recovery_asset_events"] == 1, result


def test_the_matrix_covers_at_least_twenty_points():
    assert len(ALL_POINTS) >= 20
    from conduit import crash

    for point in ALL_POINTS:
        assert f"\n{point} " in crash.__doc__, f"{point} is not in conduit.crash's table"


@pytest.fixture
def watermark_first(monkeypatch):
    """Exactly-once switched off: the watermark committed in its own transaction, before the rows."""
    commit_watermark_first(monkeypatch)


LOAD_POINTS = ["load.mid_copy", "load.before_commit"]


@pytest.mark.parametrize("point", LOAD_POINTS)
def test_a_cleared_rerun_after_a_kill_equals_one_clean_run(matrix, point):
    """The other recovery: the DAG run cleared and rerun from plan_extract (which reads the watermark)."""
    result = kill_and_retry(matrix, point, recovery="rerun")
    assert result["exit"] == -9 and result["error"] is None and result["equal"], result


WATERMARK_FIRST = "the watermark commits with the rows (committed first, on its own)"


def test_with_the_watermark_committed_on_its_own_a_kill_before_the_commit_loses_the_run(matrix, watermark_first):
    """Not vacuous, in CI for one point: with the watermark committed in its own transaction, a
    kill inside the load and a cleared rerun lose the run's changes (the rerun's window starts
    after them) and the comparison says so. Every point with its own mechanism switched off:
    ``tests/reliability/mechanism_off.py`` (outside CI, see tests/reliability/README.md)."""
    result = kill_and_retry(matrix, "load.before_commit", recovery="rerun", mechanism="off",
                            switched_off=WATERMARK_FIRST)
    assert result["exit"] == -9
    assert not result["equal"] and result["lost"] == 320, result


# --- the quarantine replay (conduit.pipeline.replay) ------------------------------------------------

REPLAY_POINTS = ["replay.before_load", "replay.after_load"]
REPLAY_RUN_ID = "manual__replay-crash"


@pytest.fixture
def names_fixed(matrix):
    """The CRM fixed the three records the gate quarantined (a name each); put back afterwards, so
    that the matrix's other cases read the CRM as before."""
    for record_id in matrix.nameless:
        matrix.crm.admin.modify(record_id, {"firstname": "Fixed", "lastname": f"Replay{record_id}"},
                                lastmodifieddate_ms=matrix.nameless_ms + 1000)  # the same fix in every case
    yield matrix
    matrix.crm.admin.bulk_modify(ids=matrix.nameless, properties={"firstname": "", "lastname": ""},
                                 lastmodifieddate_ms=matrix.nameless_ms)


def synced(m: Matrix):
    """A fresh ERP as the clean sync run left it (last night's load, this run's gate and load):
    the three nameless records' entries open in its quarantine. Its spec."""
    spec = in_schema(m.spec, m.fresh_schema())
    m.last_night(spec)
    run = SyncRun(spec, SUITE, m.home / f"synced-{spec.target.db_schema}")
    run.copy_from(m.snapshots / "load", skip_xcoms=WRITES_ERP)
    run.run(stop_before="reconcile")
    assert sorted(e["crm_id"] for e in m.target.open_quarantine(spec)) == sorted(m.nameless)
    return spec


def replay_task(spec):
    """The replay DAG's task (``QuarantineReplayOperator``) for this ERP's spec."""
    from conduit.operators.replay import QuarantineReplayOperator

    op = QuarantineReplayOperator(task_id="replay", sync=spec.name, syncs_dir=str(SPEC_FILE.parent),
                                  expectations_dir=str(SUITE.parent))
    op.spec = spec  # what the task would read from syncs_dir, in this test's schema
    return op


def clean_replay(m: Matrix) -> SimpleNamespace:
    if not hasattr(m, "replayed"):
        spec = synced(m)
        summary = replay_task(spec).execute(context(REPLAY_RUN_ID))
        m.replayed = SimpleNamespace(summary=summary, outcome=replay_outcome(m, spec))
    return m.replayed


def replay_outcome(m: Matrix, spec) -> SimpleNamespace:
    """What a replay leaves: the ERP (as the sync matrix compares it), every quarantine entry with
    who replayed it, and the ERP rows the replay run wrote."""
    import psycopg

    schema = spec.target.db_schema
    with psycopg.connect(m.dsn) as conn:
        entries = sorted(conn.execute(
            f'SELECT crm_id, expectation, column_name, replayed_by_run, replayed_at IS NOT NULL '
            f'FROM "{schema}".conduit_quarantine').fetchall())
        (written,) = conn.execute(f'SELECT count(*) FROM "{schema}"."{spec.target.table}" WHERE last_run_id = %s',
                                  [REPLAY_RUN_ID]).fetchone()
    return SimpleNamespace(erp=outcome(m.target, spec), entries=entries, written=written)


REPLAYED_BY_RETRY = {"replay.before_load": 3, "replay.after_load": 0}  # what a kill there left open


def replay_case(m: Matrix, point: str, *, recovery: str = "retry", mechanism: str = "on",
                switched_off: str | None = None) -> tuple[dict, SimpleNamespace, dict | None]:
    """Kill the replay task at ``point``; recover (``retry``: Airflow's retry of the task, or
    ``none``); compare with one clean replay. Returns (the recorded row, the outcome, the retry's
    summary). Unequal as well when the retry replays entries the killed try had loaded."""
    clean = clean_replay(m)
    assert clean.summary["replayed_entries"] == 3 and clean.outcome.written == 3, clean.summary
    started = time.monotonic()
    spec = synced(m)
    code = killed_in_child(lambda: replay_task(spec).execute(context(REPLAY_RUN_ID)), point,
                           m.home / f"{point}.fired")
    retry = replay_task(spec).execute(context(REPLAY_RUN_ID)) if recovery == "retry" else None
    got = replay_outcome(m, spec)
    diff = differences(clean.outcome.erp, got.erp, spec.target.key)
    entries_equal = got.entries == clean.outcome.entries
    again = (retry or {}).get("replayed_entries", 0) - REPLAYED_BY_RETRY[point] if retry else 0
    note = f"the retry replayed {again} entries the killed try had loaded (loaded twice)" if again > 0 else None
    equal = (diff["equal"] and entries_equal and got.written == clean.outcome.written and again <= 0
             and recovery != "none")
    RESULTS.append({"point": point, "target": "postgres", "exit": code, "recovery": recovery,
                    "mechanism": mechanism, "switched_off": switched_off, "error": None, **diff,
                    "duplicated": diff["duplicated"] + max(again, 0), "quarantine_equal": entries_equal,
                    "quarantine_entries": sum(not e[4] for e in got.entries),
                    "clean_quarantine_entries": sum(not e[4] for e in clean.outcome.entries),
                    "note": note, "equal": equal, "seconds": time.monotonic() - started})
    return RESULTS[-1], got, retry


@pytest.mark.parametrize("point", REPLAY_POINTS)
def test_a_replay_killed_at_the_point_then_retried_equals_one_clean_replay(names_fixed, point):
    """The replay task killed before its load or after its committed load (before it returns), then
    retried: the ERP rows, the watermark and the quarantine equal one clean replay's, every entry
    replayed once, by the replay run (``replayed_by_run``), and its three records written once."""
    result, got, retry = replay_case(names_fixed, point)
    clean = names_fixed.replayed.outcome
    assert result["exit"] == -9, f"{point}: the replay was not killed there (exit {result['exit']})"
    assert result["equal"], result
    assert got.entries == clean.entries, (got.entries, clean.entries)
    assert [e[3:] for e in got.entries] == [(REPLAY_RUN_ID, True)] * 3
    assert got.written == 3
    # the retry replays what the kill left open: all three before the load, nothing after it
    replayed_by_retry = REPLAYED_BY_RETRY[point]
    assert (retry["open_entries"], retry["replayed_entries"]) == (replayed_by_retry, replayed_by_retry), retry


# --- the inline saga (conduit.saga.inline): the order saga of the nightly order batch --------------

SAGA_STEPS = ["inventory", "fraud", "payment", "shipping", "capture"]  # the steps whose action calls a service
ORDER_EFFECTS = {"reserve": 1, "score": 1, "authorize": 1, "create": 1, "capture": 1}  # one committed order
PARAMS = {"ship_within_s": 30, "ship_poll_s": 0.05}


@pytest.fixture(scope="module")
def sagas(pg_server_dsn):
    """The order services stand-in (its ledgers and idempotency keys) and a saga log in a fresh
    PostgreSQL schema, behind the connections the order steps' hooks read."""
    import psycopg

    from conduit.orders_standin.testing import run_order_services

    schema = f"saga_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        with pytest.MonkeyPatch.context() as mp, run_order_services(ship_after_s=0.1) as services:
            for name in ("inventory", "payment", "fraud", "shipping"):
                mp.setenv(f"AIRFLOW_CONN_{name.upper()}_DEFAULT", json.dumps({
                    "conn_type": "http", "host": services.base_url,
                    "extra": {"timeout": 2, "max_retries": 4, "backoff_max": 0.2}}))
            yield SimpleNamespace(services=services, dsn=pg_server_dsn, schema=schema)
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def saga_log(env):
    """A saga log of its own (each task process opens its connections; none crosses the fork)."""
    import psycopg
    import sqlalchemy

    from conduit.saga.log import SagaLog

    dsn, options = env.dsn, f"-csearch_path={env.schema}"
    log = SagaLog(sqlalchemy.create_engine("postgresql+psycopg://",
                                           creator=lambda: psycopg.connect(dsn, options=options)))
    log.ensure_schema()
    return log


def order_task(env, saga_id: str, *, kill_after: str | None = None) -> dict:
    """What the batch's per-order task and its teardown do (``InlineSagaOperator`` running
    ``process_order``, then ``InlineCompensationOperator``), on a saga the batch started; with
    ``kill_after``, the crash point is armed for that step's action only."""
    from conduit.crash import ARM
    from conduit.orders.flow import ORDER_COMPENSATIONS, process_order
    from conduit.saga.inline import InlineSaga, compensate

    class Saga(InlineSaga):
        def step(self, name, action, **kwargs):
            if kill_after:
                os.environ[ARM] = "saga.action_done" if name == kill_after else ""
            return super().step(name, action, **kwargs)

    log = saga_log(env)
    process_order(Saga(log, saga_id, context={"params": PARAMS}, final=lambda exc: False))
    saga, failed = compensate(log, saga_id, ORDER_COMPENSATIONS, final=True)
    assert not failed, failed
    return saga


def saga_state(env, saga_id: str, order_id: str) -> SimpleNamespace:
    """The saga log's final state (ids of the services' objects aside), the service effects of the
    order (ledger ops) and which logged result names which ledger object."""
    log = saga_log(env)
    saga = log.saga(saga_id)
    steps = [(s["step"], s["seq"], s["compensable"], s["action_status"], s["compensation_status"],
              sorted(s["result"] or {})) for s in log.steps(saga_id)]
    ledger = [(service, e) for service, entries in env.services.admin.ledger().items() for e in entries
              if e["order_id"] == order_id]
    effects: dict[str, int] = {}
    for _, entry in ledger:
        effects[entry["op"]] = effects.get(entry["op"], 0) + 1
    results = {s["step"]: s["result"] or {} for s in log.steps(saga_id)}
    ids = {op: results.get(step, {}).get(field) for op, step, field in (
        ("reserve", "inventory", "reservation_id"), ("authorize", "payment", "authorization_id"),
        ("create", "shipping", "shipment_id"))}
    return SimpleNamespace(saga=(saga["status"], saga["cause"]), steps=steps, effects=effects,
                           keys=[e["idempotency_key"] for _, e in ledger],
                           ids_match={op: any(e["op"] == op and e["object_id"] == i for _, e in ledger)
                                      for op, i in ids.items()})


def start_order(env, tag: str) -> tuple[str, str]:
    from conduit.orders.dag import EXAMPLE_ORDER

    order = {**EXAMPLE_ORDER, "order_id": f"CRASH-{tag}-{uuid.uuid4().hex[:6]}"}
    saga_id = f"order-{order['order_id']}"
    saga_log(env).start(saga_id, dag_id="order_fulfilment_nightly", run_id="scheduled__crash-matrix", payload=order)
    return saga_id, order["order_id"]


def saga_case(env, step: str, tmp_path: Path, *, mechanism: str = "on", switched_off: str | None = None):
    """Kill the order's task at ``saga.action_done`` of ``step``, retry it, compare with a clean
    order's saga. Returns (the recorded row, the outcome, the retry's saga row or None, the step
    statuses the kill left, requests answered from an idempotency key in between)."""
    clean_id, clean_order = start_order(env, "clean")
    order_task(env, clean_id)
    clean = saga_state(env, clean_id, clean_order)
    assert clean.saga == ("committed", None) and clean.effects == ORDER_EFFECTS, (clean.saga, clean.effects)

    started = time.monotonic()
    saga_id, order_id = start_order(env, step)
    replayed_before = env.services.admin.requests()
    code = killed_in_child(lambda: order_task(env, saga_id, kill_after=step), "saga.action_done",
                           tmp_path / "fired")
    killed_at = {s["step"]: s["action_status"] for s in saga_log(env).steps(saga_id)}
    saga, error = None, None
    try:
        saga = order_task(env, saga_id)  # Airflow's retry of the order's task
    except Exception as exc:  # noqa: BLE001 - a retry that fails loudly is a result too
        error = f"{type(exc).__name__} in the retry: {str(exc)[:100]}"
    got = saga_state(env, saga_id, order_id)
    replayed = _replayed(replayed_before, env.services.admin.requests())
    equal = error is None and (got.saga, got.steps, got.effects) == (clean.saga, clean.steps, clean.effects)
    RESULTS.append({"point": f"saga.action_done ({step})", "target": "saga", "exit": code, "recovery": "retry",
                    "mechanism": mechanism, "switched_off": switched_off, "error": error,
                    "rows": sum(got.effects.values()),
                    "lost": sum(max(0, n - got.effects.get(op, 0)) for op, n in clean.effects.items()),
                    "duplicated": sum(max(0, n - clean.effects.get(op, 0)) for op, n in got.effects.items()),
                    "watermark_equal": got.saga == clean.saga, "quarantine_equal": got.steps == clean.steps,
                    "note": None if got.saga == clean.saga else f"saga {got.saga[0]} (clean: {clean.saga[0]})",
                    "equal": equal, "seconds": time.monotonic() - started})
    return RESULTS[-1], got, (saga, clean), killed_at, replayed


@pytest.mark.parametrize("step", SAGA_STEPS)
def test_a_saga_killed_after_an_action_before_its_result_is_logged_then_resumed(sagas, step, tmp_path):
    """The order's task killed at ``saga.action_done`` of one step (the service acted, the log does
    not know), then retried: the step's action runs again with its idempotency key and the service
    answers with the first effect; each effect is in the ledgers once, and the saga log ends as a
    clean run's does (committed, every step succeeded, nothing compensated)."""
    result, got, (saga, clean), killed_at, replayed = saga_case(sagas, step, tmp_path)
    assert result["exit"] == -9, f"the order task was not killed after {step} (exit {result['exit']})"
    assert killed_at[step] == "running", killed_at  # the action took effect; the log did not hear of it
    assert result["error"] is None and saga["status"] == "committed", result
    assert got.effects == ORDER_EFFECTS, got.effects  # each effect once
    assert len(got.keys) == len(set(got.keys)), got.keys
    assert all(got.ids_match.values()), got.ids_match  # the logged results name the first effects
    assert (got.saga, got.steps) == (clean.saga, clean.steps), (got.steps, clean.steps)
    assert replayed >= 1, "the retried action was not answered from the idempotency key"


def _replayed(before: dict, after: dict) -> int:
    """Requests the services answered from an idempotency key (the first answer) in between."""
    def total(counts: dict) -> int:
        return sum(c.get("replayed", 0) for ops in counts.values() for c in ops.values())

    return total(after) - total(before)
