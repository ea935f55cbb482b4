"""Record pages decoded straight from HubSpot response bytes into columns, and written to Parquet
parts; the same pages over real HTTP are in tests/integration/test_hubspot_hook.py."""

from __future__ import annotations

import json

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conduit.pipeline.pages import RecordPage, as_record_page, pages_to_table
from conduit.pipeline.staging import RunStaging
from conduit.pipeline.steps import Progress, records_to_table, write_pages
from conduit.sources.hubspot.cursor import CursorState, advance
from conduit.sources.hubspot.pages import PageDecoder, page_decoder

PROPS = ["email", "firstname", "lastmodifieddate", "hs_object_id"]


def record(id_: int, ts: int, **props) -> dict:
    """A record as the API returns it, with the fields the extract does not read."""
    properties = {"email": f"c{id_}@example.com", "firstname": f"F{id_}", "lastmodifieddate": str(ts),
                  "hs_object_id": str(id_), **props}
    return {"id": str(id_), "properties": properties, "createdAt": "2025-01-01T00:00:00.000Z",
            "updatedAt": "2025-01-02T00:00:00.000Z", "archived": False}


def body(records: list[dict], **extra) -> bytes:
    return json.dumps({"results": records, **extra}).encode()


def test_decodes_ids_requested_properties_total_and_next_cursor():
    records = [record(1, 10), record(2, 11, unrequested="x"), record(3, 12, email=None)]
    page = page_decoder(tuple(PROPS)).decode(body(records, total=42, paging={"next": {"after": "3", "link": "?a"}}))
    assert page.ids == ["1", "2", "3"] and len(page) == 3
    assert page.total == 42 and page.after == "3"
    assert list(page.column("email")) == ["c1@example.com", "c2@example.com", None]
    assert [dict(r) for r in page] == [{"id": r["id"], "properties": {p: r["properties"].get(p) for p in PROPS}}
                                      for r in records]


def test_last_page_has_no_cursor_and_missing_properties_are_null():
    page = page_decoder(("email", "phone")).decode(body([{"id": "7", "properties": {"email": "a@b.c"}}]))
    assert page.after is None and page.total is None
    assert page[0] == {"id": "7", "properties": {"email": "a@b.c", "phone": None}}
    assert list(page.column("not-requested")) == [None]


def test_property_names_need_not_be_identifiers():
    names = ("class", "hs-weird name", "2nd", "id")
    page = PageDecoder(names).decode(body([{"id": "1", "properties": dict(zip(names, "abcd", strict=True))}]))
    assert page[0]["properties"] == dict(zip(names, "abcd", strict=True))


def test_empty_results_and_empty_body_fields():
    page = page_decoder(tuple(PROPS)).decode(b'{"results": []}')
    assert len(page) == 0 and not page and [list(c) for c in page.columns] == [[], [], [], []]
    assert pages_to_table([page], PROPS).num_rows == 0


@pytest.mark.parametrize("bad", [
    b'{"results": [{"id": "1", "properties": {"email": 5}}]}',  # property values are strings or null
    b'{"results": [{"id": 1, "properties": {}}]}',              # ids are strings
    b'{"results": [{"properties": {}}]}',                       # every record has an id
    b'<html>not json</html>',
])
def test_bodies_off_the_contract_fail_to_decode(bad):
    with pytest.raises(msgspec.DecodeError):
        page_decoder(tuple(PROPS)).decode(bad)


def test_pages_make_the_same_table_as_json_records():
    records = [record(i, 100 + i) for i in range(1, 8)] + [record(8, 108, firstname=None)]
    decoder = page_decoder(tuple(PROPS))
    pages = [decoder.decode(body(records[:3])), decoder.decode(body(records[3:]))]
    assert pages_to_table(pages, PROPS).equals(records_to_table(records, PROPS))
    assert pages_to_table(pages, ["email"]).column_names == ["id", "email"]


