"""Merge events name the records a merge took away in ``mergedObjectIds`` (HubSpot changelog "New
subscription types for Webhooks": ``primaryObjectId``, ``mergedObjectIds``, ``newObjectId``): every
id a merge names must reach the stream, or the sync never reads (nor removes) the merged-away record.

Found: only ``objectId`` (the survivor) was kept; the merged-away ids were dropped at the receiver."""

from __future__ import annotations

import json

import pytest
from test_webhook_receiver import hubspot, hubspot_event  # noqa: F401  (the fixture, real Redis)

from conduit.webhooks.payload import InvalidPayload, parse_events


def merge_event(event_id: int, primary: int, merged: list, new: int | None = None) -> dict:
    return {**hubspot_event(primary, event_id), "subscriptionType": "contact.merge", "primaryObjectId": primary,
            "mergedObjectIds": merged, "newObjectId": primary if new is None else new,
            "numberOfPropertiesMoved": 3}


def privacy_deletion(event_id: int, object_id: int) -> dict:
    return {**hubspot_event(object_id, event_id), "subscriptionType": "contact.privacyDeletion"}


def test_a_merge_names_its_survivor_and_every_merged_record_once():
    (merge,) = parse_events(json.dumps([merge_event(1, 101, [102, 103, 101])]).encode())

    assert merge.object_ids() == [101, 102, 103]
    assert [entry["objectId"] for entry in merge.stream_entries()] == ["101", "102", "103"]
    assert {entry["subscriptionType"] for entry in merge.stream_entries()} == {"contact.merge"}


def test_a_merge_into_a_new_record_names_the_new_one_too():
    (merge,) = parse_events(json.dumps([merge_event(1, 101, [102], new=200)]).encode())

    assert merge.object_ids() == [101, 200, 102]


def test_other_events_name_their_object_only():
    (erasure,) = parse_events(json.dumps([privacy_deletion(1, 55)]).encode())

    assert [entry["objectId"] for entry in erasure.stream_entries()] == ["55"]
    assert erasure.stream_entries() == [erasure.stream_fields()]


@pytest.mark.parametrize("merged", [["102"], [1.5], [-1], 102, [2**63]])
def test_merged_ids_are_checked_as_strictly_as_object_ids(merged):
    with pytest.raises(InvalidPayload, match="mergedObjectIds"):
        parse_events(json.dumps([merge_event(1, 101, merged)]).encode())


@pytest.mark.redis
def test_the_receiver_streams_every_record_a_merge_names(hubspot):  # noqa: F811
    response = hubspot.post([merge_event(1, 101, [102]), privacy_deletion(2, 300), hubspot_event(400, 3)])

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 3}  # events, as before: a merge is one event
    assert [(e["objectId"], e["subscriptionType"]) for e in hubspot.stream()] == [
        ("101", "contact.merge"), ("102", "contact.merge"), ("300", "contact.privacyDeletion"),
        ("400", hubspot_event(400, 3)["subscriptionType"])]
