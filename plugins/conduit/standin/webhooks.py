"""HubSpot-style webhook delivery: events batched (up to 100 per POST), signed with v3, sent from
a background thread so admin calls stay fast. Failed deliveries are retried a few times and
then counted, never raised."""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from dataclasses import dataclass

import requests

from conduit.webhooks.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_v3

MAX_EVENTS_PER_REQUEST = 100
_ATTEMPTS = 3
_SUBSCRIPTION_PREFIX = {"contacts": "contact", "companies": "company"}


@dataclass(frozen=True)
class Subscription:
    target_url: str
    secret: str
    subscription_id: int = 1
    portal_id: int = 62515
    app_id: int = 1


def change_events(object_type: str, kind: str, object_id: int, occurred_at: int,
                  changes: dict[str, str | None] | None = None) -> list[dict]:
    """Events for one admin change. ``kind``: creation, propertyChange (one event per property) or deletion."""
    base = {"subscriptionType": f"{_SUBSCRIPTION_PREFIX[object_type]}.{kind}", "objectId": object_id,
            "occurredAt": occurred_at, "changeSource": "API"}
    if kind != "propertyChange":
        return [base]
    return [{**base, "propertyName": name, "propertyValue": value} for name, value in (changes or {}).items()]


def merge_event(object_type: str, primary_id: int, merged_ids: list[int], occurred_at: int,
                properties_moved: int) -> dict:
    """HubSpot's merge event (changelog "New subscription types for Webhooks"): ``objectId`` and
    ``primaryObjectId`` name the surviving record (``newObjectId`` too: this stand-in's merges keep
    the primary's id), ``mergedObjectIds`` the records merged into it, which are gone."""
    return {"subscriptionType": f"{_SUBSCRIPTION_PREFIX[object_type]}.merge", "objectId": primary_id,
            "occurredAt": occurred_at, "changeSource": "API", "primaryObjectId": primary_id,
            "mergedObjectIds": merged_ids, "newObjectId": primary_id, "numberOfPropertiesMoved": properties_moved}


def privacy_deletion_event(object_type: str, object_id: int, occurred_at: int) -> dict:
    """A GDPR delete: ``<object>.privacyDeletion`` naming the erased record."""
    return {"subscriptionType": f"{_SUBSCRIPTION_PREFIX[object_type]}.privacyDeletion", "objectId": object_id,
            "occurredAt": occurred_at, "changeSource": "GDPR"}


class WebhookSender:
    def __init__(self):
        self.subscription: Subscription | None = None
        self.stats = {"events_queued": 0, "requests_sent": 0, "events_delivered": 0, "failures": 0}
        self._queue: queue.Queue[dict] = queue.Queue()
        self._event_ids = itertools.count(1)
        self._thread: threading.Thread | None = None

    def subscribe(self, subscription: Subscription | None) -> None:
        self.subscription = subscription
        if subscription and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="standin-webhooks", daemon=True)
            self._thread.start()

    def emit(self, events: list[dict]) -> None:
        subscription = self.subscription
        if subscription is None:
            return
        for event in events:
            self._queue.put({"eventId": next(self._event_ids), "subscriptionId": subscription.subscription_id,
                             "portalId": subscription.portal_id, "appId": subscription.app_id,
                             "attemptNumber": 0, **event})
            self.stats["events_queued"] += 1

    def _run(self) -> None:
        session = requests.Session()
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_EVENTS_PER_REQUEST:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            subscription = self.subscription
            if subscription is not None:
                self._deliver(session, subscription, batch)

    def _deliver(self, session: requests.Session, subscription: Subscription, batch: list[dict]) -> None:
        for attempt in range(_ATTEMPTS):
            body = json.dumps([{**event, "attemptNumber": attempt} for event in batch]).encode()
            timestamp = int(time.time() * 1000)
            headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(timestamp),
                       SIGNATURE_HEADER: sign_v3(subscription.secret, "POST", subscription.target_url, body, timestamp)}
            try:
                reply = session.post(subscription.target_url, data=body, headers=headers, timeout=5)
                self.stats["requests_sent"] += 1
                if reply.status_code < 300:
                    self.stats["events_delivered"] += len(batch)
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2 * (attempt + 1))
        self.stats["failures"] += 1
