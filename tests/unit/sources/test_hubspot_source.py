"""HubSpotSource over a recording fake hook: which HubSpot calls each part of the interface makes.
The same source against the stand-in over HTTP: tests/integration/test_hubspot_hook.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from conduit.pipeline.cursor import Window
from conduit.sources.hubspot.source import HubSpotSource
from conduit.specs.model import load_spec

SPEC = load_spec(Path(__file__).resolve().parents[3] / "include" / "syncs" / "crm_to_erp_customer_sync.yaml")


def record(id_: int, modified: int, created: int | None) -> dict:
    return {"id": str(id_), "properties": {"hs_object_id": str(id_), "lastmodifieddate": str(modified),
                                           "createdate": None if created is None else str(created)}}


class FakeHook:
    """Answers searches from ``records`` (as the API would for the bodies the source sends)."""

    def __init__(self, records=()):
        self.records = list(records)
        self.calls: list[tuple] = []
        self.requests_sent, self.retries = 0, 0

    def search(self, object_type, body):
        self.calls.append(("search", object_type, body))
        self.requests_sent += 1
        if "filterGroups" not in body:  # the edge-id searches
            ordered = sorted(self.records, key=lambda r: int(r["id"]),
                             reverse=body["sorts"][0]["direction"] == "DESCENDING")
            return {"results": ordered[:1], "total": len(self.records)}
        filters = body["filterGroups"][0]["filters"]
        if filters[0]["propertyName"] == "createdate":
            upper = int(filters[0]["value"])
            return {"results": [], "total": sum(int(r["properties"]["createdate"] or 0) < upper for r in self.records)}
        lower = int(filters[0]["value"])
        matched = [r for r in self.records if int(r["properties"]["lastmodifieddate"]) > lower
                   and (len(filters) < 2 or filters[1]["propertyName"] != "lastmodifieddate"
                        or int(r["properties"]["lastmodifieddate"]) < int(filters[1]["value"]))]
        return {"results": matched if filters[0]["operator"] == "GT" else [], "total": len(matched)}

    def batch_read(self, object_type, ids, properties):
        self.calls.append(("batch_read", object_type, list(ids)))
        return [{"id": i, "properties": {}} for i in ids if int(i) % 2]  # even ids are archived

    def search_page(self, object_type, body):
        from conduit.pipeline.pages import RecordPage

        self.calls.append(("search_page", object_type, body))
        return RecordPage([], body["properties"], [])

    def batch_read_page(self, object_type, ids, properties):
        return ("batch_read_page", list(ids))

    def iter_list_record_pages(self, object_type, properties, *, archived=False, limit=100):
        return iter([("list", archived, limit)])


def source(records=()) -> tuple[HubSpotSource, FakeHook]:
    hook = FakeHook(records)
    return HubSpotSource(SPEC.source, hook=hook), hook


def test_a_full_read_splits_the_live_id_span_into_ranges():
    src, hook = source([record(i, 1, 1) for i in (101, 150, 400)])
    items = src.plan(None, parallelism=3, object_ids=["7"])
    # two searches at once per range (no budget: nothing paces them), see UNPACED_RANGE_STREAMS
    assert items == [{"kind": "range", "lo": 101, "hi": 201, "streams": 2},
                     {"kind": "range", "lo": 201, "hi": 301, "streams": 2},
                     {"kind": "range", "lo": 301, "hi": 401, "streams": 2}, {"kind": "ids", "ids": ["7"]},
                     {"kind": "archived"}]
    assert [c[2]["sorts"][0]["direction"] for c in hook.calls] == ["ASCENDING", "DESCENDING"]


@pytest.mark.parametrize(("records", "parallelism"), [([], 4), ([record(1, 1, 1)], 1)], ids=["empty", "one-part"])
def test_a_full_read_without_ranges_lists_everything(records, parallelism):
    src, hook = source(records)
    assert src.plan(None, parallelism=parallelism) == [{"kind": "all"}, {"kind": "archived"}]


def test_an_incremental_run_reads_its_window_without_asking_the_crm():
    src, hook = source()
    assert src.plan(Window(10, 20), parallelism=4) == [{"kind": "changed", "window": [10, 20]}, {"kind": "archived"}]
    assert hook.calls == []


def test_each_kind_of_item_is_read_with_its_call():
    src, hook = source()
    assert list(src.read({"kind": "range", "lo": 5, "hi": 9})) == []
    assert list(src.read({"kind": "changed", "window": [10, 20]})) == []
    (_, _, by_id), (_, _, ties), (_, _, by_time) = hook.calls  # a window starts with the ties at its lower bound
    assert [(f["propertyName"], f["operator"], f["value"]) for f in by_id["filterGroups"][0]["filters"]] == [
        ("hs_object_id", "GT", "4"), ("hs_object_id", "LT", "9")]
    assert [(f["propertyName"], f["operator"], f["value"]) for f in ties["filterGroups"][0]["filters"]] == [
        ("lastmodifieddate", "EQ", "10"), ("hs_object_id", "GT", "-1")]
    assert [(f["propertyName"], f["operator"], f["value"]) for f in by_time["filterGroups"][0]["filters"]] == [
        ("lastmodifieddate", "GT", "10"), ("lastmodifieddate", "LT", "20")]
    assert by_id["limit"] == by_time["limit"] == SPEC.source.search_page_size
    assert by_id["properties"] == src.raw_properties()
    ids = [str(i) for i in range(250)]
    assert [page[1] for page in src.read({"kind": "ids", "ids": ids})] == [ids[:100], ids[100:200], ids[200:]]
    assert list(src.read({"kind": "all"})) == [("list", False, 100)]
    assert list(src.read({"kind": "archived"})) == [("list", True, 100)]
    with pytest.raises(ValueError, match="unknown extract work item"):
        src.read({"kind": "everything"})


def test_read_records_batches_by_100_and_leaves_out_what_the_crm_lacks():
    src, hook = source()
    ids = [str(i) for i in range(1, 206)]
    assert [r["id"] for r in src.read_records(ids)] == [i for i in ids if int(i) % 2]
    assert [len(c[2]) for c in hook.calls] == [100, 100, 5]


def test_reconciliation_questions():
    upper = 1_000
    src, hook = source([record(1, 500, 100), record(2, 1_500, 900), record(3, 1_600, 1_200), record(4, 1_700, None)])
    assert src.count_created_before(upper) == 3  # a record without createdate counts as created at 0 here
    assert hook.calls[-1][2]["filterGroups"][0]["filters"] == [
        {"propertyName": "createdate", "operator": "LT", "value": "1000"}]
    late = src.modified_since_created_before(upper)
    assert [r["id"] for r in late] == ["2"]  # modified after the bound, created before it
    assert "createdate" in hook.calls[-1][2]["properties"]
    assert (src.requests_sent, src.retries) == (hook.requests_sent, 0)


def test_a_body_cut_short_is_retried_and_one_that_is_not_json_is_not():
    import msgspec
    import requests

    from conduit.sources.hubspot import hook

    def error(body: bytes) -> Exception:
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            return exc
        raise AssertionError(body)

    assert hook._cut_short(error(b'{"results": [{"id": "1", "prop'))
    assert not hook._cut_short(error(b"<html>502 Bad Gateway</html>"))
    assert not hook._cut_short(ValueError("Input data was truncated"))
    # a body cut off mid-transfer, as requests' session raises it (behind a proxy), is retried too
    assert requests.exceptions.ChunkedEncodingError in hook._RETRY_ON


class BatchReplies:
    """Answers batch reads (``hook.request``) from a list of replies, recording what was asked: the
    HubSpot answers the stand-in never gives (an error other than not found, a batch not COMPLETE)."""

    def __init__(self, *replies):
        self.replies, self.calls = list(replies), []

    def objects_path(self, object_type):
        return f"/crm/v3/objects/{object_type}"

    def request(self, method, path, *, params=None, json=None):
        self.calls.append((method, path, params["archived"], [i["id"] for i in json["inputs"]]))
        return self.replies.pop(0)


def test_gone_records_leave_alone_ids_the_crm_did_not_answer_not_found_for():
    other_error = {"status": "error", "category": "RATE_LIMITS", "context": {"ids": ["3"]}}
    not_found = {"status": "error", "category": "OBJECT_NOT_FOUND", "context": {"ids": ["1", "2", "3", "4"]}}
    hook = BatchReplies(
        {"status": "COMPLETE", "results": [{"id": "4"}], "errors": [other_error, not_found]},  # archived?
        {"status": "COMPLETE", "results": [{"id": "9"}], "errors": [not_found]},  # live? (2 answered as 9: merged)
    )
    source = HubSpotSource(SPEC.source, hook=hook)

    assert source.gone_records(["1", "2", "3", "4", "1"]) == ["1", "2"]
    assert hook.calls == [("POST", "/crm/v3/objects/contacts/batch/read", "true", ["1", "2", "3", "4"]),
                          ("POST", "/crm/v3/objects/contacts/batch/read", "false", ["1", "2"])]


def test_gone_records_refuse_to_guess_from_a_batch_read_that_did_not_complete():
    from conduit.exceptions import CrmRetryableError

    source = HubSpotSource(SPEC.source, hook=BatchReplies({"status": "PROCESSING", "results": []}))
    with pytest.raises(CrmRetryableError, match="PROCESSING"):
        source.gone_records(["1"])


def test_an_error_naming_no_ids_leaves_the_whole_batch_alone():
    hook = BatchReplies({"status": "COMPLETE", "results": [], "errors": [{"category": "INTERNAL_ERROR"}]})
    assert HubSpotSource(SPEC.source, hook=hook).gone_records(["1", "2"]) == []
    assert len(hook.calls) == 1  # nothing left to ask about
