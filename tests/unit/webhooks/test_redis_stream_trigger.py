"""The Redis stream watcher without Redis: burst coalescing, arguments, serialization."""

from __future__ import annotations

import pytest
from airflow.sdk import AssetWatcher
from airflow.triggers.base import BaseEventTrigger

from conduit.triggers.redis_events import (
    MAX_OBJECT_IDS,
    RedisStreamEventTrigger,
    coalesce,
    crm_change_watcher,
    crm_changes_asset,
    split_burst,
)


def test_a_burst_becomes_one_payload_with_distinct_objects_in_arrival_order():
    entries = [
        ("1700000000000-0", {"objectId": "7"}),
        ("1700000000000-1", {"objectId": "3"}),
        ("1700000000001-0", {"objectId": "7"}),
        ("1700000000002-0", None),  # trimmed from the stream while pending: counted, no object
    ]
    assert coalesce("conduit:events:x", entries) == {
        "stream": "conduit:events:x",
        "events": 4,
        "object_ids": ["7", "3"],
        "last_id": "1700000000002-0",
    }


def test_last_id_compares_stream_ids_numerically_not_as_text():
    entries = [("999-0", {"objectId": "1"}), ("1000-0", {"objectId": "2"}), ("999-10", {"objectId": "3"})]
    assert coalesce("s", entries)["last_id"] == "1000-0"


def test_object_ids_are_capped_but_every_event_is_counted():
    entries = [(f"1-{i}", {"objectId": str(i)}) for i in range(MAX_OBJECT_IDS + 5)]
    payload = coalesce("s", entries)
    assert payload["events"] == MAX_OBJECT_IDS + 5
    assert payload["object_ids"] == [str(i) for i in range(MAX_OBJECT_IDS)]


def test_a_burst_past_the_cap_is_split_so_no_object_id_is_cut_off():
    entries = [(f"1-{i}", {"objectId": str(i % (MAX_OBJECT_IDS + 2))}) for i in range(MAX_OBJECT_IDS + 4)]
    entries.insert(3, ("0-9", {}))  # trimmed away: belongs to whichever part it falls in
    parts = split_burst(entries)
    assert [entry for part in parts for entry in part] == entries  # in stream order, none lost
    payloads = [coalesce("s", part) for part in parts]
    assert [len(p["object_ids"]) for p in payloads] == [MAX_OBJECT_IDS, 4]  # 0 and 1 changed again later
    assert {oid for p in payloads for oid in p["object_ids"]} == {str(i) for i in range(MAX_OBJECT_IDS + 2)}
    assert split_burst(entries[:5]) == [entries[:5]] and split_burst([]) == []


def test_an_empty_burst_is_a_bug_not_an_event():
    with pytest.raises(ValueError, match="empty burst"):
        coalesce("s", [])


def test_serialize_recreates_an_equal_trigger():
    trigger = RedisStreamEventTrigger("conduit:events:x", "redis://r:6379/1", "grp", 1.5, 0.5, 10)
    classpath, kwargs = trigger.serialize()
    assert classpath == "conduit.triggers.redis_events.RedisStreamEventTrigger"
    assert RedisStreamEventTrigger(**kwargs).serialize() == (classpath, kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stream_key": ""},
        {"poll_interval": 0},
        {"burst_window": -1},
        {"max_batch": 0},
        {"consumer_group": ""},
    ],
)
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        RedisStreamEventTrigger(**{"stream_key": "s", **kwargs})


def test_helpers_build_the_watched_asset_of_a_sync():
    asset = crm_changes_asset("hubspot_customers", poll_interval=2.0)
    assert asset.name == "conduit.hubspot_customers.crm_changes"
    [watcher] = asset.watchers
    assert isinstance(watcher, AssetWatcher) and isinstance(watcher.trigger, BaseEventTrigger)
    _, kwargs = watcher.trigger.serialize()
    assert kwargs["stream_key"] == "conduit:events:hubspot_customers"
    assert kwargs["redis_url"] is None  # resolved in the triggerer, so no credentials in the DAG
    assert kwargs["poll_interval"] == 2.0


def test_helpers_refuse_names_that_are_not_sync_names():
    with pytest.raises(ValueError, match="must match"):
        crm_change_watcher("Customers:*")
