"""The Redis stream watcher against real Redis, fed by the real webhook receiver, and the DAG
shape the sync uses (cron OR webhook changes) surviving Airflow's serializer."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pendulum
import pytest
import redis
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, task
from airflow.serialization.encoders import encode_trigger
from airflow.serialization.serialized_objects import DagSerialization
from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from fastapi import FastAPI
from fastapi.testclient import TestClient

from conduit.triggers.redis_events import (
    RedisBurstProducer,
    RedisStreamEventTrigger,
    crm_change_watcher,
    crm_changes_asset,
)
from conduit.webhooks.app import SECRET_ENV, webhook_app
from conduit.webhooks.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_v3
from conduit.webhooks.stream import REDIS_URL_ENV, replay_key, stream_key

# A watcher that does not stop when cancelled hangs its test: fail within 2 minutes, not pytest's 15
pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

QUIET_S = 1.0  # how long "nothing more fires" is watched for


@pytest.fixture
def sync_name(redis_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    store = redis.Redis.from_url(redis_url)
    store.delete(stream_key(name), *store.scan_iter(match=replay_key(name, "*")))
    store.close()


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def watcher(sync_name: str, redis_url: str, **kwargs) -> RedisStreamEventTrigger:
    return RedisStreamEventTrigger(
        stream_key(sync_name), redis_url, **{"poll_interval": 0.2, "burst_window": 0.1, **kwargs}
    )


async def next_event(events: AsyncIterator[TriggerEvent], timeout: float = 10) -> TriggerEvent:
    return await asyncio.wait_for(anext(events), timeout)


async def assert_quiet(events: AsyncIterator[TriggerEvent]) -> None:
    """Nothing fires for QUIET_S; the wait cancels the run, as the triggerer does when it stops."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(events), QUIET_S)


def add_events(store: redis.Redis, sync_name: str, object_ids: list[str]) -> list[str]:
    return [
        store.xadd(stream_key(sync_name), {"objectId": oid, "eventId": str(i)})
        for i, oid in enumerate(object_ids)
    ]


def pending(store: redis.Redis, sync_name: str) -> int:
    return store.xpending(stream_key(sync_name), "conduit")["pending"]


def test_a_burst_fires_once_is_acked_and_never_fires_again(sync_name, redis_url, store):
    async def scenario():
        events = watcher(sync_name, redis_url).run()
        await asyncio.sleep(0.3)  # the watcher is now blocked waiting for news
        ids = add_events(store, sync_name, ["11", "12", "11"])
        event = await next_event(events)
        assert event.payload == {
            "stream": stream_key(sync_name),
            "events": 3,
            "object_ids": ["11", "12"],
            "last_id": ids[-1],
        }
        assert pending(store, sync_name) == 3  # not acked before the triggerer took the event
        await assert_quiet(events)
        assert pending(store, sync_name) == 0
        await assert_quiet(watcher(sync_name, redis_url).run())  # a restart finds nothing to fire

    asyncio.run(scenario())


