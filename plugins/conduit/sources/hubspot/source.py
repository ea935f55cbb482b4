"""HubSpot's CRM objects API (or the stand-in that speaks it) as a :class:`~conduit.sources.base.CrmSource`.

Windows are read with the (``lastmodifieddate``, ``hs_object_id``) search cursor, full reads by
``hs_object_id`` ranges (:mod:`conduit.sources.hubspot.cursor`: fresh queries per page, no 10k
cap), records by id with batch reads, archived records with the list endpoint (search never
returns them). Every call goes through one :class:`~conduit.sources.hubspot.hook.HubSpotHook`,
built on first use.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from conduit.pipeline.cursor import Window, id_ranges, parse_ts_ms
from conduit.sources.base import CrmSource, WorkItem
from conduit.sources.hubspot.cursor import (
    CREATED_PROPERTY,
    ID_PROPERTY,
    created_before_body,
    edge_id_body,
    iter_changed,
    iter_id_range,
)

if TYPE_CHECKING:
    from conduit.lineage.openlineage import DatasetRef
    from conduit.pipeline.pages import RecordPage
    from conduit.sources.hubspot.hook import HubSpotHook
    from conduit.specs.model import HubSpotSource as HubSpotSourceSpec

BATCH_READ_IDS = 100
"""HubSpot's batch read takes at most 100 ids per call."""


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
        if window is not None:
            items: list[WorkItem] = [{"kind": "changed", "window": [window.lower_ms, window.upper_ms]}]
        else:
            items = [{"kind": "range", "lo": lo, "hi": hi} for lo, hi in self._id_ranges(parallelism)]
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

    def read(self, item: WorkItem) -> Iterable[RecordPage]:
        """Column-wise pages, decoded from the response bytes straight into columns."""
        config, hook, props = self.config, self.hook, self.raw_properties()
        kind = item["kind"]
        if kind == "changed":
            return iter_changed(lambda body: hook.search_page(config.object, body), Window(*item["window"]),
                                cursor_property=config.cursor.property, properties=props,
                                limit=config.search_page_size)
        if kind == "range":
            return iter_id_range(lambda body: hook.search_page(config.object, body), item["lo"], item["hi"],
                                 properties=props, limit=config.search_page_size)
        if kind == "ids":
            return (hook.batch_read_page(config.object, batch, props) for batch in chunks(item["ids"]))
        if kind in ("all", "archived"):
            return hook.iter_list_record_pages(config.object, props, archived=kind == "archived",
                                               limit=config.page_size)
        raise ValueError(f"unknown extract work item {item!r}")

    # --- by id, and the reconciliation's questions -----------------------------------------------

    def read_records(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        props = self.raw_properties()
        return [record for batch in chunks(list(ids))
                for record in self.hook.batch_read(self.object_type, batch, props)]

    def count_created_before(self, upper_ms: int) -> int:
        return int(self.hook.search(self.object_type, created_before_body(upper_ms))["total"])

    def modified_since_created_before(self, upper_ms: int) -> list[dict[str, Any]]:
        window = Window(lower_ms=upper_ms, upper_ms=int(time.time() * 1000) + 1)
        props = list(dict.fromkeys([*self.raw_properties(), CREATED_PROPERTY]))
        records = (r for page in iter_changed(lambda b: self.hook.search(self.object_type, b), window,
                                              cursor_property=self.config.cursor.property, properties=props)
                   for r in page)
        return [r for r in records if _created_ms(r) is not None and _created_ms(r) < upper_ms]

    # --- lineage and counters --------------------------------------------------------------------

    def dataset(self) -> DatasetRef:
        from conduit.lineage.openlineage import hubspot_dataset

        hook = self.hook
        hook._set_base_url(hook.connection)
        return hubspot_dataset(hook.base_url, self.object_type, hook.settings["api_version"])

    @property
    def requests_sent(self) -> int:
        return self.hook.requests_sent

    @property
    def retries(self) -> int:
        return self.hook.retries


def chunks(ids: list[str], size: int = BATCH_READ_IDS) -> Iterator[list[str]]:
    """``ids`` in batches of at most ``size`` (what one batch read takes)."""
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def _created_ms(record: dict[str, Any]) -> int | None:
    created = record["properties"].get(CREATED_PROPERTY)
    return parse_ts_ms(created) if created else None
