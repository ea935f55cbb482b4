"""Issue 3, exactly once: a load killed with SIGKILL mid-COPY and mid-transaction, then retried,
leaves the ERP exactly as one clean run; an old DAG run cleared and rerun loses no update.

The killed load runs in a child process on the operator's code path (``conduit.pipeline.steps.load``
with a PostgreSQL target from the DSN and staging prepared by the real extract + transform over
HTTP). Where it is stopped is checked in PostgreSQL itself (``pg_stat_activity``/``pg_locks`` of the
backend holding this table's load lock), not assumed from timing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from sync_helpers import (
    DAG_ID,
    assert_erp_equals_crm,
    crm_hook,
    crm_ids,
    crm_source,
    extract_and_transform,
    extract_summary,
    load,
    run_ok,
    settle,
    staging_dir,
)

from conduit.pipeline import steps
from conduit.pipeline.staging import RunStaging

pytestmark = pytest.mark.postgres

# The load step of ErpUpsertOperator in a child. With "copy" it hands the load the mapped rows in
# two halves and stalls between them: the COPY into the staging table is open and half written.
CHILD = r"""
import sys, time
from conduit.pipeline import steps
from conduit.pipeline.staging import RunStaging
from conduit.specs.model import load_spec
from conduit.targets.sql import PostgresErpTarget

dsn, spec_path, root, run_id, watermark_ms, stall = sys.argv[1:7]

class StallingStaging(RunStaging):
    def read_frames(self, kind, columns=None):
        for frame in super().read_frames(kind, columns):
            if kind != "mapped" or stall != "copy":
                yield frame
                continue
            half = len(frame) // 2
            yield frame.iloc[:half]
            print("copying", flush=True)
            time.sleep(600)
            yield frame.iloc[half:]

print("loading", flush=True)
result = steps.load(PostgresErpTarget(dsn), load_spec(spec_path), StallingStaging(root), run_id=run_id,
                    watermark_ms=int(watermark_ms))
