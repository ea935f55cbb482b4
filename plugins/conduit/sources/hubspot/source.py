"""HubSpot's CRM objects API (or the stand-in that speaks it) as a :class:`~conduit.sources.base.CrmSource`.

Windows are read with the (``lastmodifieddate``, ``hs_object_id``) search cursor, full reads by
``hs_object_id`` ranges (:mod:`conduit.sources.hubspot.cursor`: fresh queries per page, no 10k
cap), records by id with batch reads, archived records with the list endpoint (search never
returns them). Every call goes through one :class:`~conduit.sources.hubspot.hook.HubSpotHook`,
built on first use.

When the connection sets the account's rate limits (the hook has a budget), a full read uses both
of HubSpot's budgets: searches are capped at 5 a second, the list endpoint only by the interval
limit. One ``range`` item reads the low ids with the list endpoint (``via: list``: it reads from
the start, its ``after`` being opaque, and stops at its boundary id), the other ``range`` items
search the ids above it, each with a few concurrent streams (:func:`read_concurrently`) so that
round trips do not leave the budget unused (a run of one task: one ``all`` item reads both at
once, the same way). The boundary splits the records in proportion to the
two endpoints' record rates (:func:`conduit.sources.hubspot.budget.full_read_rates`), so that both
finish together. A full read the day's remaining budget cannot cover stops before it starts.

A search body names every property it asks for, and HubSpot refuses one over 3,000 characters: a
spec too wide for that searches the ids only (the cursor's timestamp and id) and reads the
properties of each page by id (:func:`conduit.sources.hubspot.cursor.search_fits`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from conduit.pipeline.cursor import Window, id_ranges, parse_ts_ms
from conduit.sources.base import CrmSource, WorkItem
from conduit.sources.hubspot.cursor import (
    CREATED_PROPERTY,
    ID_PROPERTY,
    count_below_body,
    created_before_body,
    edge_id_body,
    iter_changed,
    iter_id_range,
    search_fits,
    take_id_range,
)

if TYPE_CHECKING:
    from conduit.lineage.openlineage import DatasetRef
    from conduit.pipeline.pages import RecordPage
    from conduit.sources.hubspot.hook import HubSpotHook
    from conduit.specs.model import HubSpotSource as HubSpotSourceSpec

BATCH_READ_IDS = 100
"""HubSpot's batch read takes at most 100 ids per call."""

UNPACED_RANGE_STREAMS = 2
"""Concurrent searches per id range of a full read without a rate budget (a host that is not
HubSpot's and declares no limits: api.hubapi.com is always paced). One stream leaves both sides
idle in turn, the server while this task decodes and stages a page, this task while the server
builds the next; two overlap them (1M records from the stand-in in ``dags test``, one range after
another: bench/README.md)."""


