"""Webhook bodies: only a JSON array of well-formed HubSpot events passes."""

from __future__ import annotations

import json

import pytest

from conduit.webhooks.payload import InvalidPayload, parse_events

EVENT = {
    "eventId": 100,
    "subscriptionId": 7,
    "portalId": 62515,
    "occurredAt": 1_750_000_000_000,
    "subscriptionType": "contact.propertyChange",
    "attemptNumber": 0,
    "objectId": 123,
    "propertyName": "email",
    "propertyValue": "someone@example.com",
}


def body(value) -> bytes:
    return json.dumps(value).encode()


def test_events_keep_only_the_fields_the_sync_needs():
    [event] = parse_events(body([EVENT]))
    assert event.stream_fields() == {
        "objectId": "123",
        "subscriptionType": "contact.propertyChange",
        "occurredAt": "1750000000000",
        "eventId": "100",
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[{not json", "Invalid JSON"),
        (body(EVENT), "body: Input should be a valid array"),
        (body([]), "the event array is empty"),
        (body([{**EVENT, "objectId": "123"}]), "0.objectId: Input should be a valid integer"),
        (body([EVENT, {k: v for k, v in EVENT.items() if k != "eventId"}]), "1.eventId: Field required"),
        (body([{**EVENT, "occurredAt": 1.5}]), "0.occurredAt"),
        (body([{**EVENT, "objectId": True}]), "0.objectId"),
        (body([{**EVENT, "subscriptionType": "drop table"}]), "0.subscriptionType"),
        (body([{**EVENT, "objectId": -1}]), "0.objectId"),
    ],
)
def test_malformed_bodies_are_rejected_with_the_place_named(raw, message):
    with pytest.raises(InvalidPayload, match=message):
        parse_events(raw)
