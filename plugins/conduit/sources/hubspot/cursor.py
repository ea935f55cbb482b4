"""Incremental and full reads with HubSpot's real search semantics, as pure functions.

The cursor is (timestamp, id). HubSpot search allows one sort and caps any query at 10,000
results, and records sharing a millisecond come back in no particular order. So every page is a
FRESH query from the cursor (never deep ``after`` paging), alternating two shapes:

* range: ``ts > cursor.ts AND ts < upper`` sorted by ts. A full page may cut a group of records
  sharing its last millisecond L, so only records with ts < L are taken and the cursor moves to
  (L, -1) in "ties" mode;
* ties: ``ts = cursor.ts AND id > cursor.id`` sorted by id, which pages through any number of
  records sharing one millisecond without loss or repetition, then returns to range mode.

The upper bound is fixed for the whole run (run start minus a lag, see
:func:`conduit.pipeline.cursor.incremental_window`), so records modified while paging are picked
up by the next run instead of chasing a moving target; the next run starts ``overlap`` before this
run's upper bound to catch records the search index showed late. Full reads page by
``hs_object_id`` ranges the same way (a fresh id-cursor query per page: no 10k cap).

``search`` may answer with the JSON body (a dict, records as dicts) or with a
:class:`~conduit.pipeline.pages.RecordPage` (the extract's column-wise pages); pages come out in
the same form.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from conduit.pipeline.cursor import Window, parse_ts_ms
from conduit.pipeline.pages import RecordPage

Page = Any  # a list of JSON records (dicts) or a RecordPage

ID_PROPERTY = "hs_object_id"
CREATED_PROPERTY = "createdate"
SEARCH_BODY_MAX_CHARS = 3000
"""HubSpot answers a search whose body is longer than this with a 400 (contract §1.5)."""


@dataclass(frozen=True)
class CursorState:
    ts_ms: int
    id: int
    mode: Literal["ties", "range"]


def results_of(reply: Any) -> Any:
    """The records of a search/list reply: a :class:`RecordPage` itself, or a JSON body's ``results``."""
    return reply if isinstance(reply, RecordPage) else reply.get("results", [])


def search_body(state: CursorState, *, cursor_property: str, upper_ms: int, properties: list[str], limit: int) -> dict:
    if state.mode == "ties":
        filters = [
            {"propertyName": cursor_property, "operator": "EQ", "value": str(state.ts_ms)},
            {"propertyName": ID_PROPERTY, "operator": "GT", "value": str(state.id)},
        ]
        sort = ID_PROPERTY
    else:
        filters = [
            {"propertyName": cursor_property, "operator": "GT", "value": str(state.ts_ms)},
            {"propertyName": cursor_property, "operator": "LT", "value": str(upper_ms)},
        ]
        sort = cursor_property
    return {
        "filterGroups": [{"filters": filters}],
        "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
        "properties": properties,
        "limit": limit,
    }


def search_fits(properties: Sequence[str], *, cursor_property: str, limit: int) -> bool:
    """Whether every search body of a window or an id range that asks for ``properties`` stays
    within :data:`SEARCH_BODY_MAX_CHARS` (measured with the longest timestamps and ids). A spec
    too wide for it searches ids only and reads its properties by id."""
    fields = list(dict.fromkeys([*properties, cursor_property, ID_PROPERTY]))
    big = 10**19 - 1
    bodies = [search_body(CursorState(big, big, mode), cursor_property=cursor_property, upper_ms=big,
                          properties=fields, limit=limit) for mode in ("ties", "range")]
    bodies.append(id_range_body(big, big, properties=fields, limit=limit))
    return all(len(json.dumps(body, ensure_ascii=False, separators=(",", ":"))) <= SEARCH_BODY_MAX_CHARS
               for body in bodies)


def _last_id(page: Page) -> int:
    return int(page.ids[-1] if isinstance(page, RecordPage) else page[-1]["id"])


def _values(page: Page, name: str) -> Sequence[str | None]:
    if isinstance(page, RecordPage):
        return page.column(name)
    return [r["properties"].get(name) for r in page]


def _stamps(page: Page, cursor_property: str) -> list[int]:
    """Each record's cursor timestamp; a record without a readable one breaks the search's
    contract (the cursor cannot move past it): a non-retryable error naming the record."""
    from conduit.exceptions import CrmContractError

    stamps = []
    for i, value in enumerate(_values(page, cursor_property)):
        try:
            stamps.append(parse_ts_ms(value))
        except ValueError:
            record_id = page.ids[i] if isinstance(page, RecordPage) else page[i].get("id")
            raise CrmContractError(f"CRM record {record_id} has no readable {cursor_property} ({value!r}): "
                                   "an incremental search cannot page past it") from None
    return stamps