class HubSpotSource(CrmSource):
    """Reads ``config.object`` through the connection ``config.conn_id``.

    :param config: the spec's ``source`` section (``type: hubspot``)
    :param hook: the hook to call (default: one for ``config.conn_id``, built on first use)
    """

    id_column = ID_PROPERTY

    def __init__(self, config: HubSpotSourceSpec, *, hook: HubSpotHook | None = None) -> None:
        self.config = config
        self.object_type = config.object
        if hook is not None:
            self.hook = hook

    @cached_property
    def hook(self) -> HubSpotHook:
        from conduit.sources.hubspot.hook import HubSpotHook

        return HubSpotHook(hubspot_conn_id=self.config.conn_id)

    def raw_properties(self) -> list[str]:
        return list(dict.fromkeys([*self.config.properties, ID_PROPERTY]))

    # --- the extract ---------------------------------------------------------------------------

    def plan(self, window: Window | None, *, parallelism: int = 1,
             object_ids: Sequence[str] = ()) -> list[WorkItem]:
        budget = getattr(self.hook, "budget", None)
        if window is not None:
            items: list[WorkItem] = [{"kind": "changed", "window": [window.lower_ms, window.upper_ms]}]
        elif budget is not None:
            items = self._budgeted_full_read(parallelism)
        else:
            items = [{"kind": "range", "lo": lo, "hi": hi, "streams": UNPACED_RANGE_STREAMS}
                     for lo, hi in self._id_ranges(parallelism)]
            items = items or [{"kind": "all"}]
        if object_ids:
            items.append({"kind": "ids", "ids": list(object_ids)})
        # Search never returns archived records, and the archived listing has no date filter.
        return [*items, {"kind": "archived"}]

    def _id_ranges(self, parts: int) -> list[tuple[int, int]]:
        """``parts`` ranges of ``hs_object_id`` covering every live record (none for one part or
        an empty object: one ``all`` item reads those)."""
        if parts <= 1:
            return []
        first, last = (self.hook.search(self.object_type, edge_id_body(d))["results"]
                       for d in ("ASCENDING", "DESCENDING"))
        return id_ranges(int(first[0]["id"]), int(last[0]["id"]), parts) if first and last else []

    def _budgeted_full_read(self, parallelism: int) -> list[WorkItem]:
        """A full read on both budgets: the list endpoint below a boundary id, searches above it.
        One task (``parallelism`` 1): one ``all`` item that reads both at once (``boundary``,
        ``streams``); more: a ``range`` item for the list endpoint and ``parallelism - 1`` search
        ranges. Raises :class:`~conduit.exceptions.CrmDailyLimitReached` when the day's remaining
        requests cannot cover it."""
        from conduit.sources.hubspot.budget import (
            boundary_id,
            full_read_rates,
            full_read_requests,
            search_streams,
        )

        hook, config = self.hook, self.config
        budget = hook.budget
        # The first id from the list endpoint (ascending ids): unlike search replies, its reply carries
        # the daily-limit headers, which the check below needs when the budget is this process's own.
        first_page = next(iter(hook.iter_list_pages(self.object_type, [ID_PROPERTY], limit=1)), [])
        last_reply = hook.search(self.object_type, edge_id_body("DESCENDING"))
        if not first_page or not last_reply["results"]:
            return [{"kind": "all"}]
        first, last = int(first_page[0]["id"]), int(last_reply["results"][0]["id"])
        total = int(last_reply.get("total") or 0)
        rates = full_read_rates(budget.limits, hook.latency_s, list_page=config.page_size,
                                search_page=config.search_page_size)
        search_items = max(1, parallelism - 1)
        needed = full_read_requests(total, rates.list_share, list_page=config.page_size,
                                    search_page=config.search_page_size, search_items=search_items)
        remaining = budget.daily_remaining()
        if remaining is not None and remaining < needed:
            raise budget.daily_limit_reached(budget.limits.daily_max - remaining, needed=needed)
        if total < 2 * config.search_page_size:  # a page or two: not worth two endpoints
            return [{"kind": "all"}]

        def count_below(boundary: int) -> int:
            return int(hook.search(self.object_type, count_below_body(boundary))["total"])

        boundary = boundary_id(count_below, first, last + 1, total, round(total * rates.list_share))
        if parallelism <= 1:
            return [{"kind": "all", "lo": first, "boundary": boundary, "hi": last + 1,
                     "streams": search_streams(budget.limits, hook.latency_s, 1)}]
        items: list[WorkItem] = []
        if boundary > first:
            items.append({"kind": "range", "lo": first, "hi": boundary, "via": "list"})
        if boundary <= last:
            streams = search_streams(budget.limits, hook.latency_s, search_items)
            items += [{"kind": "range", "lo": lo, "hi": hi, "streams": streams}
                      for lo, hi in id_ranges(boundary, last, search_items)]
        return items

    def read(self, item: WorkItem) -> Iterable[RecordPage]:
        """Column-wise pages, decoded from the response bytes straight into columns."""
        config, hook, props = self.config, self.hook, self.raw_properties()
        kind = item["kind"]
        if kind == "changed":
            searched, wide = self._search_properties(props)
            pages = iter_changed(lambda body: hook.search_page(config.object, body), Window(*item["window"]),
                                 cursor_property=config.cursor.property, properties=searched,
                                 limit=config.search_page_size)
            return self._read_by_id(pages, props) if wide else pages
        if kind == "range" and item.get("via") == "list":
            return take_id_range(hook.iter_list_record_pages(config.object, props, limit=config.page_size),
                                 item["lo"], item["hi"])
        if kind == "range" or (kind == "all" and "boundary" in item):
            return self._read_id_ranges(item)
        if kind == "ids":
            return (hook.batch_read_page(config.object, batch, props) for batch in chunks(item["ids"]))
        if kind in ("all", "archived"):
            return hook.iter_list_record_pages(config.object, props, archived=kind == "archived",
                                               limit=config.page_size)
        raise ValueError(f"unknown extract work item {item!r}")

    def _read_id_ranges(self, item: WorkItem) -> Iterator[RecordPage]:
        """A search range (``lo``..``hi``), or both endpoints split at ``boundary``, read by
        ``streams`` concurrent searches (plus the list stream) when the item asks for more than one."""
        config, hook, props = self.config, self.hook, self.raw_properties()

        search_props, wide = self._search_properties(props)

        def searched(lo: int, hi: int) -> Callable[[], Iterator[RecordPage]]:
            def pages() -> Iterator[RecordPage]:
                found = iter_id_range(lambda body: hook.search_page(config.object, body), lo, hi,
                                      properties=search_props, limit=config.search_page_size)
                return self._read_by_id(found, props) if wide else found
            return pages

        def listed(lo: int, hi: int) -> Callable[[], Iterator[RecordPage]]:
            return lambda: take_id_range(hook.iter_list_record_pages(config.object, props, limit=config.page_size),
                                         lo, hi)

        lo, hi = item["lo"], item["hi"]
        boundary = item.get("boundary", lo)
        streams = [listed(lo, boundary)] if boundary > lo else []
        if boundary < hi:
            parts = id_ranges(boundary, hi - 1, int(item.get("streams") or 1))
            streams += [searched(part_lo, part_hi) for part_lo, part_hi in parts]
        if len(streams) == 1:
            return streams[0]()
        hook.budget  # noqa: B018  (built once here, not raced for by the streams)
        return read_concurrently(streams)

    def _search_properties(self, props: list[str]) -> tuple[list[str], bool]:
        """What a window's or an id range's searches ask for, and whether the records must then be
        read by id: a spec whose properties make the body too long for HubSpot's 3,000 characters
        searches the id only (the cursor adds its timestamp), else every search is a 400."""
        if search_fits(props, cursor_property=self.config.cursor.property, limit=self.config.search_page_size):
            return props, False
        return [ID_PROPERTY], True

    def _read_by_id(self, pages: Iterable[RecordPage], props: list[str]) -> Iterator[RecordPage]:
        """The records of ``pages`` (searched for their ids) with ``props``, by batch reads. The cursor
        paged on what the search returned; a record changed since is read in its newer version
        (the newest read wins), one archived since is left out (the archived listing has it)."""
        for page in pages:
            for batch in chunks(list(page.ids)):
                found = self.hook.batch_read_page(self.object_type, batch, props)
                if len(found):
                    yield found

    # --- by id, and the reconciliation's questions -----------------------------------------------

    def read_records(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        props = self.raw_properties()
        return [record for batch in chunks(list(ids))
                for record in self.hook.batch_read(self.object_type, batch, props)]

    def gone_records(self, ids: Sequence[str]) -> list[str]:
        """Batch reads: the archived records among ``ids`` first (the archived listing deletes
        those, restorable for 90 days), then the rest live once more, so that a record archived and
        restored meanwhile is found live. What neither read returns under its own id is gone (a
        merged-away id may come back as its survivor, under the survivor's id). An id the CRM
        answers anything but found or ``OBJECT_NOT_FOUND`` for is not gone: it is left alone."""
        wanted = list(dict.fromkeys(str(i) for i in ids))
        if not wanted:
            return []
        found, unsure = self._batch_found(wanted, archived=True)
        candidates = [i for i in wanted if i not in found and i not in unsure]
        found, unsure = self._batch_found(candidates, archived=False)
        return [i for i in candidates if i not in found and i not in unsure]

    def _batch_found(self, ids: list[str], *, archived: bool) -> tuple[set[str], set[str]]:
        """(the ids a batch read returned, the ids it reported an error other than not found for)."""
        from conduit.exceptions import CrmRetryableError

        found: set[str] = set()
        unsure: set[str] = set()
        path = f"{self.hook.objects_path(self.object_type)}/batch/read"
        for batch in chunks(ids):
            reply = self.hook.request("POST", path, params={"archived": str(archived).lower()},
                                      json={"inputs": [{"id": i} for i in batch], "properties": [ID_PROPERTY]})
            if reply.get("status", "COMPLETE") != "COMPLETE":
                raise CrmRetryableError(f"HubSpot batch read of {self.object_type} answered status "
                                        f"{reply.get('status')!r}, not COMPLETE: cannot tell which records are gone")
            found.update(str(record["id"]) for record in reply.get("results") or ())
            for error in reply.get("errors") or ():
                if error.get("category") == "OBJECT_NOT_FOUND":
                    continue
                # an error naming no ids leaves the whole batch in doubt
                unsure.update(str(i) for i in (error.get("context") or {}).get("ids") or batch)
        return found, unsure

    def count_created_before(self, upper_ms: int) -> int:
        return int(self.hook.search(self.object_type, created_before_body(upper_ms))["total"])

    def modified_since_created_before(self, upper_ms: int) -> list[dict[str, Any]]:
        window = Window(lower_ms=upper_ms, upper_ms=int(time.time() * 1000) + 1)
        props = list(dict.fromkeys([*self.raw_properties(), CREATED_PROPERTY]))
        searched, wide = self._search_properties(props)
        records = (r for page in iter_changed(lambda b: self.hook.search(self.object_type, b), window,
                                              cursor_property=self.config.cursor.property,
                                              properties=[*searched, CREATED_PROPERTY] if wide else props)
                   for r in page)
        late = [r for r in records if _created_ms(r) is not None and _created_ms(r) < upper_ms]
        if not wide:
            return late
        return [record for batch in chunks([r["id"] for r in late])
                for record in self.hook.batch_read(self.object_type, batch, props)]

    # --- lineage and counters --------------------------------------------------------------------

    def dataset(self) -> DatasetRef:
        from conduit.lineage.openlineage import hubspot_dataset

        if "hook" in self.__dict__:  # the task built it for its work: its connection is at hand
            hook = self.hook
            hook._set_base_url(hook.connection)
            return hubspot_dataset(hook.base_url, self.object_type, hook.settings["api_version"])
        # lineage before the work (the extract's START event) or without it (the load's): the
        # connection alone, not the HTTP stack, in a process forked for one event
        from airflow.sdk import BaseHook

        from conduit.sources.hubspot.address import api_version_of, base_url_of

        connection = BaseHook.get_connection(self.config.conn_id)
        return hubspot_dataset(base_url_of(connection), self.object_type, api_version_of(connection.extra_dejson))

    @property
    def requests_sent(self) -> int:
        return self.hook.requests_sent

    @property
    def retries(self) -> int:
        return self.hook.retries


def read_concurrently(streams: Sequence[Callable[[], Iterable[Any]]], *, buffer: int = 8) -> Iterator[Any]:
    """The pages of several streams, each read by its own thread, in the order they arrive: one
    sequential reader sends one call per round trip, too few to use a budget at 150 ms. At most
    ``buffer`` pages wait unconsumed. The first error of any stream is raised here, and closing
    the iterator stops the others."""
    pages: queue.Queue = queue.Queue(maxsize=buffer)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                pages.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(stream: Callable[[], Iterable[Any]]) -> None:
        try:
            for page in stream():
                if not put(("page", page)):
                    return
            put(("done", None))
        except BaseException as exc:  # handed to the reader, raised there
            put(("error", exc))

    threads = [threading.Thread(target=run, args=(stream,), daemon=True, name=f"hubspot-stream-{i}")
               for i, stream in enumerate(streams)]
    for thread in threads:
        thread.start()
    try:
        done = 0
        while done < len(threads):
            kind, value = pages.get()
            if kind == "page":
                yield value
            elif kind == "done":
                done += 1
            else:
                raise value
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def chunks(ids: list[str], size: int = BATCH_READ_IDS) -> Iterator[list[str]]:
    """``ids`` in batches of at most ``size`` (what one batch read takes)."""
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def _created_ms(record: dict[str, Any]) -> int | None:
    created = record["properties"].get(CREATED_PROPERTY)
    return parse_ts_ms(created) if created else None
