"""Event-driven sync: an asset watcher over a sync's Redis change stream.

The webhook receiver appends one stream entry per HubSpot change; this trigger, run by the
triggerer as an ``AssetWatcher``, turns every burst of entries into ONE ``TriggerEvent`` (one
asset event, hence one sync run; a burst naming more than ``MAX_OBJECT_IDS`` objects into one event
per that many objects, which the scheduler usually hands to one run all the same). It runs in
Airflow 3.3's shared-stream **ack mode**: the triggerer drives :class:`RedisBurstProducer` (one
per stream + consumer group), hands each burst to :meth:`RedisStreamEventTrigger.filter_shared_stream`,
and calls ``advance`` - which XACKs the burst's entries - only once the burst's asset event is
confirmed stored in the metadata DB.
Delivery is at least once: a burst not acknowledged when the triggerer died (or whose event was
never confirmed persisted) is delivered again by the next poll (a sync run too many is harmless;
a missed one is not).

Usage in a DAG (the scheduled run stays as the safety net for missed webhooks)::

    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
        assets=crm_changes_asset("hubspot_customers"),
    )
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib
import logging
from collections.abc import AsyncIterator, Coroutine, Hashable, Mapping, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import Asset, AssetWatcher
from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from airflow.triggers.shared_stream import AdvanceItem, AdvanceOutcome, SharedStreamProducer

from conduit.webhooks.stream import redis_url_from_env, stream_key

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

# One fixed consumer name: a poll restarted elsewhere re-reads what its predecessor never acked.
CONSUMER = "watcher"
MAX_OBJECT_IDS = 1000
STOP_GRACE_S = 2.0  # how long a stopping watcher waits for its cancelled Redis work to wind down
RECANCEL_S = 0.05  # and how often it cancels that work again meanwhile

T = TypeVar("T")

StreamEntry = tuple[str, Mapping[str, str] | None]  # (entry id, fields; None once trimmed away)


def _id_order(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


def coalesce(stream: str, entries: Sequence[StreamEntry]) -> dict[str, Any]:
    """The payload of the one TriggerEvent for a burst: how many events, which objects, up to where."""
    if not entries:
        raise ValueError("cannot coalesce an empty burst")
    object_ids = dict.fromkeys(fields["objectId"] for _, fields in entries if fields and "objectId" in fields)
    return {
        "stream": stream,
        "events": len(entries),
        "object_ids": list(object_ids)[:MAX_OBJECT_IDS],
        "last_id": max((entry_id for entry_id, _ in entries), key=_id_order),
    }


def split_burst(entries: Sequence[StreamEntry]) -> list[list[StreamEntry]]:
    """A burst in stream order, cut where the next entry would name one object more than one
    event carries (``MAX_OBJECT_IDS``): every object id reaches an event, none is cut off."""
    parts: list[list[StreamEntry]] = []
    named: set[str] = set()
    for entry in entries:
        object_id = (entry[1] or {}).get("objectId")
        if not parts or (object_id is not None and object_id not in named and len(named) >= MAX_OBJECT_IDS):
            parts.append([])
            named = set()
        if object_id is not None:
            named.add(object_id)
        parts[-1].append(entry)
    return parts


@dataclasses.dataclass(frozen=True)
class StreamWatch:
    """What a watcher reads and how: :class:`RedisStreamEventTrigger`'s arguments (its serialized
    kwargs, which the triggerer also hands to :meth:`~RedisStreamEventTrigger.create_shared_stream_producer`)."""

    stream_key: str
    redis_url: str | None = None
    consumer_group: str = "conduit"
    poll_interval: float = 5.0
    burst_window: float = 2.0
    max_batch: int = 500
    read_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.stream_key or not self.consumer_group:
            raise ValueError("stream_key and consumer_group must not be empty")
        if self.poll_interval <= 0 or self.burst_window < 0 or self.max_batch < 1 or self.read_timeout <= 0:
            raise ValueError(
                f"need poll_interval > 0, burst_window >= 0, max_batch >= 1, read_timeout > 0; got "
                f"{self.poll_interval}, {self.burst_window}, {self.max_batch}, {self.read_timeout}"
            )


def taken(outcome: AdvanceOutcome) -> bool:
    """Whether a burst is done with: every watcher that heard of it took it (its event stored) or
    refused it. A failure (never confirmed stored) or no watcher at all: it must fire again."""
    return outcome.failed == 0 and outcome.acked + outcome.rejected > 0


class RedisBurstProducer(SharedStreamProducer):
    """Broker side of the watcher: reads bursts, yields ``(coalesced payload, entry ids)``, XACKs on advance.

    One instance per poll (the triggerer makes a new one whenever the group restarts), so the
    backlog ``"0"`` is read first by every poll: whatever an earlier poll fanned out but never
    advanced is delivered again.
    """

    def __init__(self, watch: StreamWatch):
        self.watch = watch
        self._client: Redis | None = None
        # ids fanned out and not yet acked: a backlog re-read after a Redis blip skips them (one whose
        # XACK is in flight right then can still fire twice: a sync run too many, never one too few)
        self._in_flight: set[str] = set()
        # ids whose XACK failed (Redis down): the read loop acks them before its next read
        self._ack_retry: list[str] = []

    def _redis(self) -> Redis:
        if self._client is None:
            # imported here: redis costs ~0.5 s and DAG files import this module to build watchers
            from redis.asyncio import Redis

            # a reply later than a blocking read's own wait raises, and the watcher reconnects
            late_reply_s = self.watch.poll_interval + self.watch.read_timeout
            self._client = Redis.from_url(
                self.watch.redis_url or redis_url_from_env(),
                decode_responses=True,
                protocol=2,  # the reply shapes parsed in _read are RESP2's
                socket_connect_timeout=10,
                socket_timeout=late_reply_s,
            )
        return self._client

    async def open_stream(self) -> AsyncIterator[tuple[dict[str, Any], tuple[str, ...]]]:
        # redis' first import takes ~0.5 s: in a thread, not on the triggerer's event loop
        await asyncio.to_thread(importlib.import_module, "redis.asyncio")
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        client = self._redis()
        group_ready = False
        backlog = True  # first read what an earlier poll of this watcher read but never acked
        while True:
            try:
                if not group_ready:
                    await _apart(self._create_group(client))
                    group_ready = True
                if retry := self._ack_retry[:]:  # advance() may add to it while this acks
                    await _apart(self._ack(client, retry))
                    del self._ack_retry[: len(retry)]
                    self._in_flight.difference_update(retry)
                entries = await _apart(self._collect(client, backlog=backlog))
                backlog = False
            except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                if isinstance(exc, ResponseError) and not str(exc).startswith("NOGROUP"):
                    raise
                # Redis down, or restarted without persistence (group gone): wait and start over
                if isinstance(exc, ResponseError):  # NOGROUP: the pending list is gone, nothing to ack
                    self._in_flight.clear()
                    self._ack_retry.clear()
                log.warning("Redis stream %s unavailable, retrying: %s", self.watch.stream_key, exc)
                group_ready, backlog = False, True
                await asyncio.sleep(self.watch.poll_interval)
                continue
            self._in_flight.update(entry_id for entry_id, _ in entries)
            for burst in split_burst(entries):  # usually one: more only past MAX_OBJECT_IDS objects
                yield coalesce(self.watch.stream_key, burst), tuple(entry_id for entry_id, _ in burst)

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        """XACK every burst whose event was persisted; leave the others pending for the next poll.

        ``failed`` (ack timeout: never confirmed persisted) and all-zero outcomes (fanned out while
        no subscriber was left) are not acked: they stay in the consumer's pending list and the next
        poll's backlog read delivers them again. A ``rejected`` burst is acked: there is no
        dead-letter stream, and a reject is a filter's deliberate "drop this".
        """
        ack = [entry_id for item in batch if taken(item.outcome) for entry_id in item.broker_payload]
        for item in batch:
            if not taken(item.outcome):
                # stays pending: not in flight any more, so a backlog read may deliver it again
                self._in_flight.difference_update(item.broker_payload)
        if not ack:
            return
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            await _apart(self._ack(self._redis(), ack))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # not raised: that would terminate the group (and fail the watcher) over a Redis blip
            log.warning("XACK on %s failed, retrying from the read loop: %s", self.watch.stream_key, exc)
            self._ack_retry += ack
            return
        self._in_flight.difference_update(ack)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _create_group(self, client: Redis) -> None:
        from redis.exceptions import ResponseError

        try:
            await client.xgroup_create(
                self.watch.stream_key, self.watch.consumer_group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):  # BUSYGROUP: it exists, which is all we need
                raise

    async def _read(self, client: Redis, start: str, block_ms: int | None = None) -> list[StreamEntry]:
        reply = await client.xreadgroup(
            self.watch.consumer_group,
            CONSUMER,
            {self.watch.stream_key: start},
            count=self.watch.max_batch,
            block=block_ms,
        )
        return list(reply[0][1]) if reply else []

    async def _drain(self, client: Redis, start: str) -> list[StreamEntry]:
        """Read until caught up: ``">"`` for new entries, ``"0"`` for this consumer's unacked ones."""
        entries: list[StreamEntry] = []
        while batch := await self._read(client, start):
            entries += batch
            if len(batch) < self.watch.max_batch:
                break
            if start != ">":
                start = batch[-1][0]  # the pending list is paged by id, new entries are not
        return entries

    async def _collect(self, client: Redis, *, backlog: bool) -> list[StreamEntry]:
        """Everything waiting for this watcher, or [] when ``poll_interval`` passed without news."""
        entries = await self._drain(client, "0") if backlog else []
        entries = [entry for entry in entries if entry[0] not in self._in_flight]
        if not entries:
            entries = await self._read(client, ">", block_ms=int(self.watch.poll_interval * 1000))
            if not entries:
                return []
            await asyncio.sleep(self.watch.burst_window)
        return entries + await self._drain(client, ">")

    async def _ack(self, client: Redis, entry_ids: Sequence[str]) -> None:
        for start in range(0, len(entry_ids), self.watch.max_batch):
            await client.xack(
                self.watch.stream_key,
                self.watch.consumer_group,
                *entry_ids[start : start + self.watch.max_batch],
            )


