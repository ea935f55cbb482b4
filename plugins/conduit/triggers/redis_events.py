"""Event-driven sync: an asset watcher over a sync's Redis change stream.

The webhook receiver appends one stream entry per HubSpot change; this trigger, run by the
triggerer as an ``AssetWatcher``, turns every burst of entries into ONE ``TriggerEvent`` (one
asset event, hence one sync run) and then acknowledges them, so they never fire again, not
even after a triggerer restart. Delivery is at least once: entries read but not acknowledged
when the triggerer died are delivered again by the next run (a sync run too many is harmless;
a missed one is not).

Usage in a DAG (the scheduled run stays as the safety net for missed webhooks)::

    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"),
        assets=crm_changes_asset("hubspot_customers"),
    )
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetWatcher
from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from conduit.webhooks.stream import redis_url_from_env, stream_key

if TYPE_CHECKING:
    from redis.asyncio import Redis

# One fixed consumer name: a trigger restarted elsewhere re-reads what its predecessor never acked.
CONSUMER = "watcher"
MAX_OBJECT_IDS = 1000

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
        connection counts as dead and is made again: a half-open socket or a server that never
        answers must not stall the watcher forever
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
        if not stream_key or not consumer_group:
            raise ValueError("stream_key and consumer_group must not be empty")
        if poll_interval <= 0 or burst_window < 0 or max_batch < 1 or read_timeout <= 0:
            raise ValueError(
                f"need poll_interval > 0, burst_window >= 0, max_batch >= 1, read_timeout > 0; got "
                f"{poll_interval}, {burst_window}, {max_batch}, {read_timeout}"
            )
        self.stream_key = stream_key
        self.redis_url = redis_url
        self.consumer_group = consumer_group
        self.poll_interval = poll_interval
        self.burst_window = burst_window
        self.max_batch = max_batch
        self.read_timeout = read_timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "stream_key": self.stream_key,
                "redis_url": self.redis_url,
                "consumer_group": self.consumer_group,
                "poll_interval": self.poll_interval,
                "burst_window": self.burst_window,
                "max_batch": self.max_batch,
                "read_timeout": self.read_timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # imported here: redis costs ~0.5 s and DAG files import this module to build watchers
        from redis.asyncio import Redis
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        client = Redis.from_url(
            self.redis_url or redis_url_from_env(),
            decode_responses=True,
            protocol=2,  # the reply shapes parsed in _read are RESP2's
            socket_connect_timeout=10,
            socket_timeout=self.poll_interval + self.read_timeout,  # a late reply raises, and we reconnect
        )
        group_ready = False
        backlog = True  # first read what an earlier run of this watcher read but never acked
        unacked: list[str] = []
        try:
            while True:
                try:
                    if not group_ready:
                        await self._create_group(client)
                        group_ready = True
                    if unacked:
                        await self._ack(client, unacked)
                        unacked = []
                    entries = await self._collect(client, backlog=backlog)
                    backlog = False
                except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
                    if _cancelling():
                        # the triggerer cancelled this run and the Redis client turned the
                        # cancellation into one of its errors: retrying would never stop
                        raise asyncio.CancelledError from exc
                    if isinstance(exc, ResponseError) and not str(exc).startswith("NOGROUP"):
                        raise
                    # Redis down, or restarted without persistence (group gone): wait and start over
                    self.log.warning("Redis stream %s unavailable, retrying: %s", self.stream_key, exc)
                    group_ready, backlog = False, True
                    await asyncio.sleep(self.poll_interval)
                    continue
                if entries:
                    yield TriggerEvent(coalesce(self.stream_key, entries))
                    # acked only once the triggerer asks for more, i.e. after it took the event
                    unacked = [entry_id for entry_id, _ in entries]
        finally:
            await client.aclose()

    async def _create_group(self, client: Redis) -> None:
        from redis.exceptions import ResponseError

        try:
            await client.xgroup_create(self.stream_key, self.consumer_group, id="0", mkstream=True)
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):  # BUSYGROUP: it exists, which is all we need
                raise

    async def _read(self, client: Redis, start: str, block_ms: int | None = None) -> list[StreamEntry]:
        reply = await client.xreadgroup(
            self.consumer_group, CONSUMER, {self.stream_key: start}, count=self.max_batch, block=block_ms
        )
        return list(reply[0][1]) if reply else []

    async def _drain(self, client: Redis, start: str) -> list[StreamEntry]:
        """Read until caught up: ``">"`` for new entries, ``"0"`` for this consumer's unacked ones."""
        entries: list[StreamEntry] = []
        while batch := await self._read(client, start):
            entries += batch
            if len(batch) < self.max_batch:
                break
            if start != ">":
                start = batch[-1][0]  # the pending list is paged by id, new entries are not
        return entries

    async def _collect(self, client: Redis, *, backlog: bool) -> list[StreamEntry]:
        """Everything waiting for this watcher, or [] when ``poll_interval`` passed without news."""
        entries = await self._drain(client, "0") if backlog else []
        if not entries:
            entries = await self._read(client, ">", block_ms=int(self.poll_interval * 1000))
            if not entries:
                return []
            await asyncio.sleep(self.burst_window)
        return entries + await self._drain(client, ">")

    async def _ack(self, client: Redis, entry_ids: list[str]) -> None:
        for start in range(0, len(entry_ids), self.max_batch):
            await client.xack(
                self.stream_key, self.consumer_group, *entry_ids[start : start + self.max_batch]
            )


def _cancelling() -> bool:
    """Whether this task has been asked to stop: a cancellation still pending on it, even when what
    it was awaiting raised something else."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


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
