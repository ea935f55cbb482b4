"""A create or an update is two writes in two systems: the party in Tryton, then the sink ledger.
A task process killed with SIGKILL between them (crash points ``tryton.batch_written`` after a
batch of creates, ``tryton.batch_updated`` after a batch of updates) leaves Tryton written and the
ledger without the version written. Whatever runs next, not only the retry of the same load (a
deletion, a full refresh that does not bring the record, an older version of it), must leave
Tryton and the ledger exactly as after a clean write. Real trytond (SQLite)."""

from __future__ import annotations

import signal
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from test_tryton_target_delete_crash import killed, outcome, spec_with, target_at
from test_tryton_target_reactivation import party_rows

from conduit.specs.model import parse_spec
from conduit.targets import ledger

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OLDER = T0 + timedelta(days=1)  # newer than T0, older than the killed write's version
WRITTEN = T0 + timedelta(days=2)  # the version the killed load writes


# the sink ledger of deployments made before the pending writes (ledger.create_table as it was)
OLD_LEDGER_DDL = """CREATE TABLE {table} (
  sync_name text NOT NULL, record_key text NOT NULL, source_modified_at {ts}, active boolean NOT NULL,
  deleted_at {ts}, created_at {ts} NOT NULL, updated_at {ts} NOT NULL, last_run_id text,
  PRIMARY KEY (sync_name, record_key))"""


@pytest.fixture
def name() -> str:
    return f"t_{uuid.uuid4().hex[:8]}"


def before(spec, state, code: str, other: str, point: str) -> None:
    """What the sync holds before the killed load: ``other`` (and, for an update, ``code``) at T0."""
    target = target_at(state)
    target.ensure_ready(spec)
    rows = [party_rows(other, T0, "Other")]
    if point == "tryton.batch_updated":
        rows.append(party_rows(code, T0, "Old Name"))
    target.load(spec, rows, run_id="r1")


def write(spec, state, code: str) -> None:
    """The load that is killed: ``code`` in its version WRITTEN (created, or updated from T0)."""
    target_at(state).load(spec, [party_rows(code, WRITTEN, "Written Name")], run_id="r2")


# what runs after the write: (delete_mode it runs with, the load)
NEXT = {
    "the retry": lambda spec, t, code, other: t.load(spec, [party_rows(code, WRITTEN, "Written Name")], run_id="r2"),
    # gap 1: the ledger kept no version (a create) or the one before (an update)
    "a deletion": lambda spec, t, code, other: t.load(spec, [], run_id="r3", deleted_keys=[code]),
    # gap 1: the version decides whether an archive older than it deletes
    "archived before the written version": lambda spec, t, code, other: t.load(
        spec, [], run_id="r3", deleted_keys=[(code, OLDER)]),
    # gap 2: the key was not in the ledger, so the full refresh did not delete it
    "a full refresh without it": lambda spec, t, code, other: t.load(
        spec, [party_rows(other, T0, "Other")], run_id="r3", full_refresh=True),
    # gap 3: the ledger's version is what keeps older data from overwriting newer
    "an older version": lambda spec, t, code, other: t.load(spec, [party_rows(code, OLDER, "Older Name")],
                                                            run_id="r3"),
}
POINTS = ["tryton.batch_written", "tryton.batch_updated"]
CASES = ([(p, "soft", n) for p in POINTS for n in NEXT]
         + [(p, "hard", n) for p in POINTS for n in ("a full refresh without it", "a deletion")])