print("loaded", result, flush=True)
"""

# the backend that holds this table's load lock (pg_advisory_xact_lock(hashtext(name))) and what it does
LOAD_BACKEND = """
SELECT a.pid, a.state, a.wait_event_type, a.query
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtext(%(lock)s)::bigint
"""


def in_schema(spec, schema: str):
    return spec.model_copy(update={"target": spec.target.model_copy(update={"db_schema": schema})})


def poll(fetch, done, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last: {value}"
        time.sleep(0.05)


class KilledLoad:
    """The load step in a child process, located in PostgreSQL, killed with SIGKILL."""

    def __init__(self, dsn, spec, spec_path, staging: RunStaging, summary, *, run_id: str, stall: str):
        self.dsn = dsn
        self.lock = f"conduit:load:{spec.target.db_schema}.{spec.target.table}"
        self.child = subprocess.Popen(
            [sys.executable, "-c", CHILD, dsn, str(spec_path), str(staging.root), run_id,
             str(summary["watermark_ms"]), stall],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def backend(self):
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(LOAD_BACKEND, {"lock": self.lock}).fetchone()
        return None if row is None else dict(zip(("pid", "state", "wait_event_type", "query"), row, strict=True))

    def wait_for(self, done, what: str) -> dict:
        def fetch():
            assert self.child.poll() is None, f"the load ended: {self.child.communicate()}"
            return self.backend()

        return poll(fetch, lambda b: b is not None and done(b), what)

    def kill(self) -> None:
        os.kill(self.child.pid, signal.SIGKILL)
        assert self.child.wait(30) == -signal.SIGKILL

    def close(self) -> None:
        if self.child.poll() is None:
            self.child.kill()
        self.child.communicate()


def table_locks(dsn, pid: int, relation: str) -> set[str]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT mode FROM pg_locks WHERE pid = %s AND relation = %s::regclass",
                            (pid, relation)).fetchall()
    return {r[0] for r in rows}


def comparable(target, spec) -> pd.DataFrame:
    rows = target.fetch_rows(spec)
    columns = [*spec.columns, "source_modified_at", "row_hash", "active", "last_run_id"]
    frame = rows[columns].copy()
    frame["deleted"] = rows["deleted_at"].notna()
    return frame.reset_index(drop=True)


def test_kill_9_mid_copy_and_mid_transaction_then_the_retry_equals_a_clean_run(
        sync_env, pg_schema, pg_server_dsn, tmp_path):
    import psycopg

    spec, target, crm, hook = sync_env.spec(), sync_env.target(), sync_env.crm, crm_hook()
    first = staging_dir(tmp_path, "first")
    s1 = extract_and_transform(hook, target, spec, first, full=True)
    load(target, spec, first, s1, run_id="first")
    # what the second run brings: updates, new contacts and archived ones
    ids = crm_ids(spec, hook)
    past = crm.admin.clock_ms() - 120_000
    crm.admin.bulk_modify(ids=ids[:300], properties={"company": "Crash Test AG"}, lastmodifieddate_ms=past)
    for i in range(20):
        crm.admin.create({"email": f"new{i}@example.com", "firstname": f"New{i}", "lastname": "Kill",
                          "country": "Germany"}, createdate_ms=past, lastmodifieddate_ms=past + i)
    for record_id in ids[300:305]:
        crm.admin.archive(record_id)
    second = staging_dir(tmp_path, "second")
    s2 = extract_and_transform(hook, target, spec, second)
    assert (s2["mode"], s2["rows"], s2["archived"]) == ("incremental", 320, 5)
    before, watermark_before = target.fetch_rows(spec), target.read_watermark(spec)
    table = f'"{spec.target.db_schema}".{spec.target.table}'

    # 1. killed while the COPY into the staging table runs
    killed = KilledLoad(pg_server_dsn, spec, sync_env.spec_path, second, s2, run_id="second", stall="copy")
    try:
        assert killed.child.stdout.readline() == "loading\n"
        assert killed.child.stdout.readline() == "copying\n", killed.child.stderr.read()
        backend = killed.wait_for(lambda b: b["query"].lstrip().upper().startswith("COPY"), "the COPY")
        assert backend["state"] == "active"
        killed.kill()
    finally:
        killed.close()
    pd.testing.assert_frame_equal(target.fetch_rows(spec), before)
    assert target.read_watermark(spec) == watermark_before

    # 2. killed after the upsert and the deletes, before the commit: this session holds the
    # watermark row, so the load's transaction stays open at its watermark statement
    with psycopg.connect(pg_server_dsn) as blocker:
        blocker.execute(f'SELECT 1 FROM "{spec.target.db_schema}".conduit_sync_state WHERE sync_name = %s FOR UPDATE',
                        (spec.name,)).fetchone()
        killed = KilledLoad(pg_server_dsn, spec, sync_env.spec_path, second, s2, run_id="second", stall="none")
        try:
            backend = killed.wait_for(
                lambda b: b["wait_event_type"] == "Lock" and "conduit_sync_state" in b["query"], "the commit step")
            assert "RowExclusiveLock" in table_locks(pg_server_dsn, backend["pid"], table)  # the upsert ran
            pd.testing.assert_frame_equal(target.fetch_rows(spec), before)  # and is not visible
            killed.kill()
        finally:
            killed.close()
        blocker.rollback()
    pd.testing.assert_frame_equal(target.fetch_rows(spec), before)
    assert target.read_watermark(spec) == watermark_before

    # 3. the retry (waits for the killed sessions' lock to go), against one clean run elsewhere
    retried = load(target, spec, second, s2, run_id="second")
    assert (retried.inserted, retried.updated, retried.deleted, retried.stale_skipped) == (20, 300, 5, 0)
    clean_spec = in_schema(spec, pg_schema)  # a clean run's own fresh schema
    target.ensure_ready(clean_spec)
    load(target, clean_spec, first, s1, run_id="first")
    clean = load(target, clean_spec, second, s2, run_id="second")
    assert clean == retried

    pd.testing.assert_frame_equal(comparable(target, spec), comparable(target, clean_spec))
    assert target.count(spec, active_only=False) == target.count(clean_spec, active_only=False) == len(ids) + 20
    assert target.key_checksum(spec) == target.key_checksum(clean_spec)
    assert target.read_watermark(spec) == target.read_watermark(clean_spec)
    assert target.read_watermark(spec).ts_ms == s2["watermark_ms"]
    assert_erp_equals_crm(target, spec, hook)


def run_keeping_staging(env):
    """A real DAG run whose reconcile keeps the staged files (``ReconcileOperator(keep_staging=True)``),
    so the run's load can be rerun later with the data it staged then."""
    dag = env.dag()
    dag.task_dict["reconcile"].keep_staging = True
    dag_run = run_ok(env, dag)
    return dag_run, RunStaging.for_run(DAG_ID, dag_run.run_id), extract_summary(dag_run)


