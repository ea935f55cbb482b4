"""Issue 17, concurrency: runs and workers of one sync at the same time, in separate processes, over
the same ERP. Loads of one sync (and a quarantine replay) serialise on the load's advisory lock
(``pg_advisory_xact_lock(hashtext('conduit:load:<schema>.<table>'))``); a second worker running the
same mapped extract tasks stages the same files. Each case ends with the ERP equal to one clean
run's (rows, watermark, quarantine). The run: ``storm_helpers`` (last night's full load, 300 updated
and 20 new contacts). The table is printed in the terminal summary.

The scheduler queueing a manual run behind a running one is Airflow's ``max_active_runs`` (the
factory sets 1): ``test_the_scheduler_queues_a_manual_run_behind_the_running_nightly_run`` drives
the scheduler's own dag-run steps on the session's metadata DB to show it; the target-level
serialisation above it is what holds if two runs overlap anyway.
"""

from __future__ import annotations

import os
import time
import traceback
from datetime import timedelta

import pytest
import storm_helpers
from storm_helpers import SUITE, UPDATED, record, start_bench, stop_bench

pytestmark = pytest.mark.postgres
MODULE = "concurrency"

LOCK_WAITERS = """
SELECT count(*) FILTER (WHERE l.granted), count(*) FILTER (WHERE NOT l.granted)
FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.objsubid = 1
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtext(%(lock)s)::bigint
"""


@pytest.fixture(scope="module")
def bench(pg_server_dsn, tmp_path_factory, request):
    if not request.config.pluginmanager.is_registered(storm_helpers):
        request.config.pluginmanager.register(storm_helpers, "storm_helpers")
    with pytest.MonkeyPatch.context() as mp:
        b = start_bench(pg_server_dsn, tmp_path_factory.mktemp("concurrency"), mp)
        try:
            yield b
        finally:
            stop_bench(b)


