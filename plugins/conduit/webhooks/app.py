"""HubSpot webhook receiver: ``POST /conduit/webhooks/hubspot/{sync_name}``.

Airflow serves plugin FastAPI apps WITHOUT its own authentication, so the HubSpot v3 signature is
the only gate. Everything is checked before a single event reaches Redis:

===================================================  ======
sync name not ``[a-z][a-z0-9_]*``                     404
no secret configured for the sync                     503
body over ``MAX_BODY_BYTES`` (header or bytes read)   413
body shorter than its Content-Length (client gone)    400
bad/missing signature, stale or future timestamp      401
body not a JSON array of HubSpot events               400
same signature already accepted (a replay)            409
Redis unreachable                                     503 (HubSpot retries 5xx)
===================================================  ======

409 rather than 401 for a replay: the request IS authentic, it was simply delivered before.
A 202's ``accepted`` counts the events stored: association changes name no object to read and are
taken without a stream entry (one HubSpot app sends every subscription type to its one URL).

Configuration (environment, read per request):

- ``CONDUIT_HUBSPOT_WEBHOOK_SECRET__<SYNC>`` (sync name upper-cased), else
  ``CONDUIT_HUBSPOT_WEBHOOK_SECRET``: the HubSpot app's client secret.
- ``CONDUIT_WEBHOOK_PUBLIC_BASE_URL``: the public URL at which HubSpot reaches this app's mount
  point, e.g. ``https://hooks.example.com/conduit``. HubSpot signs the URL it called; behind a
  proxy that differs from the URL the API server sees. Default: the request's own URL.
- ``CONDUIT_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import NoReturn
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect

from conduit.webhooks.payload import HubSpotEvent, InvalidPayload, object_events, parse_events
from conduit.webhooks.signature import MAX_AGE_MS, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_v3
from conduit.webhooks.stream import STREAM_MAXLEN, is_sync_name, redis_url_from_env, replay_key, stream_key

log = logging.getLogger(__name__)

SECRET_ENV = "CONDUIT_HUBSPOT_WEBHOOK_SECRET"
PUBLIC_BASE_URL_ENV = "CONDUIT_WEBHOOK_PUBLIC_BASE_URL"
# HubSpot sends at most 100 events (some 30 KiB) per call; anything far bigger is not HubSpot.
MAX_BODY_BYTES = 1024 * 1024
# HubSpot gives up on a call after 5 s: fail fast with 503 so it retries, rather than hang.
REDIS_TIMEOUT_S = 2.0
# Keeps a replay-guard key a little past the end of its signature's validity (clock granularity).
REPLAY_GUARD_MARGIN_MS = 1000


def webhook_secret(sync_name: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The sync's own secret if set, else the shared one, else None (then nothing is accepted)."""
    return environ.get(f"{SECRET_ENV}__{sync_name.upper()}") or environ.get(SECRET_ENV) or None


def signed_uri(request_url: str, mount_path: str, public_base_url: str | None) -> str:
    """The URL HubSpot signed: the request URL, or its path below this app's public mount point.

    ``mount_path`` is the prefix the API server mounted this app at (ASGI ``root_path``); what
    follows it is the same on both sides of a proxy.
    """
    if not public_base_url:
        return request_url
    parts = urlsplit(request_url)
    app_path = parts.path.removeprefix(mount_path)
    return public_base_url.rstrip("/") + app_path + (f"?{parts.query}" if parts.query else "")


def replay_ttl_ms(timestamp_ms: int, now_ms: int) -> int:
    """How long to remember a signature: until its timestamp is too old to pass verification."""
    return max(timestamp_ms + MAX_AGE_MS - now_ms, 0) + REPLAY_GUARD_MARGIN_MS


def check_content_length(header: str | None, limit: int) -> None:
    if header is None:
        return  # chunked body: read_limited enforces the limit on the bytes themselves
    if not (header.isascii() and header.isdigit()):
        raise HTTPException(400, "Content-Length is not a number")
    digits = header.lstrip("0")  # length first: int() of thousands of digits raises
    if len(digits) > len(str(limit)) or int(digits or "0") > limit:
        raise HTTPException(413, f"body larger than {limit} bytes")


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Read a body, stopping as soon as it exceeds ``limit`` (a lying Content-Length included).
    A client that goes away mid-body (or sends a broken chunked body) gets a 400, not a traceback."""
    body = bytearray()
    try:
        async for chunk in chunks:
            body += chunk
            if len(body) > limit:
                raise HTTPException(413, f"body larger than {limit} bytes")
    except ClientDisconnect:
        raise HTTPException(400, "the body ended before its announced length") from None
    return bytes(body)


async def store_events(
    client: Redis, sync_name: str, signature: str, ttl_ms: int, events: list[HubSpotEvent]
) -> bool:
    """Append the events to the sync's stream unless this signature was accepted before.

    Returns False for a replay. The guard key and the events are written together or not at all,
    so a failed write does not make HubSpot's retry of the same request look like a replay.
    """
    guard = replay_key(sync_name, signature)
    if not await client.set(guard, "1", nx=True, px=ttl_ms):
        return False
    try:
        async with client.pipeline(transaction=True) as pipe:
            for event in events:
                for fields in event.stream_entries():  # a merge names its survivor and the merged
                    pipe.xadd(stream_key(sync_name), fields, maxlen=STREAM_MAXLEN, approximate=True)
            await pipe.execute()
    except RedisError:
        with contextlib.suppress(RedisError):
            await client.delete(guard)
        raise
    return True


def _reject(status: int, sync_name: str, reason: str) -> NoReturn:
    log.warning("rejected HubSpot webhook for sync %r (%s): %s", sync_name, status, reason)
    raise HTTPException(status, reason)


# No /docs or /openapi.json: this app is reachable without Airflow login, keep its surface minimal.
webhook_app = FastAPI(title="Conduit webhooks", docs_url=None, redoc_url=None, openapi_url=None)


@webhook_app.post("/webhooks/hubspot/{sync_name}", status_code=202)
async def receive_hubspot_events(sync_name: str, request: Request) -> dict[str, int]:
    if not is_sync_name(sync_name):
        raise HTTPException(404, "no such sync")
    secret = webhook_secret(sync_name)
    if secret is None:
        _reject(503, sync_name, f"no webhook secret configured ({SECRET_ENV}__{sync_name.upper()})")
    check_content_length(request.headers.get("content-length"), MAX_BODY_BYTES)
    body = await read_limited(request.stream(), MAX_BODY_BYTES)

    now_ms = int(time.time() * 1000)
    uri = signed_uri(
        str(request.url), request.scope.get("root_path", ""), os.environ.get(PUBLIC_BASE_URL_ENV)
    )
    signature = request.headers.get(SIGNATURE_HEADER)
    timestamp = request.headers.get(TIMESTAMP_HEADER)
    if problem := verify_v3(secret, request.method, uri, body, signature, timestamp, now_ms=now_ms):
        _reject(401, sync_name, problem)

    try:
        events = object_events(parse_events(body))  # an association change names no object to read
    except InvalidPayload as exc:
        _reject(400, sync_name, str(exc))

    try:
        async with Redis.from_url(
            redis_url_from_env(), socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
        ) as client:
            fresh = await store_events(
                client, sync_name, signature, replay_ttl_ms(int(timestamp), now_ms), events
            )
    except RedisError as exc:
        log.exception("could not store HubSpot webhook events for sync %r", sync_name)
        raise HTTPException(503, "event store unavailable, retry later") from exc
    if not fresh:
        _reject(409, sync_name, "this signed request was already accepted (replay)")
    return {"accepted": len(events)}
