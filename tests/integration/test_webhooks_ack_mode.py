"""The Redis watcher in Airflow 3.3's shared-stream ack mode, driven through the triggerer's own
``TriggerRunner.run_trigger`` and ``SharedStreamManager`` against real Redis: a burst's stream
entries are acknowledged only once its asset event is confirmed stored, so a triggerer that dies
in between loses nothing.

Real: the runner's shared-stream branch (binding each event to a persistence sequence number), the
manager (fan-out, advance pump, ack timeout), the producer, Redis. Stood in for: the supervisor
process, whose confirmation is ``confirm_persisted([seq])``, exactly what
``TriggerRunner.sync_state_to_supervisor`` does with the ids the supervisor stored
(``tests/e2e/test_sync_e2e.py`` runs the real triggerer and supervisor)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from airflow.jobs.triggerer_job_runner import TriggerRunner

from conduit.triggers.redis_events import RedisStreamEventTrigger

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

FAST = {"poll_interval": 0.2, "burst_window": 0.1}


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def key(store: redis.Redis) -> Iterator[str]:
    name = f"conduit:events:ack_{uuid.uuid4().hex[:10]}"
    yield name
    store.delete(name)


def pending(store: redis.Redis, key: str) -> int:
    return store.xpending(key, "conduit")["pending"]


def start(key: str, redis_url: str, trigger_id: int = 1, **options) -> tuple[TriggerRunner, asyncio.Task]:
    """A triggerer's runner with the watcher of ``key`` running in it."""
    runner = TriggerRunner()
    runner.triggers[trigger_id] = {"name": f"watcher-{trigger_id}", "events": 0}
    trigger = RedisStreamEventTrigger(key, redis_url, **(options or FAST))
    return runner, asyncio.create_task(runner.run_trigger(trigger_id, trigger))