def fork(work, *, hold_at: str | None = None, hold_s: float = 0.0) -> int:
    """Run ``work()`` in a child process (a worker); with ``hold_at``, the child's load pauses there
    for ``hold_s`` seconds, its transaction and lock held. Returns the child's pid."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if hold_at:
                from conduit.targets import sql

                original = sql.crash_point

                def hold(name: str) -> None:
                    if name == hold_at:
                        time.sleep(hold_s)
                    original(name)

                sql.crash_point = hold
            work()
        except BaseException:  # noqa: BLE001 - reported through the exit code
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def lock_state(dsn: str, spec) -> tuple[int, int]:
    """(sessions holding the sync's load lock, sessions waiting for it)."""
    import psycopg

    lock = f"conduit:load:{spec.target.db_schema}.{spec.target.table}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(LOCK_WAITERS, {"lock": lock}).fetchone()


def wait_for(check, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def test_two_loads_of_one_sync_serialise_on_the_advisory_lock(bench, pg_server_dsn):
    """The nightly run loads (held 1.5 s inside its transaction, after the merge); a manual run of the
    same sync, in another process, reaches its plan and load meanwhile: it waits for the lock (seen
    waiting in pg_locks), then plans and loads against the committed nightly load: nothing to change."""
    started = time.monotonic()
    spec = bench.erp("two-loads")
    nightly, manual = bench.run(spec, "nightly"), bench.run(spec, "manual")
    nightly.run(stop_before="load")
    manual.run(stop_before="plan")  # extracted the same window, before the nightly committed
    a = fork(nightly.run, hold_at="load.after_merge", hold_s=1.5)
    wait_for(lambda: lock_state(pg_server_dsn, spec)[0] == 1, "the nightly load to hold the lock")
    b = fork(manual.run)
    waiting = wait_for(lambda: lock_state(pg_server_dsn, spec)[1] >= 1, "the manual run to wait for the lock")
    assert exit_code(a) == 0 and exit_code(b) == 0
    load = _xcom(manual, "load")
    diff = bench.compare(spec)
    record(MODULE, "two loads of one sync (2 processes)", "serialised, exact" if diff["equal"] else "FAILED", diff,
           time.monotonic() - started, f"manual run waited ({waiting} waiting); its load: {load}")
    assert diff["equal"], diff
    assert (load["inserted"], load["updated"]) == (0, 0), load


def test_two_workers_running_the_same_extract_tasks_at_once(bench):
    """A worker presumed lost and its replacement run the same mapped extract tasks at the same time
    (the CRM slowed so they overlap): the staged files are the same, and the run is exact."""
    started = time.monotonic()
    spec = bench.erp("two-workers")
    run = bench.run(spec, "two-workers")
    run.run(stop_before="extract")
    bench.crm.admin.faults(slow_ms=60)
    try:
        workers = [fork(lambda: run.run(stop_before="transform")) for _ in range(2)]
        codes = [exit_code(pid) for pid in workers]
    finally:
        bench.crm.admin.clear_faults()
    # Each writer stages its parts in a folder of its own and publishes the folder as the item's
    # partition in one rename (conduit.pipeline.staging.PartWriter): both workers complete, and
    # the partition is one worker's whole read, never a mix.
    assert codes == [0, 0], codes
    run.run()  # the retry of a worker that failed finds the item's XCom; the run goes on
    diff = bench.compare(spec)
    record(MODULE, "two workers, same extract tasks", "exact" if diff["equal"] else "FAILED", diff,
           time.monotonic() - started, f"worker exit codes {codes}; load: {_xcom(run, 'load')}")
    assert diff["equal"], diff


def test_a_quarantine_replay_during_the_sync_load_is_serialised_and_exact(bench, pg_server_dsn):
    """Three records sit in the quarantine (an earlier night's findings; the CRM has fixed them since).
    The replay starts while the sync's load holds the lock: it waits, then loads the three (already
    loaded by the sync: unchanged) and closes their entries. The ERP equals the clean run's and
    nothing stays open."""
    from conduit.pipeline.replay import replay
    from conduit.sources import source_for

    started = time.monotonic()
    spec = bench.erp("replay")
    crm_ids = bench.ids[UPDATED - 3:UPDATED]
    bench.target.quarantine(spec, [
        {"record_key": f"HS-C-{i}", "crm_id": i, "expectation": "expect_column_values_to_not_be_null",
         "column_name": "full_name", "reason": "full_name is null", "raw_record": {"id": i}} for i in crm_ids],
        run_id="scheduled__an-earlier-night")
    run = bench.run(spec, "replay-sync")
    run.run(stop_before="load")
    a = fork(run.run, hold_at="load.after_merge", hold_s=1.5)
    wait_for(lambda: lock_state(pg_server_dsn, spec)[0] == 1, "the sync's load to hold the lock")
    replay_started = time.monotonic()
    summary = replay(source_for(spec), bench.target, spec, SUITE, run_id="manual__replay")
    waited = time.monotonic() - replay_started
    assert exit_code(a) == 0
    diff = bench.compare(spec)
    open_entries = bench.target.open_quarantine(spec)
    record(MODULE, "quarantine replay during the load", "serialised, exact" if diff["equal"] else "FAILED", diff,
           time.monotonic() - started, f"replay waited {waited:.1f}s; {summary}")
    assert waited >= 0.5, "the replay did not wait for the sync's load"
    assert open_entries == [] and diff["equal"], (open_entries, diff)


def test_the_sync_dag_lets_one_run_at_a_time():
    """The manual run started while the nightly run loads is queued by Airflow (max_active_runs=1)."""
    from storm_helpers import SPEC_FILE

    from conduit.factory import build_sync_dag
    from conduit.specs.model import load_spec

    dag = build_sync_dag(load_spec(SPEC_FILE))
    assert dag.max_active_runs == 1


def test_the_scheduler_queues_a_manual_run_behind_the_running_nightly_run(airflow_db):
    """Airflow's own scheduler code (``SchedulerJobRunner._create_dagruns_for_dags`` and
    ``_start_queued_dagruns``, one scheduler loop's dag-run steps) on the session's metadata DB: the
    nightly run comes due and runs; a manual run triggered meanwhile (``trigger_dag``, what the UI
    and the REST API call) stays queued through later scheduler loops, and starts in the first loop
    after the nightly run ends."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils import timezone
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from airflow_runs import (
        dag_runs,
        forget_dag_runs,
        register_dags,
        scheduler_creates_and_starts_runs,
        set_paused,
    )
    from crash_helpers import DAG_ID
    from sqlalchemy import select

    started = time.monotonic()

    def forget_runs() -> None:  # other tests' runs of this DAG (dag.test(), the scheduler's) in this DB
        forget_dag_runs(DAG_ID)

    def states() -> dict[str, str]:
        return {r["run_id"]: (r["run_type"], r["state"]) for r in dag_runs(DAG_ID)}

    register_dags()  # as the dag-processor would
    forget_runs()
    # last night's 02:00 (Europe/Berlin) came due: what the scheduler set after the previous night
    now = timezone.utcnow()
    due = now.replace(hour=1, minute=0, second=0, microsecond=0)  # 02:00 CET in UTC
    due = due if due <= now - timedelta(minutes=1) else due - timedelta(days=1)
    with create_session() as session:
        model = session.get(DagModel, DAG_ID)
        assert model.max_active_runs == 1
        model.next_dagrun = due
        model.next_dagrun_data_interval = (due, due)
        model.next_dagrun_create_after = due
    set_paused(DAG_ID, False)
    try:
        scheduler_creates_and_starts_runs()  # the nightly run is created and started
        (nightly,) = [run_id for run_id, (kind, _) in states().items() if kind == DagRunType.SCHEDULED]
        assert states() == {nightly: (DagRunType.SCHEDULED, "running")}

        manual = trigger_dag(DAG_ID, triggered_by=DagRunTriggeredByType.REST_API, run_id="manual__while-nightly-runs",
                             conf={}).run_id
        for _ in range(2):  # later scheduler loops: the manual run waits for the nightly one
            scheduler_creates_and_starts_runs()
            assert states() == {nightly: (DagRunType.SCHEDULED, "running"), manual: (DagRunType.MANUAL, "queued")}

        with create_session() as session:  # the nightly run ends
            session.scalar(select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.run_id == nightly)).set_state(
                "success")
        scheduler_creates_and_starts_runs()
        assert states() == {nightly: (DagRunType.SCHEDULED, "success"), manual: (DagRunType.MANUAL, "running")}
    finally:
        set_paused(DAG_ID, True)
        forget_runs()  # no running run of this DAG is left for later tests' scheduler loops
    record(MODULE, "manual run during the nightly run", "queued, then ran", _no_rows(), time.monotonic() - started,
           "Airflow's scheduler (max_active_runs=1) on the metadata DB")


def _no_rows() -> dict:
    return {"rows": 0, "lost": 0, "duplicated": 0, "equal": True}


def _xcom(run, name: str):
    import json

    return json.loads((run.xcoms / f"{name}.json").read_text())

