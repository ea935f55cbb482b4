"""What Conduit's own tables keep of a record the CRM erased for good (GDPR erasure,
``contact.privacyDeletion``) or merged away: a webhook-started run that learns it is gone (the
``ids`` extract's :meth:`CrmSource.gone_records`) removes its raw CRM data from the quarantine and
the defects table in the same run, and closes those entries, so neither the health page nor the
quarantine replay shows it again. A dry run erases nothing; a record the CRM still has keeps its
entries.

Found: the run deleted the ERP rows, but the erased person's quarantine entries (the raw record:
name, email, phone) stayed open for ever and their defects (raw values) stayed open until a full
read: the gate did not count a gone record's defects as over.

The stand-in CRM over HTTP, PostgreSQL (the sync) and SQLite + PostgreSQL (the tables)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sync_helpers import crm_ids, crm_source, extract_and_map, quarantine_table, run_ok

from conduit.pipeline import steps
from conduit.quality.defects import Defect
from conduit.targets.defects import read_defects, record_defects

pytestmark = pytest.mark.postgres
ERASED_REASON = "erased in the CRM (gone for good: a GDPR erasure or merged away)"


def gate(env, staging, run_id: str, *, dry_run: bool = False) -> dict:
    spec = env.spec()
    _, decision, summary = steps.gate(env.target(), spec, staging, env.include / "expectations" / spec.quality.suite,
                                      run_id=run_id, full_extract=False, dry_run=dry_run)
    assert decision.load, decision.reason
    return summary


def entries_of(env, crm_id: str) -> list[dict]:
    """The quarantine's entries of a CRM record, open and closed (a missing value as None)."""
    table = quarantine_table(env).astype(object)
    table = table.where(table.notna(), None)
    return table[table["crm_id"] == crm_id].to_dict("records")


def defects_of(env, crm_id: str) -> list[dict]:
    return [d for d in read_defects(env.target(), env.spec()) if d["crm_id"] == crm_id]


