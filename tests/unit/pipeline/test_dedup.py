"""A record read by more than one work item is staged once, its newest version (issue 16): the
pure choice, the staged parts it filters, and the transform over them (no Airflow)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from conduit.pipeline import steps
from conduit.pipeline.dedup import item_precedence, superseded, superseded_reads
from conduit.pipeline.staging import RunStaging
from conduit.specs.model import load_spec

REPO = Path(__file__).resolve().parents[3]
SPEC_PATH = REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"
SPEC = load_spec(SPEC_PATH)
PROPS = steps.raw_properties(SPEC)
T0 = pd.Timestamp("2026-12-01T10:00:00Z")


def reads(*rows) -> pd.DataFrame:
    """(id, modified or None, precedence, part, row) tuples as superseded() reads them."""
    frame = pd.DataFrame(rows, columns=["id", "modified", "precedence", "part", "row"])
    frame["modified"] = pd.to_datetime(frame["modified"], utc=True)
    return frame


def losers(frame: pd.DataFrame) -> list[tuple[int, int]]:
    return sorted(map(tuple, superseded(frame).to_numpy().tolist()))


def test_the_newest_read_of_a_record_wins_whatever_item_read_it():
    frame = reads(("1", T0 + pd.Timedelta(seconds=5), 2, 0, 0),  # the window read the newer version
                  ("1", T0, 3, 1, 0),                              # the ids read an older one
                  ("2", T0, 2, 0, 1))                              # read once: never a loser
    assert losers(frame) == [(1, 0)]


def test_equal_times_go_to_the_later_item_then_the_later_row():
    frame = reads(("1", T0, 3, 1, 4), ("1", T0, 2, 0, 0),  # ids beat changed
                  ("7", T0, 4, 2, 0), ("7", T0, 2, 0, 1),  # archived beats a live read of the same version
                  ("9", T0, 1, 0, 2), ("9", T0, 1, 3, 0))  # same item rank: the later part
    assert losers(frame) == [(0, 0), (0, 1), (0, 2)]


def test_an_unknown_modification_time_is_the_oldest():
    frame = reads(("1", None, 4, 2, 0), ("1", T0, 0, 0, 0))
    assert losers(frame) == [(2, 0)]


def test_item_precedence_follows_the_plan_and_rejects_unknown_items():
    ranks = [item_precedence(p) for p in ("all", "range-1", "range-500", "changed", "ids", "archived")]
    assert ranks == sorted(ranks) and ranks[1] == ranks[2]
    with pytest.raises(ValueError, match="unknown extract work item 'bogus'"):
        item_precedence("bogus")


def record(id_: int, modified: pd.Timestamp, firstname: str) -> dict:
    iso = modified.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    props = {"email": f"c{id_}@example.com", "firstname": firstname, "lastname": "L", "country": "DE",
             "createdate": "2025-01-01T00:00:00.000Z", "lastmodifieddate": iso, "hs_object_id": str(id_)}
    return {"id": str(id_), "properties": props}


def stage(staging: RunStaging, kind: str, partition: str, records: list[dict], part_rows: int = 2) -> None:
    with staging.writer(kind, partition) as writer:
        for i in range(0, len(records), part_rows):
            writer.write(steps.records_to_table(records[i:i + part_rows], PROPS))


def test_no_repeated_record_no_filter(tmp_path):
    staging = RunStaging(tmp_path)
    stage(staging, "raw", "changed", [record(1, T0, "A"), record(2, T0, "B")])
    stage(staging, "raw", "ids", [record(3, T0, "C")])
    stage(staging, "archived", "archived", [])
    assert superseded_reads(staging, "lastmodifieddate") == {}


def test_the_transform_maps_each_record_once_in_its_newest_version(tmp_path):
    """The issue's case (A in the window and named by a webhook, B only named), plus a record
    archived after it was read and one restored after the archived listing was read."""
    staging = RunStaging(tmp_path)
    later = T0 + pd.Timedelta(seconds=90)
    stage(staging, "raw", "changed", [record(1, T0, "A-new"), record(5, T0, "E"), record(6, T0, "F"),
                                      record(7, later, "G-restored")])
    stage(staging, "raw", "ids", [record(2, later, "B-new"), record(1, T0, "A-new")])
    stage(staging, "raw", "range-1", [])  # an empty item's folder
    stage(staging, "archived", "archived", [record(6, T0, "F"), record(7, T0, "G")])

    counts = steps.transform(SPEC, staging)

    mapped = pd.concat(staging.read_frames("mapped")).set_index("crm_id")
    archived = pd.concat(staging.read_frames("mapped_archived")).set_index("crm_id")
    assert sorted(mapped.index) == [1, 2, 5, 7]
    assert mapped.loc[[1, 2, 7], "first_name"].tolist() == ["A-new", "B-new", "G-restored"]
    assert archived.index.tolist() == [6]  # archived after the window read it live: a delete
    assert counts == {"mapped": 4, "mapped_archived": 1, "superseded_reads": 3}
    assert not mapped.index.duplicated().any()


def test_two_crm_records_with_one_erp_key_both_stay(tmp_path):
    """The dedup is by CRM record, never by ERP key: the gate must still see the clash."""
    data = yaml.safe_load(SPEC_PATH.read_text())
    data["mapping"]["customer_number"]["transforms"] = [{"type": "template", "template": "E-{email}"}]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    spec = load_spec(tmp_path / "spec.yaml")
    staging = RunStaging(tmp_path / "staging")
    twin = {**record(2, T0, "B"), "properties": {**record(2, T0, "B")["properties"], "email": "c1@example.com"}}
    stage(staging, "raw", "changed", [record(1, T0, "A"), twin])
    stage(staging, "raw", "ids", [record(1, T0, "A"), twin])
    steps.transform(spec, staging)
    mapped = pd.concat(staging.read_frames("mapped"))
    assert sorted(mapped["crm_id"]) == [1, 2] and mapped["customer_number"].nunique() == 1


def test_repeated_hashes_are_the_values_seen_more_than_once_across_the_arrays():
    import numpy as np

    from conduit.pipeline.dedup import repeated_hashes

    rng = np.random.default_rng(7)
    parts = [rng.integers(0, 5_000, size=n, dtype=np.uint64) for n in (3_000, 0, 2_500, 1)]
    values, counts = np.unique(np.concatenate(parts), return_counts=True)
    assert np.array_equal(repeated_hashes(parts), values[counts > 1])
    assert np.array_equal(repeated_hashes(iter(parts)), values[counts > 1])  # any iterable, read once
    assert repeated_hashes([np.arange(10, dtype=np.uint64)]).size == 0
    assert repeated_hashes([]).dtype == np.uint64 and repeated_hashes([]).size == 0


def test_ids_that_read_as_one_number_or_are_not_numbers_are_told_apart_by_their_text(tmp_path):
    """Numeric ids are compared as numbers first (``id_values``): "07" and "7" meet there but are
    different records; ids that are not numbers are hashed, and their repeats still found."""
    import pyarrow as pa

    from conduit.pipeline.dedup import id_values

    def named(id_text: str, modified: pd.Timestamp, firstname: str) -> dict:
        base = record(1, modified, firstname)
        return {"id": id_text, "properties": {**base["properties"], "hs_object_id": id_text}}

    assert id_values(pa.chunked_array([["7", "1001"]])).tolist() == [7, 1001]
    assert id_values(pa.chunked_array([["x-7"]])).tolist() != id_values(pa.chunked_array([["x-8"]])).tolist()
    staging = RunStaging(tmp_path)
    later = T0 + pd.Timedelta(seconds=5)
    stage(staging, "raw", "changed", [named("7", T0, "seven"), named("x-1", T0, "old")])
    stage(staging, "raw", "ids", [named("07", later, "oh-seven"), named("x-1", later, "new")])
    losers = superseded_reads(staging, "lastmodifieddate")
    # only the older read of "x-1" loses (row 1 of the first part); "7" and "07" both stay
    assert {path.parent.name: rows.tolist() for path, rows in losers.items()} == {"changed": [1]}
