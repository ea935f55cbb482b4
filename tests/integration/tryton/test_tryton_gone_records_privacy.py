"""A Tryton sync's state store forgets a record the CRM erased for good: the load of a run that
learned it is gone (``gone_records.json`` beside its staged files) deletes the party and closes its
quarantine entries and defects without their raw data, in the SQL state store (the Tryton target
has no tables of its own: ``ErpTarget.erase_records``' default erases through ``state``). A real
trytond; the state store on SQLite."""

from __future__ import annotations

import json

import pandas as pd
from test_tryton_target import parties, rows, setup  # noqa: F401 (the fixture)

from conduit.pipeline import steps
from conduit.pipeline.staging import RunStaging
from conduit.quality.defects import Defect
from conduit.targets.defects import read_defects, record_defects

ERASED_REASON = "erased in the CRM (gone for good: a GDPR erasure or merged away)"


def test_a_tryton_syncs_load_erases_a_gone_records_quarantine_and_defects(setup, tmp_path):  # noqa: F811
    spec, target = setup(delete_mode="soft")
    prefix = spec.name
    target.load(spec, [rows(prefix, 2)], run_id="first")  # crm ids 1 and 2
    assert set(parties(target.hook, prefix)) == {f"{prefix}-0", f"{prefix}-1"}
    raw = {"id": "1", "firstname": "Ada", "email": "ada@example.com"}
    target.quarantine(spec, [
        {"record_key": f"{prefix}-0", "crm_id": "1", "expectation": "e", "column_name": "email",
         "reason": "ada@example", "raw_record": raw},
        {"record_key": f"{prefix}-1", "crm_id": "2", "expectation": "e", "column_name": "email",
         "reason": "bob@example", "raw_record": {"id": "2"}}], run_id="first")
    record_defects(target.state, spec, [Defect(f"{prefix}-0", "1", "phone", "phone_e164", "ADA-PHONE", "r")],
                   run_id="first", clean_keys=lambda keys: set())

    staging = RunStaging(tmp_path / "staging" / "gdpr")
    staging.root.mkdir(parents=True)
    (staging.root / steps.GONE_RECORDS_FILE).write_text(json.dumps(["1"]))  # what the ids item staged

    dry = steps.load(target, spec, staging, run_id="gdpr-dry", watermark_ms=None, dry_run=True)
    assert dry.deleted == 1 and {e["crm_id"] for e in target.open_quarantine(spec)} == {"1", "2"}

    result = steps.load(target, spec, staging, run_id="gdpr", watermark_ms=None)

    assert result.deleted == 1 and not parties(target.hook, prefix).get(f"{prefix}-0", {}).get("active", False)
    assert [e["crm_id"] for e in target.open_quarantine(spec)] == ["2"]  # the health page and replay read these
    assert target.open_quarantine(spec)[0]["raw_record"] == {"id": "2"}
    with target.state._transaction(None, commit=False) as cur:
        cur.execute("SELECT raw_record, reason, replayed_by_run FROM conduit_quarantine WHERE crm_id = '1'")
        assert cur.fetchall() == [(None, f"{ERASED_REASON}: personal data removed by run gdpr", "gdpr")]
    (defect,) = read_defects(target.state, spec)
    assert (defect["raw_value"], defect["resolved_by_run"]) == (None, "gdpr")
    assert not pd.isna(defect["resolved_at"])