def test_a_run_that_learns_records_are_gone_erases_their_quarantine_entries_and_defects(sync_env, tmp_path):
    from conduit.pipeline.replay import replay
    from conduit.ui.data import read_state

    env = sync_env
    env.edit_spec(mapping__email__transforms=[{"type": "email"}])  # a bad email rejects: quarantined
    env.crm.admin.reset(bad_emails=3, junk_phones=0.10)
    spec, crm, target = env.spec(), env.crm, env.target()
    run_ok(env)  # the full sync: 3 records quarantined (raw record), phone defects open (raw value)

    quarantined = sorted(set(quarantine_table(env)["crm_id"]))
    assert len(quarantined) == 3
    erased_q, merged_q, kept_q = quarantined
    assert entries_of(env, erased_q)[0]["raw_record"]["email"]  # personal data, as parked
    with_defects = sorted({d["crm_id"] for d in read_defects(target, spec)} - set(quarantined))
    erased_d, kept_d = with_defects[:2]
    erased_d_defects = defects_of(env, erased_d)
    assert erased_d_defects and all(d["raw_value"] and d["resolved_at"] is None for d in erased_d_defects)
    survivor = next(i for i in crm_ids(spec) if i not in quarantined and i not in with_defects)

    crm.admin.delete(erased_q)  # GDPR erasure: gone for good
    crm.admin.merge(survivor, merged_q)  # merged away: gone for good, the survivor stays
    crm.admin.delete(erased_d)
    named = [erased_q, survivor, merged_q, erased_d, kept_q, kept_d]
    run, staging = extract_and_map(env, tmp_path, "gdpr", named)
    assert sorted(steps.gone_record_ids(staging)) == sorted([erased_q, merged_q, erased_d])

    # a dry run (or plan_only) erases nothing, but says what a real run would resolve
    dry = gate(env, staging, "gdpr-dry", dry_run=True)
    steps.load(target, spec, staging, run_id="gdpr-dry", watermark_ms=run.watermark_ms, dry_run=True)
    assert entries_of(env, erased_q)[0]["raw_record"] is not None
    assert entries_of(env, erased_q)[0]["replayed_at"] is None
    assert all(d["raw_value"] and d["resolved_at"] is None for d in defects_of(env, erased_d))

    # the gate: the gone record's defects are over (the load deletes it)
    summary = gate(env, staging, "gdpr")
    resolved_by_gate = [d["resolved_by_run"] for d in defects_of(env, erased_d)]

    result = steps.load(target, spec, staging, run_id="gdpr", watermark_ms=run.watermark_ms)
    assert result.deleted == 1  # erased_d; the quarantined records never reached the ERP

    for gone in (erased_q, merged_q):
        entries = entries_of(env, gone)
        assert entries, gone
        for entry in entries:  # kept for the operator: which record, which rule, erased by which run
            assert entry["raw_record"] is None, entry
            assert entry["reason"] == f"{ERASED_REASON}: personal data removed by run gdpr", entry
            assert entry["replayed_at"] is not None and entry["replayed_by_run"] == "gdpr", entry
            assert entry["expectation"] and entry["record_key"] == f"HS-C-{gone}"
    assert dry["defects_resolved"] == summary["defects_resolved"] == len(erased_d_defects), (dry, summary)
    assert resolved_by_gate == ["gdpr"] * len(erased_d_defects)
    for defect in defects_of(env, erased_d):
        assert defect["raw_value"] is None and defect["reason"].startswith(ERASED_REASON), defect
        assert defect["resolved_by_run"] == "gdpr" and defect["column_name"] and defect["rule"]
    # what the CRM still has keeps its entries, raw data and all
    assert all(e["raw_record"] is not None and e["replayed_at"] is None for e in entries_of(env, kept_q))
    assert all(d["raw_value"] and d["resolved_at"] is None for d in defects_of(env, kept_d))
    assert not defects_of(env, survivor) and not entries_of(env, survivor)

    # the health page's open quarantine and the replay see only the record the CRM still has
    state = read_state(spec)
    assert state.error is None and {e["crm_id"] for e in state.quarantine} == {kept_q}
    assert {e["crm_id"] for e in target.open_quarantine(spec)} == {kept_q}
    replayed = replay(crm_source(spec), target, spec, env.include / "expectations" / spec.quality.suite,
                      run_id="replay")
    assert replayed["records"] == 1 and replayed["not_in_crm_ids"] == [], replayed
    assert replayed["still_failing_ids"].keys() == {kept_q}

    # a retried load (the same run) changes nothing more
    before = quarantine_table(env)
    steps.load(target, spec, staging, run_id="gdpr", watermark_ms=run.watermark_ms)
    assert quarantine_table(env).equals(before)


def test_a_record_erased_while_its_defect_was_being_read_opens_no_defect(sync_env, tmp_path):
    """The window's lagging search may still read a record the CRM has erased (its read by id
    does not): the gate must not open a defect with its raw value, and the load's erasure closes
    what it parked."""
    env = sync_env
    env.crm.admin.reset(junk_phones=0.10)
    spec, crm, target = env.spec(), env.crm, env.target()
    run_ok(env)
    with_defect = sorted({d["crm_id"] for d in read_defects(target, spec)})[0]
    crm.admin.modify(with_defect, {"firstname": "Changed", "phone": "still junk"},
                     lastmodifieddate_ms=crm.admin.clock_ms() - 120_000)
    run, staging = extract_and_map(env, tmp_path, "lag", [])  # the window reads the changed record
    crm.admin.delete(with_defect)  # then erased, before the run's read by id
    assert steps.stage_gone_records(crm_source(spec), staging, {"kind": "ids", "ids": [with_defect]}, "ids") == 1

    summary = gate(env, staging, "lag")
    assert summary["defects_opened"] == 0, summary  # the new junk phone of an erased record: not recorded
    steps.load(target, spec, staging, run_id="lag", watermark_ms=run.watermark_ms)
    defects = defects_of(env, with_defect)
    assert defects and all(d["resolved_by_run"] == "lag" and d["raw_value"] is None for d in defects), defects
    assert not [d for d in read_defects(target, spec, open_only=True) if d["crm_id"] == with_defect]


