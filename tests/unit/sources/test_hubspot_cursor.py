"""HubSpot's (timestamp, id) search cursor as pure functions; behaviour against the CRM is in
tests/integration/test_hubspot_hook.py."""

from __future__ import annotations

import json

from conduit.sources.hubspot.cursor import (
    SEARCH_BODY_MAX_CHARS,
    CursorState,
    advance,
    id_range_body,
    search_body,
    search_fits,
)


def rec(id_: int, ts: int) -> dict:
    return {"id": str(id_), "properties": {"lastmodifieddate": str(ts), "hs_object_id": str(id_)}}


def test_range_body_is_bounded_and_sorted_by_cursor():
    body = search_body(CursorState(100, -1, "range"), cursor_property="lastmodifieddate", upper_ms=900,
                       properties=["email"], limit=200)
    (group,) = body["filterGroups"]
    assert {(f["operator"], f["value"]) for f in group["filters"]} == {("GT", "100"), ("LT", "900")}
    assert body["sorts"] == [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]
    assert "after" not in body  # fresh query per page: no deep paging into the 10k cap


def test_ties_body_pages_by_id_inside_one_millisecond():
    body = search_body(CursorState(100, 42, "ties"), cursor_property="lastmodifieddate", upper_ms=900,
                       properties=[], limit=200)
    filters = body["filterGroups"][0]["filters"]
    assert {"propertyName": "lastmodifieddate", "operator": "EQ", "value": "100"} in filters
    assert {"propertyName": "hs_object_id", "operator": "GT", "value": "42"} in filters
    assert body["sorts"][0]["propertyName"] == "hs_object_id"


def test_full_range_page_holds_back_the_last_millisecond():
    page = [rec(1, 10), rec(2, 11), rec(9, 12), rec(3, 12)]
    emit, state = advance(CursorState(0, -1, "range"), page, cursor_property="lastmodifieddate", limit=4)
    assert [r["id"] for r in emit] == ["1", "2"]
    assert state == CursorState(12, -1, "ties")


def test_page_of_one_millisecond_makes_progress_through_ties():
    page = [rec(5, 12), rec(3, 12)]
    emit, state = advance(CursorState(0, -1, "range"), page, cursor_property="lastmodifieddate", limit=2)
    assert emit == [] and state == CursorState(12, -1, "ties")
    emit, state = advance(state, [rec(3, 12), rec(5, 12)], cursor_property="lastmodifieddate", limit=2)
    assert [r["id"] for r in emit] == ["3", "5"] and state == CursorState(12, 5, "ties")
    emit, state = advance(state, [rec(7, 12)], cursor_property="lastmodifieddate", limit=2)
    assert [r["id"] for r in emit] == ["7"] and state == CursorState(12, 5, "range")


def test_short_range_page_ends_the_window():
    emit, state = advance(CursorState(0, -1, "range"), [rec(1, 10)], cursor_property="lastmodifieddate", limit=4)
    assert [r["id"] for r in emit] == ["1"] and state is None


def test_id_range_body_is_a_fresh_id_cursor_query():
    body = id_range_body(41, 900, properties=["email"], limit=200)
    filters = body["filterGroups"][0]["filters"]
    assert {(f["operator"], f["value"]) for f in filters} == {("GT", "41"), ("LT", "900")}
    assert body["sorts"] == [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]


def test_search_fits_is_true_exactly_while_the_longest_body_is_within_hubspots_limit():
    def longest(properties: list[str]) -> int:
        fields = [*properties, "lastmodifieddate", "hs_object_id"]
        big = 10**19 - 1
        return max(len(json.dumps(b, separators=(",", ":"))) for b in (
            search_body(CursorState(big, big, "ties"), cursor_property="lastmodifieddate", upper_ms=big,
                        properties=fields, limit=200),
            search_body(CursorState(big, big, "range"), cursor_property="lastmodifieddate", upper_ms=big,
                        properties=fields, limit=200),
            id_range_body(big, big, properties=fields, limit=200)))

    narrow = ["email", "firstname", "lastname", "phone", "country", "company", "lifecyclestage", "createdate"]
    assert search_fits(narrow, cursor_property="lastmodifieddate", limit=200)
    wide = [f"p{i:04d}" for i in range(400)]
    n = next(n for n in range(400) if longest(wide[:n]) > SEARCH_BODY_MAX_CHARS)
    assert search_fits(wide[:n - 1], cursor_property="lastmodifieddate", limit=200)
    assert not search_fits(wide[:n], cursor_property="lastmodifieddate", limit=200)