@pytest.mark.parametrize(("point", "mode", "then"), CASES)
def test_a_kill_between_a_write_and_its_ledger_then_the_next_load_equals_one_clean_run(
        name, tryton_hook, tmp_path, point, mode, then):
    """Before, the ledger learnt the written version only from a retry of the same load: a deletion
    recorded no version (or the one before the update), a full refresh left the created party
    active and out of the ledger for good, and an older version overwrote the newer data Tryton
    held."""
    spec = spec_with(name, mode)
    prefix = uuid.uuid4().hex[:6]
    results, outcomes, counts = {}, {}, {}
    for run in ("clean", "killed"):
        code, other, state = f"{prefix}-{run}", f"{prefix}-{run}-other", tmp_path / f"{run}.sqlite"
        before(spec, state, code, other, point)
        if run == "clean":
            write(spec, state, code)
        else:
            assert killed(point, tmp_path / "fired", write, spec, state, code) == -signal.SIGKILL, \
                f"not killed at {point}"
            left = outcome(tryton_hook, state, spec, code)
            # what the kill left: Tryton written, the ledger without the written version
            assert (left["parties"], left["active"], left["row"]["full_name"]) == (1, True, "Written Name")
            assert left["ledger"] == (None if point == "tryton.batch_written" else (T0, True, False))
        # what reconcile and the plan see of the sync before the next load (it counts the party)
        target = target_at(state)
        counts[run] = (target.count(spec), target.fetch_rows(spec, [code])["source_modified_at"].tolist())
        results[run] = NEXT[then](spec, target_at(state), code, other)
        outcomes[run] = outcome(tryton_hook, state, spec, code)

    assert outcomes["killed"] == outcomes["clean"], (point, mode, then)
    assert results["killed"] == results["clean"], (point, mode, then)
    assert counts["killed"] == counts["clean"], (point, mode, then)


def test_an_announced_write_tryton_does_not_hold_is_not_taken_as_made(name, tryton_hook, tmp_path):
    """A write announced and not made (the kill came before it, or Tryton refused it: the party
    keeps its old values): the next load settles it as not made, so an older version than the
    announced one, newer than the ledger's, is written, and the announcement goes. A refused
    update leaves no announcement behind."""
    spec = spec_with(name, "soft")
    code, other, state = f"{uuid.uuid4().hex[:6]}", f"{uuid.uuid4().hex[:6]}-other", tmp_path / "s.sqlite"
    before(spec, state, code, other, "tryton.batch_updated")
    refused = target_at(state).load(spec, [party_rows(code, WRITTEN, "Written Name", "not-an-email")], run_id="r2")
    assert refused.refused == 1
    assert outcome(tryton_hook, state, spec, code)["ledger"] == (T0, True, False)
    # an announcement a kill left behind, of a write Tryton does not hold
    ledger.record(target_at(state).state, spec.target.state_schema, spec.name, [], run_id="r2",
                  pending=[ledger.PendingWrite(code, WRITTEN, "not what Tryton holds")])
    assert target_at(state).load(spec, [party_rows(code, OLDER, "Older Name")], run_id="r3").updated == 1
    after = outcome(tryton_hook, state, spec, code)
    assert (after["row"]["full_name"], after["ledger"]) == ("Older Name", (OLDER, True, False))
    assert ledger.read_pending(target_at(state).state, spec.target.state_schema, spec.name) == {}


def test_a_ledger_made_before_the_pending_writes_keeps_every_entry(name, tryton_hook, tmp_path):
    """A state store whose ledger was made before announced writes existed (no pending table):
    ``ensure_ready`` adds the table, idempotently, keeps every ledger entry, and loads go on."""
    spec = spec_with(name, "soft")
    state = tmp_path / "old.sqlite"
    target = target_at(state)
    with sqlite3.connect(state) as conn:
        conn.execute(OLD_LEDGER_DDL.format(table='"conduit_sink_ledger"', ts="TEXT"))
    target.state.ensure_state(spec)  # what ensure_ready did before
    schema = spec.target.state_schema
    ledger.record(target.state, schema, spec.name, [
        ledger.LedgerEntry("kept-1", T0, True), ledger.LedgerEntry("kept-2", OLDER, False, WRITTEN)], run_id="old")
    tables = "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'conduit_sink_ledger%'"
    with sqlite3.connect(state) as conn:
        assert {r[0] for r in conn.execute(tables)} == {"conduit_sink_ledger"}
    entries = ledger.read(target.state, schema, spec.name)

    target.ensure_ready(spec)
    target.ensure_ready(spec)
    with sqlite3.connect(state) as conn:
        assert {r[0] for r in conn.execute(tables)} == {"conduit_sink_ledger", "conduit_sink_ledger_pending"}
    assert ledger.read(target.state, schema, spec.name) == entries
    code = f"{uuid.uuid4().hex[:6]}"
    assert target.load(spec, [party_rows(code, T0, "New")], run_id="r1").inserted == 1
    assert set(ledger.read(target.state, schema, spec.name)) == {"kept-1", "kept-2", code}
    assert ledger.read(target.state, schema, spec.name, ["kept-1", "kept-2"]) == entries



