"""Issue 17, the crash matrix made to fail: every crash point of :mod:`conduit.crash` killed again,
this time with the one mechanism that makes a kill there harmless switched off, and the same
comparison with one clean run must come out UNEQUAL (rows lost or duplicated, the quarantine
doubled, the watermark ahead of the data, an effect twice, a run left unfinished).

Not collected by CI (the name does not start with ``test_``); run it on purpose::

    .venv/bin/pytest tests/reliability/mechanism_off.py -q -p no:cacheprovider

It prints a table at the end: crash point, the mechanism switched off, the recovery, what the
comparison found. Every switch-off is a monkeypatch applied in the test process before the task
process is forked (``killed_in_child``), so the killed task and its retry both run without the
mechanism. A switch-off changes nothing in a run without a kill: the clean run it is compared with
is the same code path minus the kill. (``load.end``: what can go wrong after the commit is a retry
that comes after a later run stored newer rows; the case writes such rows between the kill and the
retry, and runs once with the mechanism on as well, which must be equal.)

Where a kill cannot do harm by itself (a task's first line, a task that writes nothing the ERP
keeps), what makes it harmless is Airflow's retry
running the task again: switched off, the killed task stays failed and the tasks after it never
run (``none``), or, where the run could go on without the task's result, the killed task is taken
as succeeded and the run goes on with what it staged (``continue``). The table says which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import test_crash_matrix
import test_tryton_crash_points
from crash_helpers import commit_watermark_first
from test_crash_matrix import ALL_POINTS, REPLAY_POINTS, SAGA_STEPS, kill_and_retry, replay_case, saga_case
from test_tryton_crash_points import TRYTON_POINTS, tryton_case

# the fixtures the cases share with the crash matrix (pytest finds fixtures among a module's names)
matrix, names_fixed, sagas = test_crash_matrix.matrix, test_crash_matrix.names_fixed, test_crash_matrix.sagas
tryton_bench = test_tryton_crash_points.tryton_bench

pytestmark = pytest.mark.postgres


@dataclass(frozen=True)
class Switch:
    """A mechanism and how it is switched off: ``patch(monkeypatch)`` and the recovery to run."""

    mechanism: str
    recovery: str = "retry"
    patch: Callable[[pytest.MonkeyPatch], None] | None = None


def _appending_staging(monkeypatch: pytest.MonkeyPatch, *, dedup: bool) -> None:
    """A retried task's staged parts land beside the killed try's: folders are not emptied before
    they are written again and part numbers go on (``RunStaging.reset``/``writer`` off); with
    ``dedup=False`` the transform maps a record read twice twice (``dedup.superseded_reads`` off)."""
    from conduit.pipeline import dedup as dedup_module
    from conduit.pipeline.staging import PartWriter, RunStaging

    def keep(self, kind, partition=None):
        path = self.dir(kind, partition)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def appending_writer(self, kind, partition=None):
        writer = PartWriter(keep(self, kind, partition))
        writer.parts = len(list(writer.directory.glob("part-*.parquet")))
        return writer

    monkeypatch.setattr(RunStaging, "reset", keep)
    monkeypatch.setattr(RunStaging, "writer", appending_writer)
    if not dedup:
        monkeypatch.setattr(dedup_module, "superseded_reads", lambda staging, modified_property: {})


def _quarantine_without_once_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quarantine table without its unique index ``once_per_record``: ``ON CONFLICT DO NOTHING``
    has nothing to conflict with, a retried gate inserts its findings again."""
    from conduit.targets import sql_render

    create = sql_render.create_quarantine_table
    monkeypatch.setattr(sql_render, "create_quarantine_table", lambda d, schema: create(d, schema)[:1])


def _overwrite_whatever_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """The upsert overwrites a stored row with the staged one whatever their versions (its
    ``WHERE`` "incoming newer, or as new with other content" gone)."""
    from conduit.targets import sql_render

    monkeypatch.setattr(sql_render, "_overwrites", lambda incoming, stored: "true")


LATER = 10  # rows a later run wrote newer versions of, between the kill and the retry


def a_later_run_meanwhile(m):
    """``between`` for load.end: before the retry comes, a later run (or a webhook-triggered one)
    stores newer versions of ten of this run's rows. What the retry must leave: the clean run's
    ERP with those ten rows as the later run wrote them."""
    import pandas as pd
    import psycopg
    from crash_helpers import RUN_ID, Outcome, outcome

    def between(spec):
        table, key = f'"{spec.target.db_schema}"."{spec.target.table}"', spec.target.key
        with psycopg.connect(m.dsn) as conn:
            keys = [r[0] for r in conn.execute(
                f'SELECT "{key}" FROM {table} WHERE last_run_id = %s AND active ORDER BY 1 LIMIT {LATER}',
                [RUN_ID]).fetchall()]
            conn.execute(f"UPDATE {table} SET full_name = full_name || ' (later)', "
                         "source_modified_at = source_modified_at + interval '1 minute', "
                         f"last_run_id = 'scheduled__later' WHERE \"{key}\" = ANY(%s)", [keys])
        assert len(keys) == LATER, keys
        later = outcome(m.target, spec).rows
        rows = pd.concat([m.clean.rows[~m.clean.rows[key].isin(keys)], later[later[key].isin(keys)]])
        rows = rows.sort_values(key, kind="stable").reset_index(drop=True)
        return Outcome(rows, m.clean.watermark, m.clean.quarantine)

    return between