def test_clearing_and_rerunning_an_old_run_loses_no_update(sync_env):
    sync_env.edit_spec(source__cursor__lag_seconds=1)  # changes are stamped "now"
    spec, target, crm = sync_env.spec(), sync_env.target(), sync_env.crm
    run_ok(sync_env)
    ids = crm_ids(spec)[:10]
    crm.admin.bulk_modify(ids=ids, properties={"company": "Version A"})
    settle(crm, spec)
    run_a, staging_a, extract_a = run_keeping_staging(sync_env)
    assert staging_a.count("mapped") == 10
    watermark_a = target.read_watermark(spec)

    crm.admin.bulk_modify(ids=ids, properties={"company": "Version B"})
    settle(crm, spec)
    run_ok(sync_env)  # run B
    watermark_b = target.read_watermark(spec)
    assert watermark_b > watermark_a
    after_b = target.fetch_rows(spec)
    assert (after_b.set_index("customer_number").loc[[f"HS-C-{i}" for i in ids], "company_name"] == "Version B").all()

    # Run A's load cleared and rerun: ErpUpsertOperator's step with A's run id, staged rows and plan
    stale = steps.load(target, spec, staging_a, run_id=run_a.run_id, watermark_ms=extract_a["watermark_ms"])
    assert (stale.inserted, stale.updated, stale.deleted, stale.stale_skipped) == (0, 0, 0, 10)
    pd.testing.assert_frame_equal(target.fetch_rows(spec), after_b)  # not even an audit column moved
    assert target.read_watermark(spec) == watermark_b  # never backwards
    # ... and A's reconcile, rerun after it, finds nothing wrong
    steps.reconcile(crm_source(spec), target, spec, staging_a, upper_ms=extract_a["watermark_ms"])

    # Run A cleared as a whole and rerun (same run id: every task again, reading the CRM as it is now)
    rerun = run_ok(sync_env, logical_date=run_a.logical_date, run_after=run_a.run_after)
    assert rerun.run_id == run_a.run_id
    assert target.read_watermark(spec) >= watermark_b
    got = assert_erp_equals_crm(target, spec)
    assert (got.set_index("customer_number").loc[[f"HS-C-{i}" for i in ids], "company_name"] == "Version B").all()


def test_rerunning_an_old_load_keeps_a_record_restored_since(sync_env):
    """Run A soft-deletes an archived record; it is restored and run B reactivates it. Rerunning
    A's load with A's staged archive list must not delete it again (the restore is newer)."""
    sync_env.edit_spec(source__cursor__lag_seconds=1)
    spec, target, crm = sync_env.spec(), sync_env.target(), sync_env.crm
    run_ok(sync_env)
    restored = crm_ids(spec)[7]
    crm.admin.archive(restored)
    run_a, staging_a, extract_a = run_keeping_staging(sync_env)
    assert not bool(target.fetch_rows(spec, keys=[f"HS-C-{restored}"])["active"].iloc[0])

    crm.admin.restore(restored)
    settle(crm, spec)
    run_ok(sync_env)  # run B
    assert bool(target.fetch_rows(spec, keys=[f"HS-C-{restored}"])["active"].iloc[0])
    watermark_b = target.read_watermark(spec)

    stale = steps.load(target, spec, staging_a, run_id=run_a.run_id, watermark_ms=extract_a["watermark_ms"])

    assert stale.deleted == 0
    assert bool(target.fetch_rows(spec, keys=[f"HS-C-{restored}"])["active"].iloc[0])
    assert target.read_watermark(spec) == watermark_b
    assert_erp_equals_crm(target, spec)