def test_a_run_whose_ensure_ready_ran_before_the_upgrade_still_loads(name, tryton_hook, tmp_path):
    """A run in flight when the deployment is upgraded: its ``plan_extract`` (``ensure_ready``) ran
    on the old code, so the pending table is missing when its plan and load run on the new code.
    They make the table themselves instead of failing the run."""
    spec = spec_with(name, "soft")
    state = tmp_path / "upgraded.sqlite"
    target = target_at(state)
    target.state.ensure_state(spec)  # what ensure_ready did before
    code = f"{uuid.uuid4().hex[:6]}"
    assert target_at(state).plan(spec, [party_rows(code, T0, "New")], run_id="r1").result.inserted == 1
    assert target_at(state).load(spec, [party_rows(code, T0, "New")], run_id="r1").inserted == 1
    assert target_at(state).count(spec) == 1

@pytest.mark.postgres
def test_on_a_postgresql_state_store_an_old_ledger_is_kept_and_a_killed_create_is_settled(
        name, tryton_hook, tmp_path, pg_server_dsn, pg_schema):
    """The same on PostgreSQL: a ledger made before the pending table keeps its entries through
    ``ensure_ready``; a create killed before its ledger write, then a deletion, records the
    deletion with the created version (before: no version)."""
    from conduit.hooks.tryton import TrytonHook
    from conduit.targets.sql import PostgresErpTarget
    from conduit.targets.tryton import TrytonTarget

    data = spec_with(name, "soft").model_dump(by_alias=True, exclude_none=True)
    data["target"]["state"] = {"conn_id": "unused", "schema": pg_schema}
    spec = parse_spec(data, "test.yaml")

    def target() -> TrytonTarget:
        return TrytonTarget(TrytonHook(tryton_conn_id="tryton_test"), PostgresErpTarget(pg_server_dsn))

    old = target()
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(OLD_LEDGER_DDL.format(table=f'"{pg_schema}".conduit_sink_ledger', ts="timestamptz"))
    old.state.ensure_state(spec)  # what ensure_ready did before
    ledger.record(old.state, pg_schema, spec.name, [ledger.LedgerEntry("kept-1", T0, True),
                                                    ledger.LedgerEntry("kept-2", OLDER, False, WRITTEN)], run_id="old")
    entries = ledger.read(old.state, pg_schema, spec.name)
    target().ensure_ready(spec)
    target().ensure_ready(spec)
    assert ledger.read(old.state, pg_schema, spec.name) == entries

    code = uuid.uuid4().hex[:8]
    assert killed("tryton.batch_written", tmp_path / "fired",
                  lambda: target().load(spec, [party_rows(code, WRITTEN, "Written Name")], run_id="r2")) \
        == -signal.SIGKILL
    assert code not in ledger.read(old.state, pg_schema, spec.name)
    assert set(ledger.read_pending(old.state, pg_schema, spec.name)) == {code}
    assert target().load(spec, [], run_id="r3", deleted_keys=[code]).deleted == 1
    assert ledger.read(old.state, pg_schema, spec.name)[code].source_modified_at == WRITTEN
    assert ledger.read(old.state, pg_schema, spec.name, ["kept-1", "kept-2"]) == entries
    assert ledger.read_pending(old.state, pg_schema, spec.name) == {}
