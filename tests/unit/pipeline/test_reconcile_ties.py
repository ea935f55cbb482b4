"""Two staged rows of one key with the same modification time (two CRM records mapped to one ERP
key, in a run whose suite does not check the key's uniqueness): the load keeps the greater
(``source_modified_at``, ``row_hash``), and reconcile must expect that same row, whatever order the
rows were staged in. Before, reconcile kept the row staged last and failed a correct load. A real
SQLite ERP; staged files on disk."""

from __future__ import annotations

import pytest
from test_keyless_rejections import erp_number_spec

from conduit.pipeline import steps
from conduit.pipeline.staging import RunStaging
from conduit.targets.sql import SqliteErpTarget


def contact(crm_id: str, email: str) -> dict:
    return {"id": crm_id, "properties": {"email": email, "erp_number": "1001", "hs_object_id": crm_id,
                                         "lastmodifieddate": "2026-03-01T10:00:00.000Z"}}


@pytest.mark.parametrize("order", ["a first", "b first"])
def test_reconcile_expects_the_row_the_load_keeps_on_a_tie(tmp_path, order):
    spec = erp_number_spec()
    records = [contact("1", "a@example.com"), contact("2", "b@example.com")]
    staging = RunStaging(tmp_path / "staged")
    with staging.writer("raw", "changed") as writer:
        writer.write(steps.records_to_table(records if order == "a first" else records[::-1],
                                            steps.raw_properties(spec)))
    steps.transform(spec, staging)
    target = SqliteErpTarget(str(tmp_path / "erp.sqlite"))
    target.ensure_ready(spec)

    steps.load(target, spec, staging, run_id="r1", watermark_ms=1)

    staged = next(staging.read_frames("mapped"))
    assert staged["source_modified_at"].nunique() == 1 and staged["row_hash"].nunique() == 2
    kept = target.fetch_rows(spec)
    assert kept["row_hash"].tolist() == [max(staged["row_hash"])]  # the SQL target's rule
    assert steps.staged_key_checksum(spec, staging, frozenset()) == target.key_checksum(spec)
    assert steps._staged_mismatches(target, spec, staging) == (1, [])
