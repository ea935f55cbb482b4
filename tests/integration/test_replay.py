"""Quarantine replay end to end: the sync parks bad records through the real gate, the CRM data or
the mapping gets fixed, and the ``conduit_quarantine_replay`` DAG (dag.test(), stand-in CRM over
HTTP, a per-test PostgreSQL schema) loads the fixed records once and only once."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from sync_helpers import bad_email_ids, crm_ids, quarantine_table, seeded_mapped, xcom

from conduit.pipeline.replay import group_entries, revalidate, select_spec
from conduit.sources.hubspot.source import chunks

REPO = Path(__file__).resolve().parents[2]
REPLAY_DAG_ID = "conduit_quarantine_replay"


def run(dag, **conf):
    dag_run = dag.test(run_conf=conf)
    return dag_run, {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def run_sync(env):
    dag_run, states = run(env.dag(), full_refresh=False, dry_run=False)
    assert dag_run.state == "success", states
    return dag_run


def run_replay(env, *, dry_run=False) -> tuple[object, dict]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    dag_run, states = run(bag.dags[REPLAY_DAG_ID], sync=env.spec().name, dry_run=dry_run)
    assert dag_run.state == "success", states
    return dag_run, xcom(dag_run, "replay")


def replay_try(env, run_id: str, try_number: int, *, crash_at: str | None = None):
    """One try of the replay DAG's task for the run ``run_id``: the real operator, with Airflow's
    own outlet-event accessors. With ``crash_at`` the try runs in a forked task process that the
    crash point SIGKILLs (as the OOM killer would); returns (its exit code, None). Else
    (summary, the outlet events the try added)."""
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from conduit.crash import ARM, ONCE
    from conduit.operators.replay import QuarantineReplayOperator

    operator = QuarantineReplayOperator(task_id="replay", sync=env.spec().name,
                                        syncs_dir=str(env.include / "syncs"))
    outlets = OutletEventAccessors()
    context = {"run_id": run_id, "ti": SimpleNamespace(try_number=try_number), "outlet_events": outlets}
    if crash_at is None:
        summary = operator.execute(context)
        return summary, [event for key in outlets for event in outlets[key].asset_alias_events]
    pid = os.fork()
    if pid == 0:  # the task process: never returns into pytest
        os.environ[ARM], os.environ[ONCE] = crash_at, str(env.include / f"{crash_at}.fired")
        try:
            operator.execute(context)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), None



def active(env) -> pd.DataFrame:
    rows = env.target().fetch_rows(env.spec())
    return rows[rows["active"].astype(bool)].set_index("customer_number")


@pytest.mark.postgres
def test_replay_after_the_crm_is_fixed_loads_fixed_rows_once(sync_env):
    # rows that reject: the flagship's email ``on_invalid: null`` would load them as defects
    sync_env.edit_spec(mapping__email__transforms=[{"type": "email"}])
    crm = sync_env.crm
    crm.admin.reset(bad_emails=4)
    spec = sync_env.spec()
    fixed, still_bad, archived = (bad := bad_email_ids(spec, 4))[:2], bad[2], bad[3]
    run_sync(sync_env)
    assert sync_env.target().count(spec) == 596
    assert sorted(quarantine_table(sync_env)["crm_id"]) == sorted(bad)
    watermark = sync_env.target().read_watermark(spec)

    changed_ms = crm.admin.clock_ms() - 120_000  # inside the next incremental sync's window
    for crm_id in fixed:
        crm.admin.modify(crm_id, {"email": f"  Fixed.{crm_id}@Example.com "}, lastmodifieddate_ms=changed_ms)
    crm.admin.archive(archived)

    replay_run, summary = run_replay(sync_env)

    assert summary["dry_run"] is False
    assert (summary["open_entries"], summary["records"]) == (4, 4)
    assert (summary["replayed_records"], summary["replayed_entries"], summary["inserted"]) == (2, 2, 2)
    assert sorted(summary["replayed_ids"]) == sorted(fixed)
    assert summary["not_in_crm_ids"] == [archived]
    assert list(summary["still_failing_ids"]) == [still_bad]
    (reason,) = summary["still_failing_ids"][still_bad]
    assert reason.startswith("expect_column_values_to_match_regex(email): email ")
    rows = active(sync_env)
    assert len(rows) == 598
    for crm_id in fixed:
        assert rows.loc[f"HS-C-{crm_id}", "email"] == f"fixed.{crm_id}@example.com"  # mapped by the spec
        assert rows.loc[f"HS-C-{crm_id}", "last_run_id"] == replay_run.run_id
    assert sync_env.target().read_watermark(spec) == watermark  # the sync's cursor stays

    entries = quarantine_table(sync_env).set_index("crm_id")
    done = entries.loc[fixed]
    assert done["replayed_at"].notna().all()
    assert (done["replayed_by_run"] == replay_run.run_id).all()
    assert entries.loc[[still_bad, archived], "replayed_at"].isna().all()

    # a second replay finds nothing new to do: no row is written, no entry is marked again
    before = sync_env.target().fetch_rows(spec)[["customer_number", "updated_at", "last_run_id"]]
    _, again = run_replay(sync_env)
    assert (again["open_entries"], again["replayed_records"], again["inserted"], again["updated"]) == (2, 0, 0, 0)
    pd.testing.assert_frame_equal(sync_env.target().fetch_rows(spec)[["customer_number", "updated_at",
                                                                        "last_run_id"]], before)
    pd.testing.assert_frame_equal(quarantine_table(sync_env).set_index("crm_id").loc[fixed], done)

    # the next incremental sync reads the fixed records again and finds them already loaded
    sync_run = run_sync(sync_env)
    load = xcom(sync_run, "load")
    assert (load["inserted"], load["updated"]) == (0, 0)
    assert sync_env.target().count(spec) == 598


@pytest.mark.postgres
def test_replay_after_the_mapping_is_fixed_dry_run_first(sync_env):
    # a mapping bug: country names reach the ERP unconverted, so most rows break the ISO-2 check
    sync_env.edit_spec(mapping__country_code__transforms=[], quality__max_rejected_ratio=1.0)
    run_sync(sync_env)
    parked = quarantine_table(sync_env)
    assert set(parked["column_name"]) == {"country_code"}
    bad = sorted(set(parked["crm_id"]))
    assert len(bad) > 100  # more than one batch read
    loaded = 600 - len(bad)
    assert sync_env.target().count(sync_env.spec()) == loaded

    sync_env.edit_spec(mapping__country_code__transforms=[{"type": "country_iso2"}])  # the fix

    _, dry = run_replay(sync_env, dry_run=True)
    assert dry["dry_run"] is True
    assert (dry["replayed_records"], dry["inserted"], dry["still_failing"]) == (len(bad), len(bad), 0)
    assert sync_env.target().count(sync_env.spec()) == loaded  # rolled back, entries still open
    assert quarantine_table(sync_env)["replayed_at"].isna().all()

    replay_run, summary = run_replay(sync_env)
    assert (summary["replayed_records"], summary["inserted"], summary["not_in_crm"]) == (len(bad), len(bad), 0)
    entries = quarantine_table(sync_env)
    assert (entries["replayed_by_run"] == replay_run.run_id).all() and entries["replayed_at"].notna().all()
    spec = sync_env.spec()
    want = seeded_mapped(spec).set_index("customer_number").sort_index()
    got = active(sync_env).sort_index()
    assert got.index.tolist() == want.index.tolist()
    assert got["row_hash"].tolist() == want["row_hash"].tolist()  # exactly what a clean sync loads
    assert got["country_code"].dropna().isin(["US", "DE", "GB", "FR", "NL", "AT", "CH", "CA", "ES"]).all()

    _, again = run_replay(sync_env)
    assert (again["open_entries"], again["replayed_records"], again["inserted"]) == (0, 0, 0)


@pytest.mark.postgres
def test_a_replay_retried_after_its_committed_load_still_tells_downstream_dags(sync_env):
    """The replay task killed after its load committed (``replay.after_load``): the retry finds the
    entries closed and replays nothing, yet the ERP table did change in this run. Like the sync's
    load, the retry must still add the ERP table's asset event, or the DAGs scheduled on the table
    (the revenue ETL) never hear of the replayed records."""
    from conduit.lineage.assets import erp_table_asset

    sync_env.edit_spec(mapping__email__transforms=[{"type": "email"}])
    crm = sync_env.crm
    crm.admin.reset(bad_emails=2)
    spec = sync_env.spec()
    bad = bad_email_ids(spec, 2)
    run_sync(sync_env)
    for crm_id in bad:
        crm.admin.modify(crm_id, {"email": f"fixed.{crm_id}@example.com"},
                         lastmodifieddate_ms=crm.admin.clock_ms() - 120_000)
    run_id = "manual__replay-killed-after-load"

    assert replay_try(sync_env, run_id, 1, crash_at="replay.after_load") == (-9, None)
    entries = quarantine_table(sync_env).set_index("crm_id").loc[bad]
    assert (entries["replayed_by_run"] == run_id).all()  # the killed try's load committed
    assert set(active(sync_env).loc[[f"HS-C-{i}" for i in bad], "last_run_id"]) == {run_id}

    summary, events = replay_try(sync_env, run_id, 2)

    assert summary["replayed_records"] == 0  # nothing is replayed twice
    assert [(e.dest_asset_key.name, e.extra["run_id"]) for e in events] == [(erp_table_asset(spec).name, run_id)]

    # a retry whose earlier try never loaded anything tells nobody
    _, again = replay_try(sync_env, "manual__replay-nothing-to-do", 2)
    assert again == []


# --- the pure parts ---------------------------------------------------------------------------


def test_entries_group_by_crm_record_and_fall_back_to_the_raw_record_id():
    entries = [
        {"id": 1, "crm_id": "1001", "raw_record": {"id": "1001"}},
        {"id": 2, "crm_id": "1002", "raw_record": None},
        {"id": 3, "crm_id": "1001", "raw_record": {"id": "1001"}},  # a second finding / a later run
        {"id": 4, "crm_id": "<NA>", "raw_record": {"id": "1003"}},
        {"id": 5, "crm_id": None, "raw_record": None},
    ]
    by_record, unidentified = group_entries(entries)
    assert by_record == {"1001": [1, 3], "1002": [2], "1003": [4]}
    assert unidentified == [5]
    assert [len(c) for c in chunks([str(i) for i in range(250)])] == [100, 100, 50]


def test_revalidate_judges_each_row_and_ignores_row_counts():
    from conduit.quality.suite import parse_suite

    suite = parse_suite({"name": "t", "expectations": [
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "email", "regex": "@", "mostly": 0.5}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "key"}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "country", "value_set": ["DE"]},
         "severity": "warning"},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 100}},
    ]}, "t.yaml")
    frame = pd.DataFrame({"key": ["a", "b", "c", "c"], "email": ["x@y", "nope", "p@q", "r@s"],
                          "country": ["DE", "FR", "DE", "DE"]})
    failures = revalidate(frame, suite, "key")
    # row 1 breaks the regex although `mostly` lets the expectation pass; rows 2 and 3 share a key;
    # the warning-level country check and the row count keep nobody out
    assert sorted(failures) == [1, 2, 3]
    assert failures[1] == ["expect_column_values_to_match_regex(email): email 'nope' does not match @"]
    assert failures[2] == ["expect_column_values_to_be_unique(key): key 'c' occurs more than once"]


def test_an_unknown_sync_name_names_the_known_ones():
    from conduit.exceptions import SpecError
    from conduit.specs.model import load_specs

    with pytest.raises(SpecError, match="no sync spec is named 'nope'.*crm_to_erp_customer_sync"):
        select_spec(load_specs(REPO / "include" / "syncs"), "nope")


@pytest.mark.postgres
def test_a_record_the_mapping_rejects_stays_parked_until_the_crm_is_fixed(sync_env):
    """A column whose transform says ``on_invalid: reject`` keeps its record out through the field
    check the gate adds to the suite (``Suite.with_field_checks``), not through the suite itself.
    An e-mail the CRM holds with a NUL in it is damaged: the NUL is removed (PostgreSQL cannot
    hold it), the rest passes the suite's regex, and the field check rejects the record, as the
    spec says. The replay must judge with the same checks, or it loads the damaged address as
    if fixed and closes the record's entry."""
    sync_env.edit_spec(mapping__email__transforms=[{"type": "email", "on_invalid": "reject"}])
    crm = sync_env.crm
    spec = sync_env.spec()
    run_sync(sync_env)
    damaged = crm_ids(spec)[5:7]
    changed_ms = crm.admin.clock_ms() - 120_000
    for crm_id in damaged:
        crm.admin.modify(crm_id, {"email": f"ann\x00.{crm_id}@example.com"}, lastmodifieddate_ms=changed_ms)
    before = active(sync_env)[["email", "row_hash"]]
    run_sync(sync_env)
    parked = quarantine_table(sync_env)
    assert sorted(parked["crm_id"]) == sorted(damaged)
    assert set(parked["column_name"]) == {"email"}

    _, summary = run_replay(sync_env)  # nothing was fixed in the CRM

    assert (summary["replayed_records"], summary["inserted"], summary["updated"]) == (0, 0, 0)
    assert sorted(summary["still_failing_ids"]) == sorted(damaged)
    for reasons in summary["still_failing_ids"].values():
        assert [r.split(":")[0] for r in reasons] == ["email(email)"], reasons  # the field check, as the gate says
    pd.testing.assert_frame_equal(active(sync_env)[["email", "row_hash"]], before)  # the last good version stays
    assert quarantine_table(sync_env)["replayed_at"].isna().all()

    for crm_id in damaged:  # the CRM fixed: now the replay loads them
        crm.admin.modify(crm_id, {"email": f"ann.{crm_id}@example.com"}, lastmodifieddate_ms=changed_ms + 1)
    replay_run, fixed = run_replay(sync_env)
    assert (fixed["replayed_records"], fixed["updated"], fixed["still_failing"]) == (2, 2, 0)
    assert [active(sync_env).loc[f"HS-C-{i}", "email"] for i in damaged] == [f"ann.{i}@example.com" for i in damaged]
    assert (quarantine_table(sync_env)["replayed_by_run"] == replay_run.run_id).all()