def test_where_take_and_slices_keep_records_and_columns_aligned():
    page = RecordPage.from_records([record(i, i) for i in range(1, 6)], PROPS)
    kept = page.where([True, False, True, False, True])
    assert kept.ids == ["1", "3", "5"] and list(kept.column("firstname")) == ["F1", "F3", "F5"]
    assert page[1:3].ids == ["2", "3"] and page[-1]["id"] == "5"
    assert as_record_page(page, PROPS) is page
    with pytest.raises(ValueError):
        RecordPage(["1"], ["a", "b"], [["x"]])


# --- the cursor works the same on column-wise pages ------------------------------------------------


def both_forms(records: list[dict]) -> list:
    return [records, RecordPage.from_records(records, PROPS)]


@pytest.mark.parametrize("form", [0, 1])
def test_full_range_page_holds_back_the_last_millisecond_on_either_form(form):
    page = both_forms([record(1, 10), record(2, 11), record(9, 12), record(3, 12)])[form]
    emit, state = advance(CursorState(0, -1, "range"), page, cursor_property="lastmodifieddate", limit=4)
    assert [r["id"] for r in emit] == ["1", "2"] and type(emit) is type(page)
    assert state == CursorState(12, -1, "ties")


@pytest.mark.parametrize("form", [0, 1])
def test_ties_pages_move_the_id_cursor_on_either_form(form):
    page = both_forms([record(3, 12), record(5, 12)])[form]
    emit, state = advance(CursorState(12, -1, "ties"), page, cursor_property="lastmodifieddate", limit=2)
    assert [r["id"] for r in emit] == ["3", "5"] and state == CursorState(12, 5, "ties")
    emit, state = advance(state, page[:1], cursor_property="lastmodifieddate", limit=2)
    assert state == CursorState(12, 5, "range")


def test_range_page_without_a_timestamp_fails_at_once_naming_the_record():
    from conduit.exceptions import CrmContractError

    page = RecordPage.from_records([record(1, 10), {"id": "2", "properties": {}}], PROPS)
    with pytest.raises(CrmContractError, match="CRM record 2 has no readable lastmodifieddate"):
        advance(CursorState(0, -1, "range"), page, cursor_property="lastmodifieddate", limit=2)


# --- pages -> Parquet parts ------------------------------------------------------------------------


def test_write_pages_streams_mixed_pages_into_parts_of_about_batch_rows(tmp_path):
    import logging

    records = [record(i, 1000 + i) for i in range(1, 2_501)]
    decoder = page_decoder(tuple(PROPS))
    pages = []
    for start in range(0, len(records), 200):
        chunk = records[start:start + 200]
        pages.append(chunk if start % 400 else decoder.decode(body(chunk)))  # JSON lists and RecordPages
    pages.insert(3, [])  # an empty page counts as a page, adds no rows
    staging = RunStaging(tmp_path)
    progress = Progress("test", logging.getLogger("test"))
    with staging.writer("raw", "x") as writer:
        assert write_pages(pages, writer, PROPS, progress, batch_rows=1_000) == 2_500
    assert progress.pages == len(pages) and progress.rows == 2_500
    parts = staging.parts("raw")
    assert [pq.ParquetFile(p).metadata.num_rows for p in parts] == [1_000, 1_000, 500]
    written = pq.read_table(parts[0]).schema
    assert written.names == ["id", *PROPS] and all(str(t) == "string" for t in written.types)
    got = [r for p in parts for r in pq.read_table(p).to_pylist()]
    assert got == records_to_table(records, PROPS).to_pylist()
    # read back joined into batches of at least min_rows, in order, nothing lost
    frames = list(staging.read_frames("raw", min_rows=1_500))
    assert [len(f) for f in frames] == [2_000, 500]
    assert [len(f) for f in staging.read_frames("raw")] == [1_000, 1_000, 500]
    assert [r for f in frames for r in f["id"]] == [r["id"] for r in got]
    assert frames[0].equals(records_to_table(records[:2_000], PROPS).to_pandas())
    # joined parts read like one part: one chunk per column (the mapping needs plain arrays)
    assert all(isinstance(pa.array(frames[0][c]), pa.Array) for c in frames[0].columns)