class RedisStreamEventTrigger(BaseEventTrigger):
    """Fire once per burst of entries on a Redis stream, read through a consumer group.

    :param stream_key: the stream, e.g. ``conduit.webhooks.stream.stream_key("hubspot_customers")``
    :param redis_url: None reads ``CONDUIT_REDIS_URL`` in the triggerer; prefer that, because trigger
        arguments are stored in the serialized DAG and a URL may carry a password
    :param consumer_group: created on first run (from the stream's start, so a backlog fires once)
    :param poll_interval: seconds one blocking read waits for news; also the back-off after Redis errors
    :param burst_window: seconds to keep collecting after the first entry of a burst, so a burst
        that trickles in over a few seconds still makes one sync run
    :param max_batch: entries per read and per acknowledgement
    :param read_timeout: seconds a reply may be late (beyond a blocking read's own wait) before the
        connection counts as dead and is made again

    Watchers of the same stream and consumer group share ONE poll (they would otherwise steal each
    other's pending entries, all reading as consumer ``watcher``); the tuning arguments of that poll
    are those of the watcher that started it.
    """

    def __init__(
        self,
        stream_key: str,
        redis_url: str | None = None,
        consumer_group: str = "conduit",
        poll_interval: float = 5.0,
        burst_window: float = 2.0,
        max_batch: int = 500,
        read_timeout: float = 10.0,
    ):
        super().__init__()
        self.watch = StreamWatch(
            stream_key, redis_url, consumer_group, poll_interval, burst_window, max_batch, read_timeout
        )

    @property
    def stream_key(self) -> str:
        return self.watch.stream_key

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # BaseEventTrigger.hash (classpath + these kwargs) keys the watcher's trigger row
        return f"{type(self).__module__}.{type(self).__qualname__}", dataclasses.asdict(self.watch)

    # --- ack mode -------------------------------------------------------------------------------

    def shared_stream_key(self) -> Hashable:
        # the broker-side cursor: one Redis, one stream, one consumer group (redis_url None = env's).
        # Airflow writes this key into its logs: the URL, which may carry a password, only as a digest
        url = self.watch.redis_url
        url_digest = hashlib.sha256(url.encode()).hexdigest()[:16] if url else None
        return ("conduit.redis_stream", url_digest, self.watch.stream_key, self.watch.consumer_group)

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> RedisBurstProducer:
        return RedisBurstProducer(StreamWatch(**kwargs))  # no I/O here: open_stream connects

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        # one raw event = one coalesced burst = one TriggerEvent, yielded before the next is pulled
        async for burst in shared_stream:
            yield TriggerEvent(burst)

    # --- standalone fallback (the triggerer uses it only if shared_stream_key() raised) ---------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Same producer, acked when the triggerer asks for the next event (the pre-ack-mode guarantee)."""
        producer = RedisBurstProducer(self.watch)
        try:
            async with aclosing(producer.open_stream()) as bursts:
                async for burst, entry_ids in bursts:
                    yield TriggerEvent(burst)
                    await producer.advance([AdvanceItem(entry_ids, AdvanceOutcome(acked=1, failed=0))])
        finally:
            await producer.aclose()


