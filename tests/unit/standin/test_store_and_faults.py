"""Listing, cursors, admin changes, fault schedules, rate limits and webhook event shapes."""

from __future__ import annotations

import pytest

from conduit.standin.data import generate, iso_ms
from conduit.standin.errors import ApiError
from conduit.standin.faults import (
    FaultInjector,
    Faults,
    Limits,
    RateLimiter,
    RateLimitFault,
    ServerErrorFault,
)
from conduit.standin.store import ObjectStore, decode_cursor, encode_cursor
from conduit.standin.webhooks import change_events

NOW = 1_900_000_000_000


@pytest.fixture
def store():
    return ObjectStore(generate(seed=5, contacts=500, companies=10).contacts, lambda: NOW)


def _list_all(store: ObjectStore, archived: bool = False, limit: int = 100) -> list[int]:
    positions, after = [], None
    while True:
        page, after = store.list_page(after, limit, archived)
        positions += page
        if after is None:
            return positions


def test_cursor_is_opaque_and_round_trips():
    cursor = encode_cursor(525)
    assert not cursor.isdigit()
    assert decode_cursor(cursor) == 525


@pytest.mark.parametrize("cursor", ["525", "%%%", "bm90IGEgbnVtYmVyCg=="])
def test_a_bad_cursor_is_a_validation_error(cursor):
    with pytest.raises(ApiError) as caught:
        decode_cursor(cursor)
    assert caught.value.status == 400 and "after" in caught.value.message


def test_listing_pages_through_every_live_record_in_id_order(store):
    store.archive(3)
    store.delete(4)
    listed = _list_all(store, limit=7)
    assert listed == [pos for pos in range(len(store)) if pos not in (3, 4)]
    assert _list_all(store, archived=True) == [3]


def test_archived_records_carry_archived_at_and_deleted_ones_vanish(store):
    store.archive(9)
    record = store.render([9])[0]
    assert record["archived"] is True and record["archivedAt"] == iso_ms(NOW)
    store.delete(9)
    assert _list_all(store, archived=True) == [] and 9 not in _list_all(store)
    assert store.find(str(store.ids[9])) is None
    assert store.counts() == {"live": 499, "archived": 0, "deleted": 1}


def test_render_returns_strings_with_the_default_or_requested_properties(store):
    default = store.render([0])[0]
    assert set(default["properties"]) == {"createdate", "email", "firstname", "hs_object_id", "lastmodifieddate",
                                          "lastname"}
    picked = store.render([0], ["phone", "no_such_property", "hs_lastmodifieddate"])[0]
    assert set(picked["properties"]) == {"phone", "hs_object_id", "createdate", "lastmodifieddate",
                                         "hs_lastmodifieddate"}
    assert default["updatedAt"] == default["properties"]["lastmodifieddate"]
    assert default["id"] == default["properties"]["hs_object_id"] == str(store.ids[0])


def test_modify_sets_values_as_strings_and_bumps_lastmodifieddate(store):
    changed = store.modify(0, {"erp_number": 42, "vip": True, "phone": None}, modified_ms=NOW - 1)
    assert changed["erp_number"] == "42" and changed["vip"] == "true"
    assert store.table.modified_ms[0] == NOW - 1
    assert store.render([1], ["erp_number"])[0]["properties"]["erp_number"] is None
    with pytest.raises(ApiError, match="read-only"):
        store.modify(0, {"hs_object_id": "1"})


def test_create_appends_with_a_new_higher_id(store):
    pos = store.create({"email": "new@example.com", "firstname": "New", "lastname": "Person"})
    assert store.ids[pos] > store.ids[pos - 1]
    assert store.table.created_ms[pos] == store.table.modified_ms[pos] == NOW
    assert store.find("NEW@example.com ", "email") == pos
    assert _list_all(store)[-1] == pos


def test_bulk_modify_rebuilds_the_index(store):
    store.modify_many(list(range(0, 500, 2)) * 10, {}, modified_ms=NOW)
    keys = store.modified_index
    assert keys == sorted(keys) and len(keys) == len(store)
    assert store.modified_slice(NOW, NOW)[1] - store.modified_slice(NOW, NOW)[0] == 250


def test_restore_brings_a_record_back_as_a_change(store):
    store.archive(2)
    assert store.restore(2) and store.table.modified_ms[2] == NOW
    assert 2 in _list_all(store)


# --- faults ----------------------------------------------------------------------------------------


def test_rate_limit_every_nth_request():
    injector = FaultInjector(Faults(rate_limit=RateLimitFault(every=3, retry_after_s=2)))
    fired = [injector.next(is_search=False) for _ in range(6)]
    assert [f is not None for f in fired] == [False, False, True, False, False, True]
    assert fired[2].status == 429 and fired[2].policy == "TEN_SECONDLY_ROLLING" and fired[2].retry_after_s == 2