# --- the tables themselves, on both databases ---------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def erp(request, tmp_path):
    from conduit.specs.model import load_spec
    from conduit.targets import PostgresErpTarget, SqliteErpTarget

    spec = load_spec(Path(__file__).resolve().parents[2] / "include" / "syncs" / "crm_to_erp_customer_sync.yaml")
    if request.param == "sqlite":
        target = SqliteErpTarget(tmp_path / "erp.db")
    else:
        schema = request.getfixturevalue("pg_schema")
        spec = spec.model_copy(update={"target": spec.target.model_copy(update={"db_schema": schema})})
        target = PostgresErpTarget(request.getfixturevalue("pg_server_dsn"))
    target.ensure_ready(spec)
    return target, spec


def test_erasing_records_keeps_no_raw_data_and_leaves_other_records_alone(erp):
    target, spec = erp
    raw = {"id": "1", "properties": {"firstname": "Ada", "email": "ada@example.com"}}
    target.quarantine(spec, [
        {"record_key": "K1", "crm_id": "1", "expectation": "e", "column_name": "email", "reason": "ada@example.com",
         "raw_record": raw},
        {"record_key": None, "crm_id": "1", "expectation": "k", "column_name": "customer_number", "reason": "r",
         "raw_record": raw},
        {"record_key": "K2", "crm_id": None, "expectation": "e", "column_name": "email", "reason": "bob@x",
         "raw_record": {"id": "2"}},  # no CRM id: found by the key its ERP row had
        {"record_key": "K2", "crm_id": "3", "expectation": "e", "column_name": "email", "reason": "eve@x",
         "raw_record": {"id": "3"}},  # another record under that key (a merge's survivor): stays
    ], run_id="r1")
    replayed = target.quarantine(spec, [{"record_key": "K1", "crm_id": "1", "expectation": "e2",
                                         "reason": "x", "raw_record": raw}], run_id="r0")
    assert replayed == 1
    old = max(e["id"] for e in target.open_quarantine(spec))
    target.mark_replayed(spec, [old], run_id="replay-1")
    record_defects(target, spec, [Defect("K1", "1", "phone", "phone_e164", "+1 555 ADA", "r"),
                                  Defect("K2", "3", "phone", "phone_e164", "eve's", "r")],
                   run_id="r1", clean_keys=lambda keys: set())

    counts = target.erase_records(spec, ["1", "2"], ["K2"], run_id="gdpr")

    assert counts == {"quarantine_erased": 4, "defects_erased": 1}
    assert [e["crm_id"] for e in target.open_quarantine(spec)] == ["3"]
    assert target.open_quarantine(spec)[0]["raw_record"] == {"id": "3"}
    store = target.state
    with store._transaction(None, commit=False) as cur:
        cur.execute("SELECT crm_id, record_key, raw_record, reason, replayed_by_run FROM "
                    f"{store.dialect.qualify(spec.target.state_schema, 'conduit_quarantine')} ORDER BY id")
        rows = cur.fetchall()
    erased = [r for r in rows if r[0] != "3"]
    assert len(erased) == 4 and all(r[2] is None for r in erased)
    assert all(r[3] == f"{ERASED_REASON}: personal data removed by run gdpr" for r in erased)
    assert sorted(r[4] for r in erased) == ["gdpr", "gdpr", "gdpr", "replay-1"]  # a replayed entry keeps its replay
    defects = {d["crm_id"]: d for d in read_defects(target, spec)}
    assert defects["1"]["raw_value"] is None and defects["1"]["resolved_by_run"] == "gdpr"
    assert defects["3"]["raw_value"] == "eve's" and defects["3"]["resolved_at"] is None

    # idempotent: a retry (or a later run naming the same ids) changes nothing
    assert target.erase_records(spec, ["1", "2"], ["K2"], run_id="later") == {
        "quarantine_erased": 0, "defects_erased": 0}
    assert read_defects(target, spec)[0]["reason"].endswith("run gdpr")