async def _apart(work: Coroutine[Any, Any, T]) -> T:
    """Await Redis work in a task of its own, so that a cancellation of the watcher (the triggerer
    stopping it) is raised here and stops it, whatever becomes of it inside the Redis client.

    With a socket timeout, redis-py sends each command through ``asyncio.wait_for``, and on Python
    3.11 a cancellation that arrives as that send finishes is dropped (``wait_for`` returns the
    finished send; redis/asyncio/connection.py ``send_packed_command``). Awaited directly, such a
    lost cancel left the watcher polling Redis for good: CI runs hung until killed. The work task
    can lose its cancel the same way, so it is cancelled again until it stops, for a bounded time.

    In ack mode the poll task the triggerer cancels on stop runs ``open_stream``, so its Redis
    work goes through here exactly as ``run()``'s did; ``advance`` too (the pump is only cancelled
    defensively, but the group's stop awaits it, so it must never hang).
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait([task])
    except asyncio.CancelledError:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_GRACE_S
        while not task.done() and (left := deadline - loop.time()) > 0:
            task.cancel()
            await asyncio.wait([task], timeout=min(RECANCEL_S, left))
        # its replies are dropped: entries it read stay pending and fire in the next poll
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a Redis error while stopping is no news worth a log line
        raise
    return task.result()


def crm_changes_asset_name(sync_name: str) -> str:
    return f"conduit.{sync_name}.crm_changes"


def crm_change_watcher(sync_name: str, redis_url: str | None = None, **trigger_kwargs: Any) -> AssetWatcher:
    """The watcher that turns webhook-delivered CRM changes of a sync into asset events."""
    return AssetWatcher(
        name=f"{crm_changes_asset_name(sync_name)}.watcher",
        trigger=RedisStreamEventTrigger(stream_key(sync_name), redis_url, **trigger_kwargs),
    )


def crm_changes_asset(sync_name: str, redis_url: str | None = None, **trigger_kwargs: Any) -> Asset:
    """``conduit.<sync>.crm_changes``, watched by :func:`crm_change_watcher`; schedule a sync DAG on it."""
    return Asset(
        name=crm_changes_asset_name(sync_name),
        watchers=[crm_change_watcher(sync_name, redis_url, **trigger_kwargs)],
    )