def _replay_marks_after_the_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay loads the records, then marks their entries replayed in a transaction of its own
    (after ``replay.after_load``), instead of in the load's transaction."""
    from conduit import crash
    from conduit.pipeline import replay
    from conduit.targets.sql import SqlErpTarget

    load, pending = SqlErpTarget.load, []

    def load_without_marks(self, spec, batches, *, replayed_quarantine_ids=(), **kwargs):
        result = load(self, spec, batches, **kwargs)
        pending[:] = [(self, spec, kwargs["run_id"], list(replayed_quarantine_ids))]
        return result

    def point_then_marks(name: str) -> None:
        crash.crash_point(name)
        if name == "replay.after_load":
            for target, spec, run_id, ids in pending:
                target.mark_replayed(spec, ids, run_id=run_id)
            pending.clear()

    monkeypatch.setattr(SqlErpTarget, "load", load_without_marks)
    monkeypatch.setattr(replay, "crash_point", point_then_marks)


def _idempotency_key_per_try(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each try of a step calls the service with a key of its own (the process id appended), as a
    key drawn at random per call would be: the service cannot tell a retry from a new request."""
    import os

    from conduit.hooks.order_services import OrderServiceHook

    call = OrderServiceHook.call

    def call_with_a_fresh_key(self, method, path, *, idempotency_key=None, **kwargs):
        key = f"{idempotency_key}:try-{os.getpid()}" if idempotency_key else None
        return call(self, method, path, idempotency_key=key, **kwargs)

    monkeypatch.setattr(OrderServiceHook, "call", call_with_a_fresh_key)


def _tryton_not_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Tryton load decides create or update without reading the parties Tryton holds."""
    from conduit.targets.tryton import TrytonTarget

    monkeypatch.setattr(TrytonTarget, "_parties", lambda self, spec, codes: {})


RETRY = "Airflow's retry runs the killed task again"
NO_RETRY = Switch(f"{RETRY} (switched off: no retry, the run stops there)", "none")
NO_RETRY_CONTINUE = Switch(f"{RETRY}, never past it (switched off: the run goes on without it)", "continue")
STAGING_RESET = Switch("a retried task empties its staging folder before writing (switched off: appends)",
                       patch=lambda mp: _appending_staging(mp, dedup=True))
STAGING_RESET_AND_DEDUP = Switch("the item's folder emptied on retry + dedup of a record read twice (both off)",
                                 patch=lambda mp: _appending_staging(mp, dedup=False))
QUARANTINE_ONCE = Switch("the quarantine keeps a finding once per run (unique index dropped)",
                         patch=_quarantine_without_once_per_run)
WATERMARK_WITH_ROWS = Switch("the watermark commits with the rows (committed first, on its own)", "rerun",
                             patch=commit_watermark_first)

SWITCHES: dict[str, Switch] = {
    "plan_extract.start": NO_RETRY,
    "plan_extract.end": NO_RETRY,  # the plan is the XCom every later task reads: nothing goes on without it
    "extract.start": NO_RETRY_CONTINUE,
    "extract.between_pages": NO_RETRY_CONTINUE,  # the point fires on the first page: nothing staged yet
    "extract.between_parts": STAGING_RESET_AND_DEDUP,
    "extract.end": STAGING_RESET_AND_DEDUP,
    "transform.start": NO_RETRY_CONTINUE,
    "transform.between_batches": STAGING_RESET,
    "transform.end": STAGING_RESET,
    "quality_gate.start": NO_RETRY_CONTINUE,
    "quality_gate.quarantined": QUARANTINE_ONCE,
    "quality_gate.end": QUARANTINE_ONCE,
    "plan.start": NO_RETRY,  # the plan's transaction is rolled back: nothing to harm, the load follows it
    "plan.end": NO_RETRY,
    "load.start": NO_RETRY,
    "load.before_copy": WATERMARK_WITH_ROWS,
    "load.mid_copy": WATERMARK_WITH_ROWS,
    "load.after_copy": WATERMARK_WITH_ROWS,
    "load.after_merge": WATERMARK_WITH_ROWS,
    "load.before_commit": WATERMARK_WITH_ROWS,
    # committed: the retry re-applies the run's staged rows, perhaps after a later run stored newer ones
    "load.end": Switch("the upsert writes only versions newer than the stored ones (switched off: "
                       "any version)", patch=_overwrite_whatever_the_version),
    "reconcile.start": NO_RETRY,
    "reconcile.before_staging_removal": NO_RETRY,
    "reconcile.end": NO_RETRY,
    "replay.before_load": NO_RETRY,
    "replay.after_load": Switch("the replay closes its entries in the load's transaction "
                                "(switched off: closed after it)", patch=_replay_marks_after_the_load),
    "saga.action_done": Switch("each action carries its step's idempotency key on every try "
                               "(switched off: a key per try)", patch=_idempotency_key_per_try),
    "tryton.batch_written": Switch("the Tryton load reads back the parties Tryton holds before it "
                                   "creates (switched off)", patch=_tryton_not_read_back),
    "tryton.before_watermark": Switch("the Tryton load reads back the parties Tryton holds before it "
                                      "creates (switched off)", patch=_tryton_not_read_back),
}


STATE_MOVES = {"capture"}  # a service moves an object to a status; a repeat in that status is a no-op


@pytest.fixture(scope="module", autouse=True)
def _table(request):
    import crash_helpers

    if not request.config.pluginmanager.is_registered(crash_helpers):
        request.config.pluginmanager.register(crash_helpers, "crash_helpers")  # prints the table at the end


def switched(point: str, monkeypatch: pytest.MonkeyPatch) -> Switch:
    switch = SWITCHES[point]
    if switch.patch:
        switch.patch(monkeypatch)
    return switch


def test_every_crash_point_has_its_switch_off():
    from conduit import crash

    assert set(SWITCHES) == {*ALL_POINTS, *REPLAY_POINTS, "saga.action_done", *TRYTON_POINTS}
    for point in SWITCHES:
        assert f"\n{point} " in crash.__doc__, f"{point} is not in conduit.crash's table"


@pytest.mark.parametrize("point", ALL_POINTS)
def test_the_sync_killed_with_the_mechanism_off_is_unequal_to_one_clean_run(matrix, monkeypatch, point):
    switch = switched(point, monkeypatch)
    between = a_later_run_meanwhile(matrix) if point == "load.end" else None
    result = kill_and_retry(matrix, point, recovery=switch.recovery, mechanism="off",
                            switched_off=switch.mechanism, between=between)
    if between:
        result["note"] = f"the retry put this run's older versions over {result['lost']} newer rows of a later run"
    assert result["exit"] == -9, f"{point}: not killed there (exit {result['exit']})"
    assert not result["equal"], f"{point}: with '{switch.mechanism}' off the run still equals the clean run"


def test_a_retry_after_a_committed_load_leaves_a_later_runs_newer_rows(matrix):
    """The load.end case with the mechanism on: the same later run between the kill and the
    retry, and the retry leaves its ten newer rows alone (the comparison is equal)."""
    result = kill_and_retry(matrix, "load.end", between=a_later_run_meanwhile(matrix))
    assert result["exit"] == -9 and result["equal"], result


@pytest.mark.parametrize("point", REPLAY_POINTS)
def test_the_replay_killed_with_the_mechanism_off_is_unequal_to_one_clean_replay(names_fixed, monkeypatch, point):
    from test_crash_matrix import clean_replay

    clean_replay(names_fixed)  # the clean replay, with the mechanism on
    switch = switched(point, monkeypatch)
    result, _, _ = replay_case(names_fixed, point, recovery=switch.recovery, mechanism="off",
                               switched_off=switch.mechanism)
    assert result["exit"] == -9
    assert not result["equal"], result


@pytest.mark.parametrize("step", SAGA_STEPS)
def test_the_saga_killed_with_the_mechanism_off_is_unequal_to_a_clean_order(sagas, monkeypatch, tmp_path, step):
    """Four of the five steps: the retried action makes a second effect. ``capture`` moves an
    authorization to captured, and the payment service answers a capture of a captured
    authorization as a no-op repeat (no second ledger entry) whatever the key: a second mechanism,
    the service's, so that step stays equal with Conduit's key switched off, and the table says so."""
    switch = switched("saga.action_done", monkeypatch)
    result, *_ = saga_case(sagas, step, tmp_path, mechanism="off", switched_off=switch.mechanism)
    assert result["exit"] == -9
    if step in STATE_MOVES:
        result["note"] = "equal: the payment service captures an authorization once whatever the key"
        assert result["equal"], result
    else:
        assert not result["equal"], result


@pytest.mark.parametrize("point", TRYTON_POINTS)
def test_the_tryton_load_killed_with_the_mechanism_off_is_unequal_to_one_clean_load(tryton_bench, monkeypatch,
                                                                                      point):
    from test_tryton_crash_points import clean_outcome

    clean_outcome(tryton_bench)  # with the mechanism on
    switch = switched(point, monkeypatch)
    result = tryton_case(tryton_bench, point, mechanism="off", switched_off=switch.mechanism)
    assert result["exit"] == -9
    assert not result["equal"], result

