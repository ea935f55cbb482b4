"""Search: HubSpot's validation limits, and the planner checked against a brute-force oracle."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from conduit.standin.data import generate
from conduit.standin.errors import ApiError
from conduit.standin.search import MAX_RESULTS, Filter, SearchRequest, Sort, execute, parse_search
from conduit.standin.store import LIVE, ObjectStore

NOW = 1_900_000_000_000


@pytest.fixture
def store():
    store = ObjectStore(generate(seed=3, contacts=3000, companies=20).contacts, lambda: NOW)
    for pos in (5, 17, 300):
        store.archive(pos)
    store.delete(41)
    return store


def _parse(body: dict, store: ObjectStore) -> SearchRequest:
    return parse_search(json.dumps(body).encode(), store.has_property)


def _error(body: dict | bytes, store: ObjectStore) -> ApiError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ApiError) as caught:
        parse_search(raw, store.has_property)
    assert caught.value.status == 400 and caught.value.category == "VALIDATION_ERROR"
    return caught.value


def _flt(name="lastmodifieddate", op="GT", value="0"):
    return {"propertyName": name, "operator": op, "value": value}


# --- validation ---------------------------------------------------------------------------------


def test_paging_past_ten_thousand_is_a_400(store):
    assert _parse({"after": "9800", "limit": 200}, store).after == 9800
    error = _error({"after": "9801", "limit": 200}, store)
    assert "10000" in error.message
    _error({"after": str(MAX_RESULTS), "limit": 1}, store)


@pytest.mark.parametrize("body, fragment", [
    ({"filterGroups": [{"filters": [_flt()]}] * 6}, "filter groups"),
    ({"filterGroups": [{"filters": [_flt()] * 7}]}, "Too many filters in filterGroups[0]"),
    ({"filterGroups": [{"filters": [_flt()] * 6}] * 3 + [{"filters": [_flt()]}]}, "19 in all groups"),
    ({"sorts": [{"propertyName": "createdate"}, {"propertyName": "lastmodifieddate"}]}, "one sort"),
    ({"limit": 201}, "limit"),
    ({"limit": 0}, "limit"),
    ({"after": "abc"}, "after"),
    ({"filterGroups": [{"filters": [_flt(op="LIKE")]}]}, "unknown operator"),
    ({"filterGroups": [{"filters": [_flt(name="no_such_property")]}]}, "no_such_property"),
    ({"filterGroups": [{"filters": [_flt(value="yesterday")]}]}, "'yesterday'"),
    ({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "IN"}]}]}, "values"),
    ({"filterGroups": [{"filters": [{"propertyName": "createdate", "operator": "BETWEEN", "value": "1"}]}]},
     "highValue"),
])
def test_hubspot_limits_and_bad_filters_are_validation_errors(store, body, fragment):
    assert fragment in _error(body, store).message


def test_body_over_3000_characters_is_a_400(store):
    body = {"filterGroups": [{"filters": [_flt()]}], "query": "x" * 2950}
    assert "3000" in _error(body, store).message
    _parse({"filterGroups": [{"filters": [_flt()]}], "query": "x" * 2800}, store)


def test_five_groups_of_six_filters_within_eighteen_is_fine(store):
    request = _parse({"filterGroups": [{"filters": [_flt()] * 6}] * 3, "limit": 200}, store)
    assert len(request.groups) == 3


def test_dates_may_be_epoch_ms_or_iso(store):
    iso = _parse({"filterGroups": [{"filters": [_flt(value="2026-01-01T00:00:00Z")]}]}, store)
    epoch = _parse({"filterGroups": [{"filters": [_flt(value="1767225600000")]}]}, store)
    assert execute(store, iso)[0] == execute(store, epoch)[0] > 0


# --- evaluation against an oracle -----------------------------------------------------------------


def _oracle_match(store: ObjectStore, pos: int, flt: Filter) -> bool:
    """Straightforward HubSpot semantics, one record at a time."""
    name, op = flt.property, flt.operator
    if name in ("lastmodifieddate", "hs_lastmodifieddate", "createdate", "hs_object_id"):
        actual = {"createdate": store.table.created_ms, "hs_object_id": store.table.ids}.get(
            name, store.table.modified_ms)[pos]
        value = int(flt.value) if flt.value is not None else None
        values = {int(v) for v in flt.values}
    else:
        raw = store.table.columns[name][pos]
        if op == "HAS_PROPERTY":
            return bool(raw)
        if op == "NOT_HAS_PROPERTY":
            return not raw
        if op == "NEQ":
            return raw is None or raw.lower() != flt.value.lower()
        if op == "NOT_IN":
            return raw is None or raw.lower() not in {v.lower() for v in flt.values}
        if raw is None:
            return False
        actual, value = raw.lower(), (flt.value or "").lower()
        values = {v.lower() for v in flt.values}
    return {"EQ": lambda: actual == value, "NEQ": lambda: actual != value, "LT": lambda: actual < value,
            "LTE": lambda: actual <= value, "GT": lambda: actual > value, "GTE": lambda: actual >= value,
            "IN": lambda: actual in values, "NOT_IN": lambda: actual not in values,
            "HAS_PROPERTY": lambda: True, "NOT_HAS_PROPERTY": lambda: False,
            "BETWEEN": lambda: value <= actual <= (int(flt.high_value) if isinstance(value, int)
                                                    else flt.high_value.lower())}[op]()


def _oracle(store: ObjectStore, request: SearchRequest) -> list[int]:
    groups = request.groups or ((),)
    return [pos for pos in range(len(store)) if store.state[pos] == LIVE
            and any(all(_oracle_match(store, pos, f) for f in group) for group in groups)]


def _sort_value(store: ObjectStore, sort: Sort | None, pos: int):
    if sort is None or sort.property == "hs_object_id":
        return store.table.ids[pos]
    if sort.property in ("lastmodifieddate", "hs_lastmodifieddate"):
        return store.table.modified_ms[pos]
    if sort.property == "createdate":
        return store.table.created_ms[pos]
    return (store.table.columns[sort.property][pos] or "").lower()


def _random_filter(rng: random.Random, store: ObjectStore) -> Filter:
    table = store.table
    pos = rng.randrange(len(store))
    kind = rng.choice(["modified", "modified", "id", "created", "country", "stage"])
    if kind in ("modified", "created"):
        name = rng.choice(["lastmodifieddate", "hs_lastmodifieddate"]) if kind == "modified" else "createdate"
        ms = (table.modified_ms if kind == "modified" else table.created_ms)[pos]
        op = rng.choice(["EQ", "GT", "GTE", "LT", "LTE", "BETWEEN", "NEQ", "IN"])
        high = str(ms + rng.randrange(10**10))
        return Filter(name, op, str(ms), high if op == "BETWEEN" else None,
                      (str(ms), str(table.modified_ms[0])) if op == "IN" else ())
    if kind == "id":
        op = rng.choice(["EQ", "GT", "GTE", "LT", "LTE", "BETWEEN", "IN", "NOT_IN"])
        value = table.ids[pos]
        return Filter("hs_object_id", op, str(value), str(value + 500) if op == "BETWEEN" else None,
                      tuple(str(table.ids[rng.randrange(len(store))]) for _ in range(5)) if "IN" in op else ())
    name = "country" if kind == "country" else "lifecyclestage"
    op = rng.choice(["EQ", "NEQ", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY", "GT"])
    value = table.columns[name][pos] or "lead"
    return Filter(name, op, None if "HAS" in op else value, None, (value.lower(), "de") if "IN" in op else ())


SORTS = [None, Sort("lastmodifieddate"), Sort("lastmodifieddate", True), Sort("hs_object_id"),
         Sort("hs_object_id", True), Sort("createdate"), Sort("country", True)]


def _check_against_oracle(store: ObjectStore, groups: tuple, sort: Sort | None, hidden=frozenset()) -> None:
    expected = [pos for pos in _oracle(store, SearchRequest(groups)) if pos not in hidden]
    collected, after = [], 0
    while True:
        total, page = execute(store, SearchRequest(groups, sort, limit=200, after=after), hidden)
        assert total == len(expected)
        collected += page
        after += len(page)
        if not page or after >= total:
            break
    assert sorted(collected) == expected  # every match exactly once
    keys = [_sort_value(store, sort, pos) for pos in collected]
    assert keys == sorted(keys, reverse=bool(sort and sort.descending))


@pytest.mark.parametrize("seed", range(25))
def test_search_matches_the_oracle(store, seed):
    rng = random.Random(seed)
    groups = tuple(tuple(_random_filter(rng, store) for _ in range(rng.randint(1, 3)))
                   for _ in range(rng.randint(0, 3)))
    _check_against_oracle(store, groups, rng.choice(SORTS), frozenset(rng.sample(range(len(store)), 20)))


def _modified_window(store: ObjectStore) -> tuple[Filter, Filter]:
    ordered = sorted(store.table.modified_ms)
    return Filter("lastmodifieddate", "GT", str(ordered[100])), Filter("lastmodifieddate", "LTE", str(ordered[2500]))


@pytest.mark.parametrize("shape", ["window", "window_desc", "id_range", "id_range_desc", "id_in", "everything"])
def test_indexed_shapes_match_the_oracle(store, shape):
    """The shapes an incremental sync sends, answered from the sorted indexes."""
    window = _modified_window(store)
    id_range = (Filter("hs_object_id", "GTE", str(store.table.ids[200])),
                Filter("hs_object_id", "LT", str(store.table.ids[2900])))
    groups, sort = {
        "window": ((window,), Sort("lastmodifieddate")),
        "window_desc": ((window,), Sort("hs_lastmodifieddate", True)),
        "id_range": ((id_range,), Sort("hs_object_id")),
        "id_range_desc": ((id_range,), Sort("hs_object_id", True)),
        "id_in": (((Filter("hs_object_id", "IN", values=tuple(str(i) for i in store.table.ids[:50])),),), None),
        "everything": ((), None),
    }[shape]
    _check_against_oracle(store, groups, sort)
    _check_against_oracle(store, groups, sort, hidden=frozenset(range(0, len(store), 7)))


def test_ties_in_a_timestamp_sort_do_not_come_back_by_id(store):
    ms, size = Counter(store.table.modified_ms).most_common(1)[0]
    assert size >= 20
    request = SearchRequest(((Filter("lastmodifieddate", "EQ", str(ms)),),), Sort("lastmodifieddate"), limit=200)
    total, page = execute(store, request)
    live_in_tie = [pos for pos in range(len(store)) if store.table.modified_ms[pos] == ms and store.state[pos] == LIVE]
    assert total == len(live_in_tie) and sorted(page) == live_in_tie[:200] or total > 200
    assert page != sorted(page)


def test_tie_drain_by_id_pages_through_one_millisecond(store):
    ms, _ = Counter(store.table.modified_ms).most_common(1)[0]
    last_id, drained = 0, []
    while True:
        request = SearchRequest(((Filter("lastmodifieddate", "EQ", str(ms)),
                                  Filter("hs_object_id", "GT", str(last_id))),), Sort("hs_object_id"), limit=7)
        _, page = execute(store, request)
        if not page:
            break
        drained += page
        last_id = store.table.ids[page[-1]]
    assert drained == [pos for pos in range(len(store))
                       if store.table.modified_ms[pos] == ms and store.state[pos] == LIVE]


def test_archived_deleted_and_lagging_records_are_not_found(store):
    everything = SearchRequest(limit=200)
    total, _ = execute(store, everything)
    assert total == len(store) - 4
    hidden = frozenset({0, 1, 2, 5})  # 5 is archived already
    lagging_total, page = execute(store, everything, hidden)
    assert lagging_total == total - 3 and not hidden & set(page)
    window = SearchRequest(((Filter("lastmodifieddate", "GTE", "0"),),), Sort("lastmodifieddate"), limit=200)
    assert execute(store, window, hidden)[0] == total - 3


def test_modify_moves_a_record_in_the_modified_index(store):
    store.modify(10, {"lifecyclestage": "customer"}, modified_ms=NOW + 5)
    request = SearchRequest(((Filter("lastmodifieddate", "GT", str(NOW)),),), Sort("lastmodifieddate"))
    assert execute(store, request) == (1, [10])
    store.archive(10)
    assert execute(store, request) == (0, [])
    store.restore(10)  # restoring counts as a change: now (NOW) is not after NOW
    assert execute(store, SearchRequest(((Filter("lastmodifieddate", "EQ", str(NOW)),),)))[1] == [10]


def test_text_query_searches_names_and_emails(store):
    name = store.table.columns["lastname"][100].strip()
    total, _ = execute(store, SearchRequest(query=name.lower(), limit=200))
    expected = sum(1 for pos in range(len(store)) if store.state[pos] == LIVE and any(
        name.lower() in (store.table.columns[c][pos] or "").lower()
        for c in ("firstname", "lastname", "email", "phone", "company")))
    assert total == expected > 0


@pytest.mark.parametrize("sort", SORTS)
def test_modified_range_with_an_id_range_matches_the_oracle(store, sort):
    """The planner reads the modified index and keeps the id range as a position window."""
    from conduit.standin.search import _plan

    lo, hi = store.table.ids[60], store.table.ids[2990]
    for id_filters in ((Filter("hs_object_id", "GT", str(lo)),),
                       (Filter("hs_object_id", "GTE", str(lo)), Filter("hs_object_id", "LT", str(hi))),
                       (Filter("hs_object_id", "BETWEEN", str(lo), str(hi)),
                        Filter("country", "NEQ", "de"))):
        groups = ((*_modified_window(store), *id_filters),)
        _check_against_oracle(store, groups, sort)
        _check_against_oracle(store, groups, sort, hidden=frozenset(range(0, len(store), 5)))
        assert _plan(store, groups[0], sort).window is not None  # the modified index was chosen


def test_an_id_range_with_no_records_counts_none(store):
    """Bounds that cross (``GT`` above ``LT``) with archived records between them: no record, a total of 0."""
    ids = store.ids
    crossed = SearchRequest(((Filter("hs_object_id", "GT", str(ids[400])), Filter("hs_object_id", "LT", str(ids[3]))),),
                            Sort("hs_object_id"), limit=10)
    assert execute(store, crossed) == (0, [])
