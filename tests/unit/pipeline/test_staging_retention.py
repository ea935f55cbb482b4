"""Staged files of runs that never reached reconcile (failed, plan only, rejected) hold CRM
records, personal data: plan_extract removes those of the DAG's runs not written to for
CONDUIT_STAGING_RETENTION_DAYS (default 7). Real files on disk, real staging writers."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pyarrow as pa
import pytest

from conduit.pipeline.staging import RunStaging, last_written, staging_retention_s, sweep_stale_runs

DAY = 86_400.0
NOW = 1_800_000_000.0


def staged_run(base, run_id: str, *, written_at: float, dag_id: str = "crm_sync") -> RunStaging:
    """A run folder as the extract leaves it (a published partition of raw/), every path dated."""
    staging = RunStaging.for_run(dag_id, run_id, base=base)
    staging.reset("raw")
    with staging.writer("raw", "range-0") as writer:
        writer.write(pa.table({"id": ["1", "2"], "email": ["a@example.com", "b@example.com"]}))
    for folder, dirs, files in os.walk(staging.root):
        for name in [*dirs, *files]:
            os.utime(os.path.join(folder, name), (written_at, written_at), follow_symlinks=False)
    os.utime(staging.root, (written_at, written_at))
    return staging


def test_runs_unwritten_for_longer_than_the_retention_are_removed_and_the_rest_kept(tmp_path):
    old = staged_run(tmp_path, "manual__failed_last_month", written_at=NOW - 30 * DAY)
    recent = staged_run(tmp_path, "manual__failed_yesterday", written_at=NOW - 1 * DAY)
    current = staged_run(tmp_path, "scheduled__now", written_at=NOW - 30 * DAY)  # this run: never

    removed = sweep_stale_runs(old.root.parent, keep=current.root.name, older_than_s=7 * DAY, now=NOW)

    assert removed == [old.root.name]
    assert not old.root.exists()
    assert recent.parts("raw") and current.parts("raw")


def test_a_part_written_lately_keeps_an_old_run(tmp_path):
    """A long run's folder is a month old, but a writer published a part into it just now."""
    run = staged_run(tmp_path, "manual__long", written_at=time.time() - 30 * DAY)
    with run.writer("raw", "range-1") as writer:
        writer.write(pa.table({"id": ["3"], "email": ["c@example.com"]}))

    assert time.time() - last_written(run.root) < DAY
    assert sweep_stale_runs(run.root.parent, keep="other", older_than_s=7 * DAY, now=time.time()) == []
    assert len(run.parts("raw")) == 2


def test_the_retention_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("CONDUIT_STAGING_RETENTION_DAYS", raising=False)
    assert staging_retention_s() == 7 * DAY
    monkeypatch.setenv("CONDUIT_STAGING_RETENTION_DAYS", "0.5")
    assert staging_retention_s() == 0.5 * DAY
    monkeypatch.setenv("CONDUIT_STAGING_RETENTION_DAYS", "0")
    assert staging_retention_s() is None  # kept for ever
    monkeypatch.setenv("CONDUIT_STAGING_RETENTION_DAYS", "a week")
    with pytest.raises(ValueError, match="CONDUIT_STAGING_RETENTION_DAYS must be a number of days, got 'a week'"):
        staging_retention_s()


def test_plan_extract_removes_the_stale_runs_of_its_own_dag(monkeypatch, tmp_path):
    from test_run_plan import SPEC, FakeSource, FakeTarget

    from conduit.operators.sync import CrmExtractPlanOperator

    monkeypatch.setenv("CONDUIT_STAGING_DIR", str(tmp_path))
    monkeypatch.delenv("CONDUIT_STAGING_RETENTION_DAYS", raising=False)
    op = CrmExtractPlanOperator(task_id="plan_extract", spec=SPEC, full_refresh=False)
    op.__dict__.update(erp_hook=SimpleNamespace(get_target=lambda: FakeTarget(None)), source=FakeSource())
    month_ago = time.time() - 30 * DAY
    stale = staged_run(tmp_path, "manual__stale", written_at=month_ago, dag_id=op.dag_id)
    other_dag = staged_run(tmp_path, "manual__stale", written_at=month_ago, dag_id="another_dag")

    op.execute({"dag_run": SimpleNamespace(run_type="manual", run_after=None), "run_id": "manual__now",
                "triggering_asset_events": None})

    assert not stale.root.exists() and other_dag.parts("raw")
    assert RunStaging.for_run(op.dag_id, "manual__now", base=tmp_path).root.is_dir()
