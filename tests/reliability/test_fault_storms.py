"""Issue 17, fault storms: the CRM and the ERP misbehave during an incremental sync run (300 updated
and 20 new contacts since last night's full load of 600), run as its Airflow tasks with Airflow's
retries. Each storm ends in an ERP equal to one clean run's (rows, watermark, quarantine), or in a
loud failure naming the cause with the ERP as it was (never a partial load); then the next run,
the fault gone, leaves it equal to the clean run's.

The CRM's faults come from the stand-in's faults API (``conduit.standin.faults``), the ERP's from
PostgreSQL itself (a superuser terminating the load's backend, a session holding a table lock, a
statement timeout, a concurrent writer). The table is printed in the terminal summary.
"""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import urlsplit

import pytest
import storm_helpers
from crash_helpers import differences, outcome
from storm_helpers import record, run_with_retries, start_bench, stop_bench

pytestmark = pytest.mark.postgres
MODULE = "fault storms"


@pytest.fixture(scope="module")
def bench(pg_server_dsn, tmp_path_factory, request):
    if not request.config.pluginmanager.is_registered(storm_helpers):
        request.config.pluginmanager.register(storm_helpers, "storm_helpers")
    with pytest.MonkeyPatch.context() as mp:
        b = start_bench(pg_server_dsn, tmp_path_factory.mktemp("storms"), mp)
        try:
            yield b
        finally:
            b.crm.admin.clear_faults()
            stop_bench(b)


def storm(bench, name: str, *, faults: dict | None = None, fails: str | None = None, during=None) -> dict:
    """One storm: the run with the faults on (and Airflow's retries); if it fails, the ERP as before
    and the error naming ``fails``; then the next run without faults. Returns the table's row."""
    from airflow.sdk.exceptions import AirflowFailException

    spec = bench.erp(name)
    before = outcome(bench.target, spec)
    started = time.monotonic()
    if faults:
        bench.crm.admin.faults(**faults)
    errors, failed = [], None
    try:
        with during(spec) if during else _nothing():
            errors = run_with_retries(bench.run(spec, name))
    except (AirflowFailException, AssertionError) as exc:
        failed = f"{type(exc).__name__}: {exc}"
    finally:
        bench.crm.admin.clear_faults()
    sent = bench.crm.admin.stats()["sent"]
    if failed is None:
        diff = bench.compare(spec)
        row = record(MODULE, name, "exact" if diff["equal"] else "FAILED", diff, time.monotonic() - started,
                     f"{len(errors)} task retries; " + "; ".join(e[:60] for e in errors[:2]))
        assert fails is None, f"{name}: expected a loud failure naming {fails!r}, the run succeeded"
        assert diff["equal"], diff
        return {**row, "errors": errors, "sent": sent}
    untouched = differences(before, outcome(bench.target, spec), spec.target.key)
    assert fails is not None and fails in failed, f"{name}: {failed}"
    assert untouched["equal"], f"{name}: the failed run changed the ERP: {untouched}"
    run_with_retries(bench.run(spec, f"{name}-next"))  # the next run, the fault gone
    diff = bench.compare(spec)
    row = record(MODULE, name, "loud, next run exact" if diff["equal"] else "FAILED", diff,
                 time.monotonic() - started, failed[:200])
    assert diff["equal"], diff
    return {**row, "errors": [failed], "sent": sent}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --- the CRM -------------------------------------------------------------------------------------

SURVIVED = {
    "crm: 30% 5xx": {"server_errors": {"ratio": 0.3, "seed": 17}},
    "crm: 429 bursts, Retry-After 1s": {"rate_limit": {"burst": 2, "every": 5, "retry_after_s": 1}},
    "crm: read timeouts": {"body": [{"kind": "stall", "every": 3, "stall_ms": 900}]},
    "crm: connection reset mid-body": {"body": [{"kind": "reset", "every": 2}]},
    "crm: truncated JSON pages": {"body": [{"kind": "truncate", "every": 2}]},
    "crm: a record repeated across pages": {"body": [{"kind": "repeat_record", "every": 2}]},
    "crm: all transport faults at once": {"server_errors": {"ratio": 0.15, "seed": 3},
                                          "rate_limit": {"every": 7, "retry_after_s": 0},
                                          "body": [{"kind": "reset", "every": 5}, {"kind": "truncate", "every": 4},
                                                   {"kind": "stall", "every": 6, "stall_ms": 900}]},
}


@pytest.mark.parametrize("name", list(SURVIVED))
def test_a_crm_storm_is_survived_exactly(bench, name):
    row = storm(bench, name, faults=SURVIVED[name])
    spoiled = {k: v for k, v in row["sent"].items() if k != "200"}
    assert spoiled, f"{name}: no fault fired"
    if "429" in name:
        assert row["seconds"] >= spoiled.get("429", 0) * 1.0 - 1  # Retry-After was waited for