@pytest.mark.postgres
def test_replayed_records_have_their_defects_recorded_as_the_sync_would(sync_env):
    """The gate records the defects of every row it loads (a junk phone the spec's
    ``on_invalid: null`` loads empty, say) in conduit_defects. A replay loads rows too: once the
    mapping is fixed, the CRM records it replays are not changed, so no later incremental sync
    reads them again, and a defect the replay does not record stays unknown until the next full
    read. Oracle: a full refresh right after the replay finds nothing new to record."""
    from conduit.targets.defects import read_defects

    sync_env.edit_spec(mapping__country_code__transforms=[], quality__max_rejected_ratio=1.0)
    sync_env.crm.admin.reset(junk_phones=0.1)
    run_sync(sync_env)
    spec = sync_env.spec()
    parked = set(quarantine_table(sync_env)["crm_id"])
    assert len(parked) > 100
    sync_env.edit_spec(mapping__country_code__transforms=[{"type": "country_iso2", "on_invalid": "null"}])

    _, summary = run_replay(sync_env)
    assert summary["replayed_records"] == len(parked)

    phone_defects = {d["crm_id"] for d in read_defects(sync_env.target(), spec, open_only=True)
                     if d["column_name"] == "phone"}
    assert phone_defects & parked, "the replayed records' junk phones are recorded"
    full = run_ok_full_refresh(sync_env)
    assert xcom(full, "quality_gate")["defects_opened"] == 0  # the replay left nothing unrecorded


def run_ok_full_refresh(env):
    dag_run, states = run(env.dag(), full_refresh=True, dry_run=False)
    assert dag_run.state == "success", states
    return dag_run
