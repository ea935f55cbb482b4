"""Rejected rows without their key (an empty CRM property mapped to the target key): how rejected/
lists them, which rows the load leaves out, how they are counted, and what a replay says of a
record that still has no key. Staged files on disk, no database."""

from __future__ import annotations

import numpy as np
import pandas as pd

from conduit.pipeline import replay, steps
from conduit.pipeline.staging import RunStaging
from conduit.quality.engine import GateDecision
from conduit.specs.model import parse_spec


def erp_number_spec():
    return parse_spec({
        "name": "erp_number_sync",
        "source": {"type": "hubspot", "properties": ["email", "erp_number", "lastmodifieddate"]},
        "target": {"type": "sql", "table": "erp_customers", "key": "erp_number"},
        "mapping": {"erp_number": {"source": "erp_number", "dtype": "integer"},
                    "crm_id": {"source": "hs_object_id", "dtype": "integer"},
                    "email": {"source": "email"}},
    }, "erp_number_sync.yaml")


def decision_rejecting(keys: list, crm_ids: list) -> GateDecision:
    rejected = pd.DataFrame({"key": keys, "crm_id": crm_ids, "reasons": ["erp_number is null"] * len(keys)})
    return GateDecision(True, "policy quarantine", rejected, frozenset(k for k in keys if not pd.isna(k)))


def staged_rejected(tmp_path, decision: GateDecision) -> RunStaging:
    staging = RunStaging(tmp_path / "staged")
    with staging.writer("rejected") as writer:
        steps._write_rejected(writer, decision)
    return staging


def test_rejected_lists_a_row_without_its_key_by_crm_id_with_a_null_key(tmp_path):
    staging = staged_rejected(tmp_path, decision_rejecting([1001, np.nan, np.nan], [1, 2, None]))

    written = next(staging.read_frames("rejected"))
    assert written["key"].isna().tolist() == [False, True, True]  # null, not the text "nan"
    assert steps.read_rejected(staging) == steps.Rejected(frozenset({"1001"}), frozenset({"2"}), True)
    assert steps.rejected_keys(staging) == frozenset({"1001"})


def test_the_load_leaves_out_a_rejected_row_without_its_key_by_its_crm_id(tmp_path):
    staging = staged_rejected(tmp_path, decision_rejecting([1001, np.nan], [1, 2]))
    mapped = pd.DataFrame({"erp_number": [1001, np.nan, 1003, np.nan], "crm_id": [1, 2, 3, 4]})

    left_out = steps.rejected_rows(mapped, "erp_number", *steps.read_rejected(staging).lookups())

    # crm 4 has no key either, but the gate did not reject it: not the load inputs' call
    assert left_out.tolist() == [True, True, False, False]


def test_a_rejected_row_with_neither_key_nor_crm_id_leaves_out_such_rows(tmp_path):
    staging = staged_rejected(tmp_path, decision_rejecting([np.nan], [None]))
    mapped = pd.DataFrame({"erp_number": [1001, np.nan, np.nan], "crm_id": [1, None, 3]})

    left_out = steps.rejected_rows(mapped, "erp_number", *steps.read_rejected(staging).lookups())

    assert left_out.tolist() == [False, True, False]


def test_each_rejected_row_without_a_key_counts_as_a_record():
    assert steps.rejected_count(decision_rejecting([1001, 1001, np.nan, np.nan], [1, 5, 2, 3])) == 3
    assert steps.rejected_count(GateDecision(True, "all passed")) == 0


def test_a_replayed_record_still_without_its_key_fails_with_the_reason_whatever_the_suite():
    spec = erp_number_spec()
    records = [{"id": str(i), "properties": {"hs_object_id": str(i), "email": f"c{i}@example.com",
                                              "erp_number": number, "lastmodifieddate": "2026-03-01T10:00:00.000Z"}}
               for i, number in ((1, "1001"), (2, None))]

    rows, replayed, still_failing = replay.plan(spec, records, suite=None)

    assert rows["erp_number"].tolist() == [1001] and replayed == ["1"]
    assert still_failing == {"2": ["target key erp_number is null after mapping: the ERP cannot hold a record "
                                   "without its key (fill CRM property 'erp_number')"]}
