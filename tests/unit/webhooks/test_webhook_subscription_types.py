"""Subscription types the sync does not read an object from: one HubSpot app has ONE target URL,
so every subscription of the app arrives there, mixed in the same batches (up to 100 events).
An association change names two objects (``fromObjectId``/``toObjectId``), not an ``objectId``
(developers.hubspot.com changelog "New subscription types for Webhooks"; the generic-webhook docs
give ``objectId``/``objectTypeId`` only for creation, deletion, merge, restore and property change).

Found: one association change in a batch failed the whole batch with 400, so the contact changes
delivered beside it never reached the stream (HubSpot retries a 4xx the same way and gives up)."""

from __future__ import annotations

import json

import pytest
from test_webhook_receiver import hubspot, hubspot_event  # noqa: F401  (the fixture, real Redis)

from conduit.webhooks.payload import InvalidPayload, parse_events


def association_change(event_id: int, from_id: int = 101, to_id: int = 9001) -> dict:
    """HubSpot's association-change event, as documented: no ``objectId``."""
    return {
        "eventId": event_id,
        "subscriptionId": 2,
        "portalId": 62515,
        "appId": 9,
        "occurredAt": 1_750_000_000_000 + event_id,
        "subscriptionType": "contact.associationChange",
        "attemptNumber": 0,
        "changeSource": "USER",
        "associationType": "CONTACT_TO_COMPANY",
        "fromObjectId": from_id,
        "toObjectId": to_id,
        "associationRemoved": False,
        "isPrimaryAssociation": False,
    }


@pytest.mark.redis
def test_an_association_change_in_a_batch_does_not_lose_the_contact_changes_beside_it(hubspot):  # noqa: F811
    response = hubspot.post([hubspot_event(101, 1), association_change(2), hubspot_event(102, 3)])

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2}
    assert [(e["objectId"], e["eventId"]) for e in hubspot.stream()] == [("101", "1"), ("102", "3")]


@pytest.mark.redis
def test_a_batch_of_association_changes_only_is_taken_and_stores_nothing(hubspot):  # noqa: F811
    response = hubspot.post([association_change(1), association_change(2, to_id=9002)])

    assert (response.status_code, response.json()) == (202, {"accepted": 0})
    assert hubspot.stream() == []
    assert len(hubspot.guard_keys()) == 1  # still authentic and seen: a replay of it is refused


def test_only_object_events_become_stream_entries():
    from conduit.webhooks.payload import object_events

    events = parse_events(json.dumps([association_change(1), hubspot_event(5, 2)]).encode())
    assert [e.stream_fields()["objectId"] for e in object_events(events)] == ["5"]


@pytest.mark.parametrize(
    ("event", "message"),
    [
        # only an association change may lack the object id
        ({**hubspot_event(1, 1), "objectId": None}, "0.objectId"),
        ({k: v for k, v in hubspot_event(1, 1).items() if k != "objectId"}, "0.objectId: Field required"),
        # and what it has is checked as strictly as any event's
        ({**association_change(1), "objectId": "7"}, "0.objectId: Input should be a valid integer"),
        ({**association_change(1), "eventId": "1"}, "0.eventId"),
        ({k: v for k, v in association_change(1).items() if k != "occurredAt"}, "0.occurredAt: Field required"),
    ],
)
def test_the_object_id_may_be_missing_from_association_changes_only(event, message):
    with pytest.raises(InvalidPayload, match=message):
        parse_events(json.dumps([event]).encode())