@pytest.mark.timeout(30)
def test_a_cancellation_the_redis_client_reports_as_its_own_error_still_stops_the_watcher(
    sync_name, redis_url, monkeypatch
):
    """The triggerer stops a watcher by cancelling it. Were a Redis client to surface that
    cancellation as its own TimeoutError, a watcher that treats those as Redis hiccups would retry
    forever (this was the first guess at the CI hangs; the test below has their real mechanism)."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    async def read_until_cancelled(self, client, start, block_ms=None):
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RedisTimeoutError("Timeout reading from 127.0.0.1:6379") from None
        return []

    monkeypatch.setattr(RedisBurstProducer, "_read", read_until_cancelled)
    assert_stops_when_cancelled(watcher(sync_name, redis_url))


@pytest.mark.timeout(30)
def test_a_cancellation_the_redis_client_swallows_still_stops_the_watcher(sync_name, redis_url, monkeypatch):
    """Worse than turning the cancellation into its own error: a client that catches it and answers
    as if the read had merely found nothing (a timeout context racing the cancel can do that). The
    watcher must stop all the same, with its Redis work cancelled, not keep polling."""
    reads: list[str] = []

    async def read_swallowing_the_cancel(self, client, start, block_ms=None):
        reads.append(start)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pass
        return []

    monkeypatch.setattr(RedisBurstProducer, "_read", read_swallowing_the_cancel)
    assert_stops_when_cancelled(watcher(sync_name, redis_url))
    # the round it was cancelled in ran on (backlog, then news), cut off at shutdown; none after it
    assert reads == ["0", ">"]


@pytest.mark.timeout(60)
def test_a_cancellation_redis_py_drops_as_its_send_finishes_still_stops_the_watcher(
    sync_name, redis_url, monkeypatch
):
    """The mechanism behind the CI hangs. With a socket timeout, redis-py sends each command through
    ``asyncio.wait_for``; on Python 3.11 a cancellation that arrives as that send finishes is
    dropped. Here the triggerer's cancel lands exactly there, on the watcher's blocking read: the
    watcher must stop, and no Redis work of it may go on (its work task lost the cancel the same way
    and is cancelled again)."""
    from redis.asyncio.connection import AbstractConnection

    send = AbstractConnection._send_packed_command
    reads_after_cancel: list[bytes] = []
    state: dict = {"reads": 0, "watcher": None}

    async def send_then_cancel_the_watcher_on_the_blocking_read(self, command):
        await send(self, command)
        if any(b"XREADGROUP" in bytes(part) for part in command):
            state["reads"] += 1
            if state["reads"] == 2:  # the backlog read, then the blocking read for news
                state["cancelled_at"] = time.monotonic()
                state["watcher"].cancel()  # the triggerer stops it as this send finishes
            elif state["reads"] > 2:
                reads_after_cancel.append(b"".join(bytes(part) for part in command))

    monkeypatch.setattr(
        AbstractConnection, "_send_packed_command", send_then_cancel_the_watcher_on_the_blocking_read
    )

    async def scenario() -> tuple[bool, float, list[asyncio.Task]]:
        events = watcher(sync_name, redis_url, poll_interval=5).run()

        async def triggerer() -> None:
            async for _ in events:
                pass

        state["watcher"] = asyncio.create_task(triggerer())
        done, _ = await asyncio.wait([state["watcher"]], timeout=10)
        stopped_s = time.monotonic() - state.get("cancelled_at", math.inf)
        await asyncio.sleep(1.0)  # Redis work that outlived the watcher would read again here
        still_running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return state["watcher"] in done, stopped_s, still_running

    outcome: list = []

    def run() -> None:
        try:
            outcome.append(asyncio.run(scenario()))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread to report
            outcome.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "the watcher lost its cancellation and is still working Redis"
    assert state["reads"] >= 2, "the scenario never reached the blocking read"
    [result] = outcome
    assert not isinstance(result, BaseException), result
    stopped, stopped_s, still_running = result
    assert stopped, "the watcher did not stop within 10 s of its cancellation"
    assert stopped_s < 1.8, stopped_s  # from the cancel: at once, not after the 5 s read or the 2 s grace
    assert still_running == []
    assert reads_after_cancel == []


def assert_stops_when_cancelled(trigger: RedisStreamEventTrigger) -> None:
    """Cancel the watcher's wait for its next event, as the triggerer does, and require it to stop.
    In a thread of its own: a watcher that loses its cancellation would hang the test's event loop
    (and pytest's own timeout with it) instead of failing the test."""

    async def scenario() -> None:
        events = trigger.run()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(events), 0.5)

    outcome: list[BaseException | None] = []
    runner = threading.Thread(target=lambda: outcome.append(_run_catching(scenario)), daemon=True)
    runner.start()
    runner.join(15)
    assert not runner.is_alive(), "the watcher ignored its cancellation and is still working Redis"
    assert outcome == [None], outcome


def _run_catching(scenario) -> BaseException | None:
    try:
        asyncio.run(scenario())
    except BaseException as exc:  # noqa: BLE001 - handed to the test's thread to report
        return exc
    return None


def test_events_waiting_before_the_first_run_fire_once_and_big_bursts_stay_one_event(
    sync_name, redis_url, store
):
    add_events(store, sync_name, [str(i) for i in range(25)])

    async def scenario():
        events = watcher(sync_name, redis_url, max_batch=4).run()
        event = await next_event(events)
        assert event.payload["events"] == 25
        assert event.payload["object_ids"] == [str(i) for i in range(25)]
        await assert_quiet(events)
        assert pending(store, sync_name) == 0

    asyncio.run(scenario())


