"""The body of a HubSpot webhook call: a JSON array of change events.

Only the fields the sync needs are kept; HubSpot's other fields (portalId, attemptNumber,
propertyValue, ...) are ignored, so a property value never lands in Redis.

A HubSpot app has one target URL for all its subscriptions, so one batch can mix subscription
types. An association change (``<object>.associationChange``) names two objects
(``fromObjectId``/``toObjectId``) and no ``objectId``: it is valid, checked like any event, and
becomes no stream entry (:func:`object_events`); rejecting it would reject the whole batch, the
changes delivered beside it included.

A merge (``<object>.merge``) names every record it touched: the survivor (``objectId``,
``primaryObjectId``, ``newObjectId``) and the records merged into it (``mergedObjectIds``), which
are gone afterwards. Each named id becomes a stream entry of its own (:meth:`HubSpotEvent.stream_entries`),
so a sync run reads every one of them by id: the survivor is loaded, and the ids the CRM no longer
has (merged away; or erased by a ``privacyDeletion``) are removed from the ERP by that run.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class InvalidPayload(ValueError):
    """The body is not a JSON array of HubSpot events; the message says what is wrong."""


MAX_INT64 = 2**63 - 1
ASSOCIATION_CHANGE = ".associationChange"
MAX_MERGED_IDS = 1000  # the records one merge event names besides its survivor (HubSpot merges two)


class HubSpotEvent(BaseModel):
    # strict: "123" is not an id and 1.5 is not a timestamp
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    # HubSpot's ids and epoch-millisecond times are 64-bit integers; a larger number is not HubSpot's
    event_id: int = Field(alias="eventId", ge=0, le=MAX_INT64)
    object_id: int | None = Field(None, alias="objectId", ge=0, le=MAX_INT64)  # None: association changes only
    subscription_type: str = Field(alias="subscriptionType", pattern=r"^[a-z_]+\.[A-Za-z_]+$", max_length=100)
    occurred_at: int = Field(alias="occurredAt", ge=0, le=MAX_INT64)
    # merges only: the survivor, and the records merged into it
    primary_object_id: int | None = Field(None, alias="primaryObjectId", ge=0, le=MAX_INT64)
    new_object_id: int | None = Field(None, alias="newObjectId", ge=0, le=MAX_INT64)
    merged_object_ids: list[Annotated[int, Field(ge=0, le=MAX_INT64)]] = Field(
        default_factory=list, alias="mergedObjectIds", max_length=MAX_MERGED_IDS)

    @property
    def names_an_object(self) -> bool:
        return not self.subscription_type.endswith(ASSOCIATION_CHANGE)

    def object_ids(self) -> list[int]:
        """Every object the event names, once each: ``objectId``, then a merge's survivor and the
        records merged into it."""
        named = [self.object_id, self.primary_object_id, self.new_object_id, *self.merged_object_ids]
        return list(dict.fromkeys(i for i in named if i is not None))

    def stream_entries(self) -> list[dict[str, str]]:
        """The entries written to the sync's Redis stream: one per object the event names
        (:meth:`object_ids`), keyed by HubSpot's own field names."""
        return [{**self.stream_fields(), "objectId": str(object_id)} for object_id in self.object_ids()]

    def stream_fields(self) -> dict[str, str]:
        """The entry of the event's ``objectId``, keyed by HubSpot's own field names."""
        return {
            "objectId": str(self.object_id),
            "subscriptionType": self.subscription_type,
            "occurredAt": str(self.occurred_at),
            "eventId": str(self.event_id),
        }


_EVENTS = TypeAdapter(list[HubSpotEvent])
_MAX_REPORTED_ERRORS = 5


def parse_events(body: bytes) -> list[HubSpotEvent]:
    """Validate a webhook body; raise InvalidPayload naming the first few problems."""
    try:
        events = _EVENTS.validate_json(body)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)[:_MAX_REPORTED_ERRORS]
        ]
        raise InvalidPayload("; ".join(problems)) from None
    if not events:
        raise InvalidPayload("body: the event array is empty")
    missing = [i for i, event in enumerate(events) if event.object_id is None and event.names_an_object]
    if missing:
        raise InvalidPayload("; ".join(f"{i}.objectId: Field required" for i in missing[:_MAX_REPORTED_ERRORS]))
    return events


def object_events(events: list[HubSpotEvent]) -> list[HubSpotEvent]:
    """The events that become stream entries: those naming the object that changed."""
    return [event for event in events if event.names_an_object]
