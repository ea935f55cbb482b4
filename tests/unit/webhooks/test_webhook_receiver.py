"""The HubSpot webhook receiver against real Redis: what passes reaches the sync's stream, what is
rejected leaves it untouched."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient

from conduit.webhooks.app import (
    MAX_BODY_BYTES,
    PUBLIC_BASE_URL_ENV,
    REPLAY_GUARD_MARGIN_MS,
    SECRET_ENV,
    replay_ttl_ms,
    signed_uri,
    webhook_app,
    webhook_secret,
)
from conduit.webhooks.signature import MAX_AGE_MS, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_v3
from conduit.webhooks.stream import REDIS_URL_ENV, replay_key, stream_key

BASE_URL = "https://hooks.example.com"
SECRET = "s3cret"


def hubspot_event(object_id: int, event_id: int) -> dict:
    return {
        "eventId": event_id,
        "subscriptionId": 1,
        "portalId": 62515,
        "appId": 9,
        "occurredAt": 1_750_000_000_000 + event_id,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": object_id,
        "propertyName": "email",
        "propertyValue": "x@example.com",
        "changeSource": "CRM",
    }


class HubSpot:
    """Plays HubSpot: signs and posts to the receiver mounted the way Airflow mounts plugin apps."""

    def __init__(self, client: TestClient, sync_name: str, store: redis.Redis):
        self.client = client
        self.sync_name = sync_name
        self.store = store
        self.path = f"/conduit/webhooks/hubspot/{sync_name}"

    def post(
        self,
        body: bytes | list,
        *,
        secret: str = SECRET,
        timestamp_ms: int | None = None,
        signed_url: str | None = None,
        query: str = "",
        headers: dict | None = None,
    ):
        raw = json.dumps(body).encode() if isinstance(body, list) else body
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        url = self.path + (f"?{query}" if query else "")
        signature = sign_v3(secret, "POST", signed_url or BASE_URL + url, raw, ts)
        sent = {SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: str(ts), "Content-Type": "application/json"}
        return self.client.post(url, content=raw, headers={**sent, **(headers or {})})

    def stream(self) -> list[dict]:
        return [fields for _, fields in self.store.xrange(stream_key(self.sync_name))]

    def guard_keys(self) -> list[str]:
        return list(self.store.scan_iter(match=replay_key(self.sync_name, "*")))


def airflow_api_client() -> TestClient:
    airflow_api = FastAPI()
    airflow_api.mount("/conduit", webhook_app)  # what airflow.api_fastapi.app.init_plugins does
    return TestClient(airflow_api, base_url=BASE_URL)


@pytest.fixture
def hubspot(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubSpot]:
    sync_name = f"t_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(REDIS_URL_ENV, redis_url)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.delenv(PUBLIC_BASE_URL_ENV, raising=False)
    store = redis.Redis.from_url(redis_url, decode_responses=True)
    with airflow_api_client() as client:
        sender = HubSpot(client, sync_name, store)
        yield sender
    store.delete(stream_key(sync_name), *sender.guard_keys())
    store.close()


@pytest.mark.redis
def test_signed_events_land_in_the_sync_stream(hubspot):
    response = hubspot.post([hubspot_event(101, 1), hubspot_event(102, 2)])
    assert response.status_code == 202
    assert response.json() == {"accepted": 2}
    assert hubspot.stream() == [
        {
            "objectId": "101",
            "subscriptionType": "contact.propertyChange",
            "occurredAt": "1750000000001",
            "eventId": "1",
        },
        {
            "objectId": "102",
            "subscriptionType": "contact.propertyChange",
            "occurredAt": "1750000000002",
            "eventId": "2",
        },
    ]


@pytest.mark.redis
def test_replayed_request_is_refused_and_adds_nothing(hubspot):
    ts = int(time.time() * 1000)
    assert hubspot.post([hubspot_event(101, 1)], timestamp_ms=ts).status_code == 202
    replay = hubspot.post([hubspot_event(101, 1)], timestamp_ms=ts)
    assert replay.status_code == 409
    assert "replay" in replay.json()["detail"]
    assert len(hubspot.stream()) == 1
    # remembered exactly as long as the signature could pass the freshness check
    [guard] = hubspot.guard_keys()
    assert 0 < hubspot.store.pttl(guard) <= MAX_AGE_MS + REPLAY_GUARD_MARGIN_MS


@pytest.mark.redis
@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"secret": "not-the-secret"}, "signature does not match"),
        ({"age_ms": MAX_AGE_MS + 60_000}, "older than 5 minutes"),
        ({"age_ms": -(MAX_AGE_MS + 60_000)}, "in the future"),
        ({"headers": {SIGNATURE_HEADER: ""}}, "missing signature"),
        ({"headers": {TIMESTAMP_HEADER: "yesterday"}}, "not epoch milliseconds"),
        (
            {"signed_url": "https://evil.example.com/conduit/webhooks/hubspot/other"},
            "signature does not match",
        ),
    ],
)
def test_unauthentic_requests_are_refused_and_leave_no_trace(hubspot, kwargs, reason):
    if "age_ms" in kwargs:  # relative to now when the test runs, not when pytest collected it
        kwargs = {"timestamp_ms": int(time.time() * 1000) - kwargs["age_ms"]}
    response = hubspot.post([hubspot_event(101, 1)], **kwargs)
    assert response.status_code == 401
    assert reason in response.json()["detail"]
    assert hubspot.stream() == []
    assert hubspot.guard_keys() == []


@pytest.mark.redis
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[{oops", "Invalid JSON"),
        (b'{"objectId": 1}', "valid array"),
        (b"[]", "empty"),
        (json.dumps([{"objectId": 1}]).encode(), "Field required"),
    ],
)
def test_malformed_signed_bodies_are_refused_and_leave_no_trace(hubspot, body, reason):
    response = hubspot.post(body)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert hubspot.stream() == []
    assert hubspot.guard_keys() == []


@pytest.mark.redis
def test_oversized_body_is_refused_by_its_content_length(hubspot):
    events = [hubspot_event(i, i) for i in range(MAX_BODY_BYTES // 200)]
    assert len(json.dumps(events)) > MAX_BODY_BYTES
    assert hubspot.post(events).status_code == 413
    assert hubspot.stream() == []


@pytest.mark.redis
def test_oversized_body_without_content_length_is_cut_off_while_reading(hubspot):
    def chunks():  # a generator body is sent chunked, with no Content-Length to check up front
        yield b"[" + b" " * MAX_BODY_BYTES
        yield b"]"

    response = hubspot.client.post(hubspot.path, content=chunks())
    assert response.status_code == 413
    assert hubspot.stream() == []


@pytest.mark.redis
def test_content_length_is_checked_before_reading(hubspot):
    too_long = hubspot.post([hubspot_event(1, 1)], headers={"Content-Length": str(MAX_BODY_BYTES + 1)})
    assert too_long.status_code == 413
    assert hubspot.post([hubspot_event(1, 1)], headers={"Content-Length": "lots"}).status_code == 400
    assert hubspot.stream() == []


@pytest.mark.redis
def test_without_a_configured_secret_nothing_is_accepted(hubspot, monkeypatch):
    monkeypatch.delenv(SECRET_ENV)
    response = hubspot.post([hubspot_event(1, 1)])
    assert response.status_code == 503
    assert hubspot.stream() == []


@pytest.mark.redis
def test_a_sync_specific_secret_overrides_the_shared_one(hubspot, monkeypatch):
    monkeypatch.setenv(f"{SECRET_ENV}__{hubspot.sync_name.upper()}", "own-secret")
    assert hubspot.post([hubspot_event(1, 1)]).status_code == 401
    assert hubspot.post([hubspot_event(1, 1)], secret="own-secret").status_code == 202


@pytest.mark.redis
@pytest.mark.parametrize("name", ["Customers", "9lives", "a-b", "a%3Ab"])
def test_paths_that_are_not_sync_names_are_not_found(hubspot, name):
    response = hubspot.client.post(f"/conduit/webhooks/hubspot/{name}", content=b"[]")
    assert response.status_code == 404


@pytest.mark.redis
def test_behind_a_proxy_the_public_url_is_what_is_verified(hubspot, monkeypatch):
    public = f"https://crm-hooks.example.org/airflow/conduit/webhooks/hubspot/{hubspot.sync_name}?portal=1"
    assert hubspot.post([hubspot_event(1, 1)], signed_url=public, query="portal=1").status_code == 401
    monkeypatch.setenv(PUBLIC_BASE_URL_ENV, "https://crm-hooks.example.org/airflow/conduit/")
    assert hubspot.post([hubspot_event(1, 1)], signed_url=public, query="portal=1").status_code == 202


def test_unreachable_redis_answers_503_so_hubspot_retries(monkeypatch):
    monkeypatch.setenv(REDIS_URL_ENV, "redis://127.0.0.1:1/0")  # nothing listens on port 1
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.delenv(PUBLIC_BASE_URL_ENV, raising=False)
    with airflow_api_client() as client:
        assert HubSpot(client, "any_sync", store=None).post([hubspot_event(1, 1)]).status_code == 503


def test_secret_lookup_prefers_the_sync_own_secret():
    env = {SECRET_ENV: "shared", f"{SECRET_ENV}__CUSTOMERS": "own"}
    assert webhook_secret("customers", env) == "own"
    assert webhook_secret("deals", env) == "shared"
    assert webhook_secret("deals", {SECRET_ENV: ""}) is None


def test_signed_uri_rebuilds_the_public_url_below_the_mount_point():
    seen = "http://10.0.0.5:8080/conduit/webhooks/hubspot/x?a=1"
    assert signed_uri(seen, "/conduit", None) == seen
    assert (
        signed_uri(seen, "/conduit", "https://h.example.com/pub/")
        == "https://h.example.com/pub/webhooks/hubspot/x?a=1"
    )
    assert (
        signed_uri(seen.split("?")[0], "/conduit", "https://h.example.com")
        == "https://h.example.com/webhooks/hubspot/x"
    )


def test_replay_guard_outlives_the_signature_validity():
    now = 1_750_000_000_000
    assert replay_ttl_ms(now, now) == MAX_AGE_MS + REPLAY_GUARD_MARGIN_MS
    assert replay_ttl_ms(now + 60_000, now) == MAX_AGE_MS + 60_000 + REPLAY_GUARD_MARGIN_MS
    assert replay_ttl_ms(now - MAX_AGE_MS, now) == REPLAY_GUARD_MARGIN_MS