LOUD = {
    # a page that is not JSON (an HTML error page answered 200): the request is wrong, not the network
    "crm: malformed page (HTML, 200)": ({"body": [{"kind": "malformed", "burst": 1}]}, "unreadable response body"),
    # values of the wrong JSON type: the contract is broken; the error names the field
    "crm: records with wrong types": ({"body": [{"kind": "wrong_types", "every": 2}]}, "properties."),
}


@pytest.mark.parametrize("name", list(LOUD))
def test_a_crm_page_off_the_contract_fails_loudly_and_the_next_run_repairs(bench, name):
    faults, cause = LOUD[name]
    storm(bench, name, faults=faults, fails=cause)


def test_a_page_whose_records_lack_properties_never_loads_them_empty(bench):
    """Records without ``properties`` (no timestamp, no name): the window's cursor cannot place them,
    so the extract fails (every try) and nothing loads; last night's rows are never overwritten
    with nulls. The extract fails at once (``CrmContractError``, no retry), naming the record. The
    next run, the CRM answering properly again, repairs."""
    storm(bench, "crm: records without properties", faults={"body": [{"kind": "no_properties", "every": 2}]},
          fails="has no readable lastmodifieddate")


def test_timestamps_in_the_future_are_loaded_once_their_time_comes(bench):
    """Five contacts modified 'an hour from now' (a CRM clock ahead of ours): tonight's window ends
    before them, so they wait (nothing else changes: the run equals the clean run) and are not lost:
    the watermark stays behind them, and the run an hour later loads them."""
    from conduit.operators import sync as sync_operators

    started = time.monotonic()
    future = bench.start_ms + 3_600_000
    ids = bench.ids[UPDATED_PLUS:UPDATED_PLUS + 5]
    for i, record_id in enumerate(ids):
        bench.crm.admin.modify(record_id, {"lastname": f"Future{i}"}, lastmodifieddate_ms=future + i)
    spec = bench.erp("future")
    run_with_retries(bench.run(spec, "future"))
    tonight = bench.compare(spec)
    assert tonight["equal"], tonight
    later = (future + 5 + spec.source.cursor.lag_seconds * 1000 + 1000) / 1000
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sync_operators, "time", type("T", (), {"time": staticmethod(lambda: later)}))
        run_with_retries(bench.run(spec, "future-later"))
    rows = bench.target.fetch_rows(spec, keys=[f"HS-C-{i}" for i in ids])
    assert sorted(rows["last_name"]) == [f"Future{i}" for i in range(5)], rows
    others = differences(bench.clean, outcome(bench.target, spec), spec.target.key)
    record(MODULE, "crm: timestamps in the future", "exact, loaded later" if tonight["equal"] else "FAILED",
           tonight, time.monotonic() - started, f"5 future records loaded by the run after their time; "
                                                f"{others['lost']} rows differ from tonight's clean run (those 5)")
    assert others["lost"] == 5 and others["duplicated"] == 0


UPDATED_PLUS = 400  # contacts neither updated nor new in the run (ids[400:])


# --- the ERP -------------------------------------------------------------------------------------

LOAD_BACKEND = """
SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtext(%(lock)s)::bigint
"""


class at_load_point:
    """Run ``action(spec)`` once, in the load, when it reaches ``point`` (inside its transaction)."""

    def __init__(self, point: str, action):
        self.point, self.action = point, action

    def __call__(self, spec):
        from conduit.targets import sql

        self.spec, self.fired, self.original = spec, 0, sql.crash_point
        return self

    def __enter__(self):
        from conduit.targets import sql

        def hook(name: str) -> None:
            if name == self.point and not self.fired:
                self.fired += 1
                self.action(self.spec)
            self.original(name)

        sql.crash_point = hook
        return self

    def __exit__(self, *exc):
        from conduit.targets import sql

        sql.crash_point = self.original
        return False


def test_the_load_backend_terminated_mid_load_retries_to_the_exact_erp(bench, pg_server_dsn):
    import psycopg

    def terminate(spec):
        lock = f"conduit:load:{spec.target.db_schema}.{spec.target.table}"
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            pids = [r[0] for r in conn.execute(LOAD_BACKEND, {"lock": lock}).fetchall()]
            assert len(pids) == 1, pids
            conn.execute("SELECT pg_terminate_backend(%s)", (pids[0],))

    row = storm(bench, "erp: backend terminated mid-load", during=at_load_point("load.after_copy", terminate))
    assert any("terminat" in e for e in row["errors"]), row["errors"]  # the retry's cause, in the log


