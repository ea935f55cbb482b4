"""The SQL ERP target on a real SQLite file and a real PostgreSQL schema: a row without
its key. The key is what a load is idempotent by; a row lacking it cannot be loaded, and must not
be given a key the CRM never had. Every path refuses it alike: the load fails, rolled back
(``TargetError``, as tests/integration/targets/test_erp_target_load.py expects of a keyless row)."""

from __future__ import annotations

from pathlib import Path

import pytest
from erp_number_sync import erp_number_target

from conduit.exceptions import TargetError
from conduit.pipeline import steps
from conduit.pipeline.staging import RunStaging


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def integer_keyed(request, tmp_path):
    return erp_number_target(request, tmp_path)


def staged_contacts(spec, root: Path, erp_numbers: list[str | None]) -> RunStaging:
    """Contacts 1.. with these ERP numbers, extracted and mapped as a run stages them."""
    records = [{"id": str(i), "properties": {"email": f"c{i}@example.com", "erp_number": number,
                                             "lastmodifieddate": "2026-03-01T10:00:00.000Z",
                                             "hs_object_id": str(i)}}
               for i, number in enumerate(erp_numbers, start=1)]
    staging = RunStaging(root)
    with staging.writer("raw", "changed") as writer:
        writer.write(steps.records_to_table(records, steps.raw_properties(spec)))
    steps.transform(spec, staging)
    return staging


def test_a_contact_without_its_key_is_refused_not_loaded_under_a_made_up_key(integer_keyed, tmp_path):
    """A row without its key that reaches the target (a gate that does not check the key, say) is
    refused. Before, SQLite's first load (into the empty table, without the staging table) inserted
    it as customer 1003: an INTEGER PRIMARY KEY is SQLite's rowid, where a NULL becomes the next
    number, a key the CRM never had. PostgreSQL, and SQLite once the table has rows, refused it
    (the staging table's NOT NULL). With a gate that checks the key the row is parked instead:
    tests/integration/test_keyless_records.py."""
    spec, target = integer_keyed
    staging = staged_contacts(spec, tmp_path / "staged", ["1001", "1002", None])

    with pytest.raises(TargetError, match="nothing changed.*erp_number"):
        steps.plan(target, spec, staging, run_id="r1")
    with pytest.raises(TargetError, match="rolled back.*erp_number"):
        steps.load(target, spec, staging, run_id="r1", watermark_ms=1)

    assert target.count(spec, active_only=False) == 0
    assert target.read_watermark(spec) is None


def test_a_row_without_its_key_is_refused_into_a_table_with_rows_too(integer_keyed, tmp_path):
    """The same on the merge path (a table that holds rows): refused, nothing changed."""
    spec, target = integer_keyed
    first = staged_contacts(spec, tmp_path / "first", ["1001"])
    steps.load(target, spec, first, run_id="r1", watermark_ms=1)
    second = staged_contacts(spec, tmp_path / "second", ["1001", None])

    with pytest.raises(TargetError, match="rolled back.*erp_number"):
        steps.load(target, spec, second, run_id="r2", watermark_ms=2)

    assert target.fetch_rows(spec)["erp_number"].tolist() == [1001]