def test_a_burst_of_429s_then_normal_and_search_gets_the_secondly_policy():
    injector = FaultInjector(Faults(rate_limit=RateLimitFault(burst=2)))
    fired = [injector.next(is_search=True) for _ in range(3)]
    assert [f.policy if f else None for f in fired] == ["SECONDLY", "SECONDLY", None]
    assert "secondly limit" in fired[0].message


def test_server_errors_cycle_through_5xx_unless_a_status_is_given():
    cycled = FaultInjector(Faults(server_errors=ServerErrorFault(burst=4)))
    assert [cycled.next(False).status for _ in range(4)] == [500, 502, 503, 500]
    fixed = FaultInjector(Faults(server_errors=ServerErrorFault(every=2, status=504)))
    assert [f.status if f else None for f in (fixed.next(False) for _ in range(4))] == [None, 504, None, 504]


def test_rate_limiter_counts_in_headers_and_enforces_the_rolling_window():
    limiter = RateLimiter(Limits(interval_max=3, interval_ms=10_000, daily_max=100), enforce=True)
    verdicts = [limiter.hit(1_000 + i, is_search=False) for i in range(4)]
    assert [v is None for _, v in verdicts] == [True, True, True, False]
    headers, refused = verdicts[3]
    assert refused.policy == "TEN_SECONDLY_ROLLING" and refused.retry_after_s == 10
    assert headers["X-HubSpot-RateLimit-Remaining"] == "0" and headers["X-HubSpot-RateLimit-Max"] == "3"
    assert headers["X-HubSpot-RateLimit-Daily-Remaining"] == "97"
    assert limiter.hit(11_001, is_search=False)[1] is None  # the window rolled on


def test_rate_limiter_only_reports_when_not_enforcing():
    limiter = RateLimiter(Limits(interval_max=1), enforce=False)
    assert all(limiter.hit(5, is_search=True)[1] is None for _ in range(5))


def test_search_is_limited_per_second():
    limiter = RateLimiter(Limits(search_per_second=2), enforce=True)
    assert [limiter.hit(0, True)[1] is None for _ in range(3)] == [True, True, False]
    assert limiter.hit(1001, True)[1] is None


def test_webhook_events_follow_hubspot_shapes():
    [created] = change_events("contacts", "creation", 7, 123)
    assert created == {"subscriptionType": "contact.creation", "objectId": 7, "occurredAt": 123, "changeSource": "API"}
    changes = change_events("companies", "propertyChange", 8, 124, {"name": "Acme", "phone": None})
    assert [(e["subscriptionType"], e["propertyName"], e["propertyValue"]) for e in changes] == [
        ("company.propertyChange", "name", "Acme"), ("company.propertyChange", "phone", None)]


def test_a_ratio_of_server_errors_is_drawn_from_the_seed():
    def fired(seed: int) -> list[bool]:
        injector = FaultInjector(Faults(server_errors=ServerErrorFault(ratio=0.3, seed=seed)))
        return [injector.next(is_search=False) is not None for _ in range(1000)]

    assert fired(5) == fired(5) != fired(6)
    assert 250 < sum(fired(5)) < 350


def test_body_faults_spoil_requests_the_status_faults_let_through():
    from conduit.standin.faults import BodyFault

    injector = FaultInjector(Faults(server_errors=ServerErrorFault(every=2),
                                    body=[BodyFault(kind="truncate", every=3), BodyFault(kind="reset", burst=1)]))
    spoiled = []
    for _ in range(6):
        status = injector.next(is_search=True)
        spoiled.append("5xx" if status else (fault.kind if (fault := injector.spoil()) else None))
    assert spoiled == ["reset", "5xx", "truncate", "5xx", None, "5xx"]


def test_a_merge_keeps_the_primary_and_leaves_no_trace_of_the_merged_record(store):
    primary, merged = 3, 4
    store.table.columns["phone"][primary] = None
    store.table.columns["phone"][merged] = "+1 202 555 0101"
    primary_id, merged_id = store.table.ids[primary], store.table.ids[merged]

    moved = store.merge(primary, merged)

    assert moved >= 1 and store.value(primary, "phone") == "+1 202 555 0101"  # filled where empty
    assert store.value(primary, "hs_merged_object_ids") == str(merged_id)
    assert store.find(str(primary_id)) == primary and store.find(str(merged_id)) is None  # gone, by id too
    assert merged not in _list_all(store) and merged not in _list_all(store, archived=True)  # not archived
    with pytest.raises(ApiError):
        store.merge(primary, merged)  # the merged record is no live record any more