def _holding_lock(dsn: str, release_after: float | None):
    """A session holding ACCESS EXCLUSIVE on the customer table while the run runs."""

    class Hold:
        def __call__(self, spec):
            self.table = f'"{spec.target.db_schema}"."{spec.target.table}"'
            return self

        def __enter__(self):
            import psycopg

            self.conn = psycopg.connect(dsn)
            self.conn.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
            if release_after is not None:
                self.timer = threading.Timer(release_after, self.conn.rollback)
                self.timer.start()
            return self

        def __exit__(self, *exc):
            if release_after is not None:
                self.timer.join()
            self.conn.close()
            return False

    return Hold()


@pytest.fixture
def short_lock_timeout(monkeypatch):
    from conduit.targets.sql import PostgresErpTarget

    monkeypatch.setattr(PostgresErpTarget, "lock_timeout_ms", 1000)


def test_a_table_lock_held_too_long_fails_loudly_on_the_lock_timeout(bench, pg_server_dsn, short_lock_timeout):
    """Another session holds the table (ACCESS EXCLUSIVE) through every try: each try gives up after
    the target's lock_timeout (retryable), the run fails naming it, and the ERP is as it was."""
    row = storm(bench, "erp: table locked by another session", during=_holding_lock(pg_server_dsn, None),
                fails="lock timeout")
    assert "canceling statement due to lock timeout" in row["errors"][0]


def test_a_table_lock_released_within_the_lock_timeout_is_waited_for(bench, pg_server_dsn, monkeypatch):
    from conduit.targets.sql import PostgresErpTarget

    monkeypatch.setattr(PostgresErpTarget, "lock_timeout_ms", 5000)
    row = storm(bench, "erp: table locked briefly (0.5 s)", during=_holding_lock(pg_server_dsn, 0.5))
    assert row["errors"] == []


def test_a_statement_timeout_fails_the_load_loudly_and_the_next_run_repairs(bench, pg_server_dsn, monkeypatch):
    """Statements against the customer table take 0.3 s (a slow trigger); the ERP connection has a
    statement_timeout of 0.15 s. Every try is cancelled and rolled back; the run fails naming it."""
    import psycopg

    dsn = urlsplit(pg_server_dsn)
    timed = json.dumps({"conn_type": "postgres", "host": dsn.hostname, "port": dsn.port or 5432,
                        "login": dsn.username, "password": dsn.password or "", "schema": dsn.path.lstrip("/"),
                        "extra": {"options": "-c statement_timeout=150"}})

    class SlowErp:
        def __call__(self, spec):
            self.spec = spec
            return self

        def __enter__(self):
            table = f'"{self.spec.target.db_schema}"."{self.spec.target.table}"'
            with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
                conn.execute(f"CREATE FUNCTION \"{self.spec.target.db_schema}\".slow() RETURNS trigger "
                             "LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$")
                conn.execute(f"CREATE TRIGGER slow AFTER INSERT OR UPDATE ON {table} FOR EACH STATEMENT "
                             f"EXECUTE FUNCTION \"{self.spec.target.db_schema}\".slow()")
            monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", timed)
            return self

        def __exit__(self, *exc):
            monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", pg_server_dsn)
            return False

    storm(bench, "erp: statement_timeout", during=SlowErp(), fails="statement timeout")


def test_a_concurrent_writer_inserting_the_same_key_leaves_the_exact_erp(bench, pg_server_dsn):
    """While the load runs (rows staged, not merged), another session inserts and commits a row with
    the key of one of the run's new contacts: the merge takes it over with the CRM's values."""
    import psycopg

    def insert_same_key(spec):
        key_column, table = spec.target.key, f'"{spec.target.db_schema}"."{spec.target.table}"'
        committed = set(bench.target.fetch_rows(spec)[key_column])  # another session: last night's rows
        key = sorted(set(bench.clean.rows[key_column]) - committed)[0]  # one of the run's new contacts
        clean = f'"{bench.clean_spec.target.db_schema}"."{bench.clean_spec.target.table}"'
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:  # another ERP user's version of it
            conn.execute(f"INSERT INTO {table} SELECT * FROM {clean} WHERE {key_column} = %s", (key,))
            conn.execute(f"UPDATE {table} SET email = 'someone@else.example', row_hash = 'theirs', "
                         f"source_modified_at = source_modified_at - interval '1 day' WHERE {key_column} = %s",
                         (key,))

    row = storm(bench, "erp: concurrent writer, same key", during=at_load_point("load.after_copy", insert_same_key))
    assert row["exact"] and row["errors"] == []