def test_events_read_but_not_acked_when_the_triggerer_died_fire_again(sync_name, redis_url, store):
    add_events(store, sync_name, ["7", "8"])

    async def scenario():
        dying = watcher(sync_name, redis_url).run()
        first = await next_event(dying)
        await dying.aclose()  # stopped before asking for more: nothing was acked
        assert pending(store, sync_name) == 2
        events = watcher(sync_name, redis_url).run()
        again = await next_event(events)
        assert again.payload == first.payload
        await assert_quiet(events)
        assert pending(store, sync_name) == 0

    asyncio.run(scenario())


def test_an_existing_consumer_group_is_reused(sync_name, redis_url, store):
    store.xgroup_create(stream_key(sync_name), "conduit", id="$", mkstream=True)
    add_events(store, sync_name, ["5"])

    async def scenario():
        events = watcher(sync_name, redis_url).run()
        assert (await next_event(events)).payload["object_ids"] == ["5"]
        await events.aclose()

    asyncio.run(scenario())


def test_a_signed_webhook_reaches_the_watcher(sync_name, redis_url, monkeypatch):
    monkeypatch.setenv(REDIS_URL_ENV, redis_url)
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    airflow_api = FastAPI()
    airflow_api.mount("/conduit", webhook_app)
    path = f"/conduit/webhooks/hubspot/{sync_name}"
    body = json.dumps(
        [
            {"eventId": i, "objectId": 900 + i, "subscriptionType": "contact.creation", "occurredAt": 1}
            for i in (1, 2)
        ]
    ).encode()
    ts = int(time.time() * 1000)
    signature = sign_v3("s3cret", "POST", f"https://hooks.example.com{path}", body, ts)
    with TestClient(airflow_api, base_url="https://hooks.example.com") as client:
        response = client.post(
            path, content=body, headers={SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: str(ts)}
        )
    assert response.status_code == 202

    async def scenario():
        events = RedisStreamEventTrigger(stream_key(sync_name), poll_interval=0.2, burst_window=0).run()
        event = await next_event(events)
        await events.aclose()
        return event.payload

    payload = asyncio.run(scenario())  # redis_url=None: the watcher found Redis through CONDUIT_REDIS_URL
    assert payload["events"] == 2
    assert payload["object_ids"] == ["901", "902"]


def test_a_dag_scheduled_on_cron_or_crm_changes_serializes():
    with DAG(
        dag_id="conduit_watch_probe",
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
            assets=crm_changes_asset("hubspot_customers"),
        ),
    ) as dag:

        @task
        def sync():
            pass

        sync()

    serialized = DagSerialization.to_dict(dag)  # validates against Airflow's JSON schema
    text = json.dumps(serialized)
    assert "conduit.triggers.redis_events.RedisStreamEventTrigger" in text
    assert "conduit:events:hubspot_customers" in text

    restored = DagSerialization.from_dict(json.loads(text))
    [(_, asset)] = list(restored.timetable.asset_condition.iter_assets())
    assert asset.name == "conduit.hubspot_customers.crm_changes"
    [watched] = asset.watchers
    assert watched.trigger["classpath"] == "conduit.triggers.redis_events.RedisStreamEventTrigger"
    # the dag processor keys watcher triggers by this hash: a re-parse must find the same trigger
    restored_trigger = encode_trigger(watched.trigger)
    assert BaseEventTrigger.hash(
        restored_trigger["classpath"], restored_trigger["kwargs"]
    ) == BaseEventTrigger.hash(*crm_change_watcher("hubspot_customers").trigger.serialize())
    assert restored.timetable.summary  # the cron half survived too


def test_an_unreachable_redis_is_waited_out_not_crashed_on():
    async def scenario():
        await assert_quiet(watcher("any_sync", "redis://127.0.0.1:1/0").run())  # nothing listens on port 1

    asyncio.run(scenario())


def test_a_redis_that_never_answers_is_reconnected_not_waited_on_forever():
    """A server that accepts and then stays silent (a half-open socket, a stuck proxy): every read
    times out after poll_interval + read_timeout and the watcher connects again."""
    connections = []

    async def scenario():
        async def silent(reader, writer):
            connections.append(writer)
            await reader.read()  # never answers; returns when the client gives up

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            events = watcher("any_sync", f"redis://127.0.0.1:{port}/0", read_timeout=0.3).run()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(events), 3.0)
            await events.aclose()

    asyncio.run(scenario())
    assert len(connections) >= 2  # timed out (0.5 s), backed off (0.2 s), connected again
