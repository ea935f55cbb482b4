"""Rows without their key that the gate's decision lets through (a ``warn`` policy, no not-null
check on the key, ``mostly``): found in the staged parts by position, rejected and parked by CRM
id whatever the policy. Staged files on disk, no database."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from test_keyless_rejections import erp_number_spec

from conduit.pipeline import steps
from conduit.pipeline.staging import RunStaging
from conduit.quality.engine import GateDecision

KEY_MISSING = ("target key erp_number is null after mapping: the ERP cannot hold a record without its key "
               "(fill CRM property 'erp_number')")


def staged_parts(tmp_path, *parts: tuple[list, list]) -> RunStaging:
    """mapped/ holding one part per (erp numbers, CRM ids)."""
    staging = RunStaging(tmp_path / "staged")
    with staging.writer("mapped") as writer:
        for keys, crm_ids in parts:
            writer.write(pa.table({"erp_number": pa.array(keys, pa.int64()), "crm_id": pa.array(crm_ids, pa.int64())}))
    return staging


def test_rows_without_their_key_are_found_by_position_across_parts_minus_the_rejected(tmp_path):
    staging = staged_parts(tmp_path, ([1001, None, 1003], [1, 2, 3]), ([None, 1005, None], [4, 5, 6]))
    rejected = pd.DataFrame({"key": [np.nan], "crm_id": [4], "reasons": ["erp_number is null"]}, index=[3])

    found = steps._unrejected_keyless(erp_number_spec(), staging, GateDecision(True, "quarantine", rejected))

    assert found.index.tolist() == [1, 5]  # positions in the gate's report: part 2 starts at 3
    assert found["crm_id"].tolist() == [2, 6] and found["key"].isna().all()


def test_rejecting_them_lists_them_by_crm_id_with_the_reason_and_drops_their_defects(tmp_path):
    spec = erp_number_spec()
    rows = pd.DataFrame({"key": None, "crm_id": [2, 6]}, index=[1, 5], dtype=object)
    defects = pd.DataFrame({"key": [1001, np.nan], "column": ["email", "email"]}, index=[0, 5])
    decision = GateDecision(True, "policy warn, loading all rows despite: x", None, frozenset(), defects)
    findings = steps.keyless_findings(spec, rows)

    rejecting = steps.with_keyless_rejected(with_policy(spec, policy="warn"), decision, rows, findings, checked=6)

    assert [(f.crm_id, f.expectation, f.column, f.reason) for f in findings] == [
        (2, steps.KEY_MISSING_RULE, "erp_number", KEY_MISSING), (6, steps.KEY_MISSING_RULE, "erp_number", KEY_MISSING)]
    assert rejecting.load and steps.rejected_count(rejecting) == 2
    assert rejecting.rejected["reasons"].tolist() == [KEY_MISSING, KEY_MISSING]
    assert rejecting.defects.index.tolist() == [0]
    staging = RunStaging(tmp_path / "staged")
    with staging.writer("rejected") as writer:
        steps._write_rejected(writer, rejecting)
    assert steps.read_rejected(staging) == steps.Rejected(frozenset(), frozenset({"2", "6"}))


def with_policy(spec, **quality):
    from conduit.specs.model import QualitySpec

    return spec.model_copy(update={"quality": QualitySpec(suite="erp_numbers.yaml", **quality)})


def keyless_rows(*crm_ids: int) -> pd.DataFrame:
    return pd.DataFrame({"key": None, "crm_id": list(crm_ids)}, index=list(range(len(crm_ids))), dtype=object)


def test_under_block_a_row_without_its_key_stops_the_load_naming_its_crm_id():
    spec = with_policy(erp_number_spec(), policy="block")
    rows = keyless_rows(7)

    decision = steps.with_keyless_rejected(spec, GateDecision(True, "all passed"), rows,
                                           steps.keyless_findings(spec, rows), checked=100)

    assert not decision.load
    assert decision.reason.startswith("policy block: 1 rows without their key (erp_number null; CRM ids 7)")


def test_under_quarantine_rows_without_their_key_count_against_max_rejected_ratio():
    """A key mapping that lost every key fails the run: it does not park the whole CRM."""
    spec = with_policy(erp_number_spec(), policy="quarantine", max_rejected_ratio=0.25, rejected_ratio_min_rows=4)
    rows = keyless_rows(1, 2)
    findings = steps.keyless_findings(spec, rows)

    over = steps.with_keyless_rejected(spec, GateDecision(True, "all passed"), rows, findings, checked=4)
    at_limit = steps.with_keyless_rejected(spec, GateDecision(True, "all passed"), rows, findings, checked=8)
    small_run = steps.with_keyless_rejected(spec, GateDecision(True, "all passed"), rows, findings, checked=3)

    assert not over.load and "2 of 4 rows rejected" in over.reason and "max_rejected_ratio 25.0000%" in over.reason
    assert at_limit.load and steps.rejected_count(at_limit) == 2
    assert small_run.load  # fewer rows than rejected_ratio_min_rows: not held to the ratio


def test_under_warn_rows_without_their_key_are_parked_whatever_their_number():
    spec = with_policy(erp_number_spec(), policy="warn", max_rejected_ratio=0.0)
    rows = keyless_rows(1, 2, 3)

    decision = steps.with_keyless_rejected(spec, GateDecision(True, "policy warn"), rows,
                                           steps.keyless_findings(spec, rows), checked=3)

    assert decision.load and steps.rejected_count(decision) == 3