def advance(
    state: CursorState, page: Page, *, cursor_property: str, limit: int
) -> tuple[Page, CursorState | None]:
    """Records to emit from one page and the next cursor (None when the window is exhausted)."""
    if state.mode == "ties":
        if len(page) < limit:
            return page, CursorState(state.ts_ms, state.id, "range")
        return page, CursorState(state.ts_ms, _last_id(page), "ties")
    if len(page) < limit:
        return page, None
    stamps = _stamps(page, cursor_property)
    last = max(stamps)
    keep = [ts < last for ts in stamps]
    if isinstance(page, RecordPage):
        return page.where(keep), CursorState(last, -1, "ties")
    return [r for r, kept in zip(page, keep, strict=True) if kept], CursorState(last, -1, "ties")


def iter_changed(
    search: Callable[[dict], Any],
    window: Window,
    *,
    cursor_property: str,
    properties: list[str],
    limit: int = 200,
) -> Iterator[Page]:
    """Pages of records with ``lower <= ts < upper``, each exactly once (per unchanged record)."""
    if window.lower_ms >= window.upper_ms:
        return
    fields = list(dict.fromkeys([*properties, cursor_property, ID_PROPERTY]))
    state: CursorState | None = CursorState(window.lower_ms, -1, "ties")
    while state is not None:
        body = search_body(state, cursor_property=cursor_property, upper_ms=window.upper_ms,
                           properties=fields, limit=limit)
        emit, state = advance(state, results_of(search(body)), cursor_property=cursor_property, limit=limit)
        if emit:
            yield emit


# --- full reads split by object id (parallel extraction) -----------------------------------------


def id_range_body(after_id: int, hi: int, *, properties: list[str], limit: int) -> dict:
    return {
        "filterGroups": [{"filters": [
            {"propertyName": ID_PROPERTY, "operator": "GT", "value": str(after_id)},
            {"propertyName": ID_PROPERTY, "operator": "LT", "value": str(hi)},
        ]}],
        "sorts": [{"propertyName": ID_PROPERTY, "direction": "ASCENDING"}],
        "properties": properties,
        "limit": limit,
    }


def iter_id_range(
    search: Callable[[dict], Any], lo: int, hi: int, *, properties: list[str], limit: int = 200
) -> Iterator[Page]:
    """Every live record with lo <= id < hi: a fresh id-cursor query per page, so no 10k cap."""
    fields = list(dict.fromkeys([*properties, ID_PROPERTY]))
    after = lo - 1
    while True:
        page = results_of(search(id_range_body(after, hi, properties=fields, limit=limit)))
        if page:
            yield page
        if len(page) < limit:
            return
        after = _last_id(page)


def take_id_range(pages: Iterable[Page], lo: int, hi: int) -> Iterator[Page]:
    """The records with lo <= id < hi of pages in ascending id order (the list endpoint's), stopping
    at the first page that reaches ``hi``: the list endpoint cannot start mid-way, so a reader of a
    range above the first id reads the ids below it too, and drops them. A page that starts with
    the previous page's last record again repeats what was read (it is dropped; the transform
    drops a repeat from an unranged listing); other pages out of id order break the contract
    (stopping early would lose records): a non-retryable error."""
    from conduit.exceptions import CrmContractError

    previous = None
    for page in pages:
        ids = [int(i) for i in (page.ids if isinstance(page, RecordPage) else [r["id"] for r in page])]
        repeat = previous is not None and ids[:1] == [previous]
        ordered = ids if previous is None else [previous, *ids[repeat:]]
        if any(b <= a for a, b in zip(ordered, ordered[1:], strict=False)):
            raise CrmContractError(f"the list endpoint returned ids out of ascending order (after {previous}): "
                                   "a listed id range cannot be read without loss")
        keep = [lo <= i < hi and not (repeat and n == 0) for n, i in enumerate(ids)]
        if all(keep):
            if ids:
                yield page
        elif any(keep):
            yield page.where(keep) if isinstance(page, RecordPage) else [r for r, k in zip(page, keep, strict=True) if k]
        if ids and ids[-1] >= hi:
            return
        previous = ids[-1] if ids else previous


def count_below_body(boundary: int) -> dict:
    """The search whose ``total`` counts the live records with an id below ``boundary``."""
    return {"filterGroups": [{"filters": [{"propertyName": ID_PROPERTY, "operator": "LT", "value": str(boundary)}]}],
            "limit": 1, "properties": [ID_PROPERTY]}


def edge_id_body(direction: Literal["ASCENDING", "DESCENDING"]) -> dict:
    """The search for the smallest (ASCENDING) or largest live id: the bounds of a full read's ranges."""
    return {"sorts": [{"propertyName": ID_PROPERTY, "direction": direction}], "limit": 1,
            "properties": [ID_PROPERTY]}


def created_before_body(upper_ms: int) -> dict:
    """The search whose ``total`` counts the live records created before ``upper_ms``."""
    return {"filterGroups": [{"filters": [{"propertyName": CREATED_PROPERTY, "operator": "LT",
                                           "value": str(upper_ms)}]}],
            "limit": 1, "properties": [ID_PROPERTY]}