async def next_event(runner: TriggerRunner, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not runner.events:
        assert time.monotonic() < deadline, "no event fired"
        await asyncio.sleep(0.02)
    return runner.events.popleft()


async def until(condition, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def store_event(runner: TriggerRunner, entry, store: redis.Redis, key: str) -> None:
    """The supervisor's part: the event is stored and confirmed; then the burst must be acked."""
    runner._shared_streams.confirm_persisted([entry.persist_seq])
    await until(lambda: pending(store, key) == 0)


async def stop(runner: TriggerRunner, task: asyncio.Task) -> None:
    """What the triggerer does on shutdown: cancel the trigger, stop the shared streams."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await runner._shared_streams.stop_all()


def test_the_watcher_takes_the_ack_path_with_the_same_trigger_identity(key, redis_url):
    from airflow.triggers.shared_stream import _SharedStreamGroup

    trigger = RedisStreamEventTrigger(key, redis_url)
    group = _SharedStreamGroup(
        key=trigger.shared_stream_key(),
        trigger_class=type(trigger),
        kwargs=trigger.serialize()[1],
        on_poll_terminate=lambda _: None,
        max_subscriber_queue=8,
        ack_timeout=1,
        log=None,
    )
    assert group._ack_required
    # the dag-processor keys a watcher's trigger row by this hash: deployed watchers keep their rows
    classpath, kwargs = trigger.serialize()
    assert classpath == "conduit.triggers.redis_events.RedisStreamEventTrigger"
    # in this order: the hash is taken over their JSON
    assert list(kwargs.items()) == [
        ("stream_key", key),
        ("redis_url", redis_url),
        ("consumer_group", "conduit"),
        ("poll_interval", 5.0),
        ("burst_window", 2.0),
        ("max_batch", 500),
        ("read_timeout", 10.0),
    ]
    # Airflow logs the shared-stream key: a password in the URL must not reach it
    secret_url = "redis://:s3cret-pw@redis.internal:6379/0"
    assert "s3cret-pw" not in repr(RedisStreamEventTrigger(key, secret_url).shared_stream_key())
    assert RedisStreamEventTrigger(key, secret_url).shared_stream_key() != trigger.shared_stream_key()


def test_a_burst_is_acked_only_after_its_event_is_confirmed_stored(store, key, redis_url):
    async def scenario():
        runner, task = start(key, redis_url)
        ids = [store.xadd(key, {"objectId": str(i)}) for i in range(3)]
        entry = await next_event(runner)
        assert entry.event.payload["events"] == 3 and entry.event.payload["last_id"] == ids[-1]
        assert entry.persist_seq is not None  # the runner bound the event to the burst
        await asyncio.sleep(1.0)  # several polls: the runner has long asked for the next event
        assert pending(store, key) == 3
        await store_event(runner, entry, store, key)
        await asyncio.sleep(0.5)
        assert not runner.events  # one burst, one event
        await stop(runner, task)

    asyncio.run(scenario())


def test_later_bursts_fire_while_an_earlier_one_waits_and_acks_keep_stream_order(store, key, redis_url):
    async def scenario():
        runner, task = start(key, redis_url)
        store.xadd(key, {"objectId": "a"})
        first = await next_event(runner)
        await asyncio.sleep(0.5)
        store.xadd(key, {"objectId": "b"})
        second = await next_event(runner)  # not held up by the unconfirmed first burst
        assert second.event.payload["object_ids"] == ["b"]
        runner._shared_streams.confirm_persisted([second.persist_seq])
        await asyncio.sleep(0.5)
        assert pending(store, key) == 2  # the first is not confirmed yet, so neither is acked
        runner._shared_streams.confirm_persisted([first.persist_seq])
        await until(lambda: pending(store, key) == 0)
        await stop(runner, task)

    asyncio.run(scenario())


DYING_TRIGGERER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from airflow.jobs.triggerer_job_runner import TriggerRunner
    from conduit.triggers.redis_events import RedisStreamEventTrigger

    async def main():
        runner = TriggerRunner()
        runner.triggers[7] = {{"name": "watcher-7", "events": 0}}
        asyncio.create_task(runner.run_trigger(7, RedisStreamEventTrigger(
            {key!r}, {url!r}, poll_interval=0.2, burst_window=0.1)))
        deadline = time.monotonic() + 20
        while not runner.events and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        entry = runner.events.popleft()
        print("FIRED", entry.event.payload["events"], entry.event.payload["last_id"], flush=True)
        await asyncio.sleep(0.5)
        os._exit(1)  # dies before the supervisor confirmed the event stored

    asyncio.run(main())
    """
)


def test_a_burst_whose_event_was_never_stored_before_the_triggerer_died_fires_again(store, key, redis_url):
    ids = [store.xadd(key, {"objectId": str(i)}) for i in range(4)]
    dying = subprocess.run(
        [sys.executable, "-c", DYING_TRIGGERER.format(key=key, url=redis_url)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert dying.returncode == 1, dying.stderr[-2000:]
    assert f"FIRED 4 {ids[-1]}" in dying.stdout.splitlines(), (dying.stdout, dying.stderr[-2000:])
    assert pending(store, key) == 4  # read and fired, never acked

    async def scenario():
        runner, task = start(key, redis_url, trigger_id=7)  # the next triggerer
        entry = await next_event(runner)
        assert entry.event.payload["events"] == 4 and entry.event.payload["last_id"] == ids[-1]
        await store_event(runner, entry, store, key)
        await stop(runner, task)

    asyncio.run(scenario())


def test_a_shutdown_before_the_confirmation_leaves_the_burst_for_the_next_triggerer(store, key, redis_url):
    async def scenario():
        runner, task = start(key, redis_url)
        store.xadd(key, {"objectId": "x"})
        await next_event(runner)
        await stop(runner, task)
        assert pending(store, key) == 1
        runner, task = start(key, redis_url)
        entry = await next_event(runner)
        assert entry.event.payload["object_ids"] == ["x"]
        await store_event(runner, entry, store, key)
        await stop(runner, task)

    asyncio.run(scenario())


def test_an_event_never_confirmed_fails_the_watcher_on_the_ack_timeout_and_stays_pending(
    store, key, redis_url, monkeypatch
):
    from airflow.triggers.shared_stream import AckTimeout

    monkeypatch.setenv("AIRFLOW__TRIGGERER__SHARED_STREAM_ACK_TIMEOUT", "0.5")

    async def scenario():
        runner, task = start(key, redis_url)
        store.xadd(key, {"objectId": "x"})
        await next_event(runner)  # its storing failed: no confirmation comes
        with pytest.raises(AckTimeout):
            await asyncio.wait_for(task, 5)
        await asyncio.sleep(0.3)
        assert pending(store, key) == 1
        assert not runner._shared_streams._groups

    asyncio.run(scenario())


def test_the_triggerer_stops_a_watcher_blocked_in_a_long_read_at_once(store, key, redis_url):
    async def scenario():
        runner, task = start(key, redis_url, poll_interval=5, burst_window=0)
        await asyncio.sleep(0.5)  # inside XREADGROUP BLOCK 5000 now
        began = time.monotonic()
        await stop(runner, task)
        assert time.monotonic() - began < 1.8  # not after the 5 s read nor the 2 s grace

    asyncio.run(scenario())


def test_advance_acks_stored_and_rejected_bursts_and_leaves_failed_and_unheard_ones_pending(
    store, key, redis_url
):
    """The producer's rules for the manager's outcomes: a burst every watcher took (its event
    stored) or refused is acked; one that failed (never confirmed stored) or that reached no watcher
    stays pending, for the next poll's backlog read."""
    from airflow.triggers.shared_stream import AdvanceItem, AdvanceOutcome

    from conduit.triggers.redis_events import RedisBurstProducer

    outcomes = {
        "stored": AdvanceOutcome(acked=1, failed=0),
        "refused": AdvanceOutcome(acked=0, failed=0, rejected=1),
        "failed": AdvanceOutcome(acked=1, failed=1),
        "unheard": AdvanceOutcome(acked=0, failed=0),
    }
    ids = {name: store.xadd(key, {"objectId": name}) for name in outcomes}

    async def scenario() -> list[str]:
        producer = RedisBurstProducer(RedisStreamEventTrigger(key, redis_url, **FAST).watch)
        bursts = producer.open_stream()
        payload, entry_ids = await asyncio.wait_for(anext(bursts), 5)
        assert set(entry_ids) == set(ids.values())
        await producer.advance([AdvanceItem((ids[name],), outcome) for name, outcome in outcomes.items()])
        await bursts.aclose()
        await producer.aclose()
        return [entry["message_id"] for entry in store.xpending_range(key, "conduit", "-", "+", 10)]

    assert sorted(asyncio.run(scenario())) == sorted([ids["failed"], ids["unheard"]])


def test_a_redis_restarted_without_its_consumer_group_fires_the_burst_again_and_keeps_watching(
    store, key, redis_url
):
    """A Redis restarted without persistence has lost the group and its pending list (NOGROUP): the
    watcher makes the group again, reads the stream from its start, and fires what it holds once
    more (a sync run too many, not one lost), then goes on watching."""

    async def scenario():
        runner, task = start(key, redis_url)
        store.xadd(key, {"objectId": "a"})
        first = await next_event(runner)
        await store_event(runner, first, store, key)
        store.xgroup_destroy(key, "conduit")  # what a restart without persistence leaves
        again = await next_event(runner)
        assert again.event.payload["object_ids"] == ["a"]
        await store_event(runner, again, store, key)
        store.xadd(key, {"objectId": "b"})
        later = await next_event(runner)
        assert later.event.payload["object_ids"] == ["b"]
        await store_event(runner, later, store, key)
        assert not task.done()
        await stop(runner, task)

    asyncio.run(scenario())


def test_a_redis_blip_neither_fires_a_burst_in_flight_again_nor_loses_its_ack(
    store, key, redis_url, monkeypatch
):
    """Redis drops the watcher's connection while a burst's event waits to be stored: the backlog
    read after the reconnect finds the burst still pending and must not fire it again. Then Redis
    refuses the burst's ack once: the ack is retried by the read loop (not raised, which would end
    the watcher), and the burst ends acked. (The faults are raised where redis-py raises them; a
    real CLIENT KILL would also cut other processes' connections to the shared Redis.)"""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from conduit.triggers.redis_events import RedisBurstProducer

    ack, collect = RedisBurstProducer._ack, RedisBurstProducer._collect
    faults = {"blip": False, "blips": 0, "refused": []}

    async def collect_with_a_blip(self, client, *, backlog):
        if faults["blip"] and not faults["blips"]:
            faults["blips"] += 1
            raise RedisConnectionError("Connection closed by server.")
        return await collect(self, client, backlog=backlog)

    async def ack_refused_once(self, client, entry_ids):
        if not faults["refused"]:
            faults["refused"].append(list(entry_ids))
            raise RedisConnectionError("Connection closed by server.")
        await ack(self, client, entry_ids)

    monkeypatch.setattr(RedisBurstProducer, "_collect", collect_with_a_blip)
    monkeypatch.setattr(RedisBurstProducer, "_ack", ack_refused_once)

    async def scenario():
        runner, task = start(key, redis_url)
        entry_id = store.xadd(key, {"objectId": "a"})
        event = await next_event(runner)
        faults["blip"] = True
        await asyncio.sleep(1.5)  # the blip, then the backlog read, where the burst is pending
        assert faults["blips"] == 1
        assert not runner.events
        assert pending(store, key) == 1
        await store_event(runner, event, store, key)  # acked in the end, by the retry
        assert faults["refused"] == [[entry_id]]
        await asyncio.sleep(0.5)
        assert not runner.events
        assert not task.done()
        await stop(runner, task)

    asyncio.run(scenario())


def test_a_burst_naming_more_objects_than_one_event_holds_reaches_the_sync_whole(store, key, redis_url):
    """A burst of changes to more objects than one event carries (``MAX_OBJECT_IDS``: a bulk import,
    or the backlog of a watcher that was down): every object id must reach an asset event before
    the burst's entries are acked. A record changed seconds ago is above the sync run's window and
    is read only by id, so an id dropped here is not synced by the run its webhook started."""
    from conduit.triggers.redis_events import MAX_OBJECT_IDS

    object_ids = [str(1000 + i) for i in range(MAX_OBJECT_IDS + 7)]
    pipe = store.pipeline()
    for oid in object_ids:
        pipe.xadd(key, {"objectId": oid})
    pipe.xadd(key, {"objectId": object_ids[0]})  # a second change to an object already named
    pipe.execute()

    async def scenario() -> list[dict]:
        runner, task = start(key, redis_url, max_batch=300, **FAST)
        payloads = []
        while sum(p["events"] for p in payloads) < len(object_ids) + 1:
            entry = await next_event(runner)
            payloads.append(entry.event.payload)
            runner._shared_streams.confirm_persisted([entry.persist_seq])
        await until(lambda: pending(store, key) == 0)
        await asyncio.sleep(0.5)
        assert not runner.events  # nothing fires twice
        await stop(runner, task)
        return payloads

    payloads = asyncio.run(scenario())
    named = [oid for payload in payloads for oid in payload["object_ids"]]
    assert sorted(set(named)) == sorted(object_ids)
    assert all(len(payload["object_ids"]) <= MAX_OBJECT_IDS for payload in payloads)
