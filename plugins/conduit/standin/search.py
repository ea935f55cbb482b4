"""CRM search (contract §1.5): request validation with HubSpot's limits, filter evaluation, and
a small planner that answers the common incremental shapes from sorted indexes.

Per filter group the planner picks the narrowest index: a last-modified range (two bisects on
the store's ``modified_index``), an ``hs_object_id`` range (bisects on the id array), an
``hs_object_id IN`` list, or a full scan. When the sort follows the chosen index and nothing is
left to check, ``total`` is counted and the page sliced without touching other records.
"""

from __future__ import annotations

import fnmatch
import heapq
import json
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice

from conduit.standin.errors import validation_error
from conduit.standin.store import (
    LIVE,
    MODIFIED_ALIASES,
    TEXT_SEARCH_PROPERTIES,
    ObjectStore,
    key_position,
    positions_of,
    sort_key,
)

MAX_BODY_CHARS = 3000
MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS = 18
MAX_LIMIT = 200
DEFAULT_LIMIT = 10
MAX_RESULTS = 10_000

RANGE_OPERATORS = frozenset({"EQ", "GT", "GTE", "LT", "LTE", "BETWEEN"})
OPERATORS = RANGE_OPERATORS | {"NEQ", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY", "CONTAINS_TOKEN",
                               "NOT_CONTAINS_TOKEN"}
_NUMERIC = MODIFIED_ALIASES | {"createdate", "hs_object_id"}
_NO_VALUE = frozenset({"HAS_PROPERTY", "NOT_HAS_PROPERTY"})
_INT64 = 1 << 62


@dataclass(frozen=True)
class Filter:
    property: str
    operator: str
    value: str | None = None
    high_value: str | None = None
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sort:
    property: str
    descending: bool = False


@dataclass(frozen=True)
class SearchRequest:
    groups: tuple[tuple[Filter, ...], ...] = ()
    sort: Sort | None = None
    properties: tuple[str, ...] | None = None
    limit: int = DEFAULT_LIMIT
    after: int = 0
    query: str | None = None


# --- parsing ------------------------------------------------------------------------------------


def parse_search(raw: bytes, has_property: Callable[[str], bool]) -> SearchRequest:
    """Validate a search body the way HubSpot does; every problem is a 400 VALIDATION_ERROR."""
    text = raw.decode("utf-8", errors="replace")
    if len(text) > MAX_BODY_CHARS:
        raise validation_error(f"Search request body has {len(text)} characters; the limit is {MAX_BODY_CHARS}")
    try:
        body = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise validation_error(f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if not isinstance(body, dict):
        raise validation_error("Search request body must be a JSON object")
    groups = _groups(body.get("filterGroups") or [], has_property)
    sorts = body.get("sorts") or []
    if not isinstance(sorts, list) or len(sorts) > 1:
        raise validation_error("At most one sort is allowed per search", field="sorts")
    sort = _sort(sorts[0], has_property) if sorts else None
    limit = _integer(body.get("limit", DEFAULT_LIMIT), "limit")
    if not 1 <= limit <= MAX_LIMIT:
        raise validation_error(f"limit must be between 1 and {MAX_LIMIT}, got {limit}", field="limit")
    after = _integer(body.get("after") or 0, "after")
    if after < 0:
        raise validation_error(f"after must be a non-negative integer, got {after}", field="after")
    if after + limit > MAX_RESULTS:
        raise validation_error(
            f"Cannot page beyond {MAX_RESULTS} results: after ({after}) + limit ({limit}) > {MAX_RESULTS}",
            field="after")
    properties = body.get("properties")
    if properties is not None and not (isinstance(properties, list) and all(isinstance(p, str) for p in properties)):
        raise validation_error("properties must be a list of property names", field="properties")
    query = body.get("query")
    if query is not None and not isinstance(query, str):
        raise validation_error("query must be a string", field="query")
    return SearchRequest(groups, sort, tuple(properties) if properties else None, limit, after, query or None)


def _integer(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise validation_error(f"{name} must be an integer, got {value!r}", field=name)
    try:
        return int(value)
    except ValueError:
        raise validation_error(f"{name} must be an integer, got {value!r}", field=name) from None


def _groups(raw: object, has_property: Callable[[str], bool]) -> tuple[tuple[Filter, ...], ...]:
    if not isinstance(raw, list):
        raise validation_error("filterGroups must be a list", field="filterGroups")
    if len(raw) > MAX_GROUPS:
        raise validation_error(f"Too many filter groups: {len(raw)} (max {MAX_GROUPS})", field="filterGroups")
    groups = []
    for g, group in enumerate(raw):
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list) or not filters:
            raise validation_error(f"filterGroups[{g}].filters must be a non-empty list", field="filterGroups")
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise validation_error(f"Too many filters in filterGroups[{g}]: {len(filters)} "
                                   f"(max {MAX_FILTERS_PER_GROUP})", field="filterGroups")
        groups.append(tuple(_filter(f, f"filterGroups[{g}].filters[{i}]", has_property)
                            for i, f in enumerate(filters)))
    total = sum(len(g) for g in groups)
    if total > MAX_FILTERS:
        raise validation_error(f"Too many filters: {total} in all groups (max {MAX_FILTERS})", field="filterGroups")
    return tuple(groups)


def _filter(raw: object, where: str, has_property: Callable[[str], bool]) -> Filter:
    if not isinstance(raw, dict):
        raise validation_error(f"{where} must be an object", field=where)
    name, operator = raw.get("propertyName"), raw.get("operator", "EQ")
    if not isinstance(name, str) or not has_property(name):
        raise validation_error(f"{where}: property {name!r} does not exist", field=where)
    if operator not in OPERATORS:
        raise validation_error(f"{where}: unknown operator {operator!r}; one of {sorted(OPERATORS)}", field=where)
    value, high, values = raw.get("value"), raw.get("highValue"), raw.get("values")
    if operator in ("IN", "NOT_IN"):
        if not isinstance(values, list) or not values:
            raise validation_error(f"{where}: {operator} needs a non-empty 'values' list", field=where)
        values = tuple(str(v) for v in values)
    elif operator not in _NO_VALUE and value is None:
        raise validation_error(f"{where}: {operator} needs a 'value'", field=where)
    if operator == "BETWEEN" and high is None:
        raise validation_error(f"{where}: BETWEEN needs a 'highValue'", field=where)
    result = Filter(name, operator, None if value is None else str(value), None if high is None else str(high),
                    values or ())
    if name in _NUMERIC:  # parse now, so a bad value is a 400 naming the filter
        for v in (result.value, result.high_value, *result.values):
            if v is not None:
                _number(name, v, where)
    return result


def _number(name: str, value: str, where: str = "") -> int:
    """Epoch-ms (or ISO-8601) for dates, an integer for hs_object_id."""
    try:
        return int(value)
    except ValueError:
        pass
    if name != "hs_object_id":
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return int(parsed.timestamp() * 1000)
        except ValueError:
            pass
    raise validation_error(f"{where}: {value!r} is not a valid value for {name}", field=where)


def _sort(raw: object, has_property: Callable[[str], bool]) -> Sort:
    if isinstance(raw, str):  # the SDK also takes "name" / "-name"
        sort = Sort(raw.lstrip("-"), raw.startswith("-"))
    elif isinstance(raw, dict):
        direction = raw.get("direction", "ASCENDING")
        if direction not in ("ASCENDING", "DESCENDING"):
            raise validation_error(f"sort direction must be ASCENDING or DESCENDING, got {direction!r}", field="sorts")
        sort = Sort(str(raw.get("propertyName")), direction == "DESCENDING")
    else:
        raise validation_error("sorts[0] must be an object or a property name", field="sorts")
    if not has_property(sort.property):
        raise validation_error(f"sorts[0]: property {sort.property!r} does not exist", field="sorts")
    return sort


# --- evaluating ---------------------------------------------------------------------------------


def compile_filter(store: ObjectStore, flt: Filter) -> Callable[[int], bool]:
    """A predicate over record positions."""
    if flt.property in _NUMERIC:
        return _numeric_predicate(store, flt)
    column = store.table.columns[flt.property]
    op = flt.operator
    if op == "HAS_PROPERTY":
        return lambda pos: bool(column[pos])
    if op == "NOT_HAS_PROPERTY":
        return lambda pos: not column[pos]
    if op in ("IN", "NOT_IN"):
        wanted = {v.lower() for v in flt.values}
        if op == "IN":
            return lambda pos: column[pos] is not None and column[pos].lower() in wanted
        return lambda pos: column[pos] is None or column[pos].lower() not in wanted
    value = flt.value.lower()
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        def contains(pos: int) -> bool:
            text = (column[pos] or "").lower()
            return fnmatch.fnmatchcase(text, value) if "*" in value else value in text.split()
        return contains if op == "CONTAINS_TOKEN" else (lambda pos: not contains(pos))
    if op == "NEQ":
        return lambda pos: column[pos] is None or column[pos].lower() != value
    compare = _comparison(op, value, None if flt.high_value is None else flt.high_value.lower())
    return lambda pos: column[pos] is not None and compare(column[pos].lower())


def _comparison(op: str, value, high) -> Callable[[object], bool]:
    return {
        "EQ": lambda x: x == value, "NEQ": lambda x: x != value,
        "LT": lambda x: x < value, "LTE": lambda x: x <= value,
        "GT": lambda x: x > value, "GTE": lambda x: x >= value,
        "BETWEEN": lambda x: value <= x <= high,
    }[op]


def _numeric_predicate(store: ObjectStore, flt: Filter) -> Callable[[int], bool]:
    table = store.table
    values = (table.modified_ms if flt.property in MODIFIED_ALIASES
              else table.created_ms if flt.property == "createdate" else table.ids)
    op = flt.operator
    if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):  # always set
        return lambda pos: op == "HAS_PROPERTY"
    if op in ("IN", "NOT_IN"):
        wanted = {_number(flt.property, v) for v in flt.values}
        return (lambda pos: values[pos] in wanted) if op == "IN" else (lambda pos: values[pos] not in wanted)
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        token = flt.value.lower()

        def hit(pos: int) -> bool:
            return token in store.value(pos, flt.property).lower()
        return hit if op == "CONTAINS_TOKEN" else (lambda pos: not hit(pos))
    high = None if flt.high_value is None else _number(flt.property, flt.high_value)
    compare = _comparison(op, _number(flt.property, flt.value), high)
    return lambda pos: compare(values[pos])


def _bounds(filters: Iterable[Filter], name_set: frozenset[str]) -> tuple[int, int, list[Filter]] | None:
    """Inclusive numeric bounds implied by the range filters on ``name_set``; None when there are none."""
    lo, hi, used = -_INT64, _INT64, []
    for flt in filters:
        if flt.property not in name_set or flt.operator not in RANGE_OPERATORS:
            continue
        v = _number(flt.property, flt.value)
        used.append(flt)
        if flt.operator in ("EQ", "GTE", "BETWEEN"):
            lo = max(lo, v)
        if flt.operator == "GT":
            lo = max(lo, v + 1)
        if flt.operator in ("EQ", "LTE"):
            hi = min(hi, v)
        if flt.operator == "LT":
            hi = min(hi, v - 1)
        if flt.operator == "BETWEEN":
            hi = min(hi, _number(flt.property, flt.high_value))
    return (lo, hi, used) if used else None


@dataclass
class _Plan:
    """Candidates of one filter group from one index, and the filters still to check on each."""

    kind: str  # "modified" | "ids" | "id_list"
    lo: int = 0
    hi: int = 0
    positions: list[int] = field(default_factory=list)
    residual: list[Callable[[int], bool]] = field(default_factory=list)
    window: tuple[int, int] | None = None  # "modified": only positions in [a, b) (the group's id range)

    @property
    def size(self) -> int:
        return len(self.positions) if self.kind == "id_list" else max(0, self.hi - self.lo)


def _plan(store: ObjectStore, filters: tuple[Filter, ...], sort: Sort | None) -> _Plan:
    options = []
    by_modified = _bounds(filters, MODIFIED_ALIASES)
    if by_modified:
        lo, hi, used = by_modified
        options.append((_Plan("modified", *store.modified_slice(lo, hi)), used))
    by_id = _bounds(filters, frozenset({"hs_object_id"}))
    if by_id:
        lo, hi, used = by_id
        ids = store.ids
        options.append((_Plan("ids", bisect_left(ids, lo), bisect_right(ids, hi)), used))
    id_lists = [f for f in filters if f.property == "hs_object_id" and f.operator == "IN"]
    if id_lists:
        found = {store.position(v) for v in id_lists[0].values} - {None}
        options.append((_Plan("id_list", positions=sorted(found)), id_lists[:1]))
    if not options:
        options.append((_Plan("ids", 0, len(store)), []))
    sorted_by = "modified" if sort and sort.property in MODIFIED_ALIASES else "ids"
    plan, used = min(options, key=lambda option: (option[0].size, option[0].kind != sorted_by))
    if plan.kind == "modified" and by_id:  # e.g. draining a tie by id: the id range is a position range
        lo, hi, id_filters = by_id
        plan.window = (bisect_left(store.ids, lo), bisect_right(store.ids, hi))
        used = [*used, *id_filters]
    plan.residual = [compile_filter(store, f) for f in filters if f not in used]
    return plan


def _text_query(store: ObjectStore, query: str) -> Callable[[int], bool]:
    needle = query.lower()
    columns = [store.table.columns[name] for name in TEXT_SEARCH_PROPERTIES[store.object_type]
               if name in store.table.columns]
    return lambda pos: any(needle in (column[pos] or "").lower() for column in columns)


def _candidates(store: ObjectStore, plan: _Plan, descending: bool) -> Iterator[int]:
    """Positions of the plan's index range in index order (LIVE ones only)."""
    if plan.kind == "modified":
        keys = store.modified_index
        span = range(plan.hi - 1, plan.lo - 1, -1) if descending else range(plan.lo, plan.hi)
        return (key_position(keys[i]) for i in span)
    state = store.state
    span = (plan.positions[::-1] if descending else plan.positions) if plan.kind == "id_list" else (
        range(plan.hi - 1, plan.lo - 1, -1) if descending else range(plan.lo, plan.hi))
    return (pos for pos in span if state[pos] == LIVE)


def _sort_key(store: ObjectStore, sort: Sort | None) -> Callable[[int], object] | None:
    """The key that orders positions by the sort (None: positions are in id order already)."""
    table = store.table
    if sort is None or sort.property == "hs_object_id":
        return None
    if sort.property in MODIFIED_ALIASES:
        return lambda pos: sort_key(table.modified_ms[pos], pos)
    if sort.property == "createdate":
        return lambda pos: sort_key(table.created_ms[pos], pos)
    column = table.columns[sort.property]
    return lambda pos: ((column[pos] or "").lower(), pos)  # null sorts like an empty string


def execute(store: ObjectStore, request: SearchRequest, hidden: frozenset[int] = frozenset()) -> tuple[int, list[int]]:
    """``(total, positions of the requested page)``. ``hidden``: records the search index has not
    caught up with yet. Archived and deleted records never match."""
    groups = request.groups or ((),)
    plans = [_plan(store, group, request.sort) for group in groups]
    if request.query:
        for plan in plans:
            plan.residual.append(_text_query(store, request.query))
    sort = request.sort
    descending = bool(sort and sort.descending)
    end = request.after + request.limit

    if len(plans) == 1:
        plan = plans[0]
        in_index_order = (sort.property in MODIFIED_ALIASES if sort and plan.kind == "modified"
                          else plan.kind != "modified" and (sort is None or sort.property == "hs_object_id"))
        if in_index_order and not plan.residual and plan.window is None:
            visible = (p for p in _candidates(store, plan, descending) if p not in hidden)
            return _count(store, plan, hidden), list(islice(visible, request.after, end))
        if in_index_order:
            matched = _matching(store, plan, hidden, descending)
            return len(matched), matched[request.after:end]

    if len(plans) == 1:  # one index range: every candidate once
        matched: list[int] | set[int] = _matching(store, plans[0], hidden)
    else:
        matched = set()
        for plan in plans:
            matched.update(_matching(store, plan, hidden))
    key = _sort_key(store, sort)
    # Sort keys are unique (they end in the position), so the first ``end`` of a partial selection
    # are exactly those of a full sort; paging deep into ties re-runs this for every page.
    if end < len(matched) // 8:
        ordered = (heapq.nlargest if descending else heapq.nsmallest)(end, matched, key=key)
    else:
        ordered = sorted(matched, key=key, reverse=descending)
    return len(matched), ordered[request.after:end]


def _matching(store: ObjectStore, plan: _Plan, hidden: frozenset[int], descending: bool = False) -> list[int]:
    """Positions of the plan's candidates (in index order) that pass its filters and are visible."""
    if plan.kind == "modified":  # all of the range is needed: decode the keys in one go
        keys = store.modified_index[plan.lo:plan.hi]
        if descending:
            keys.reverse()
        candidates = positions_of(keys)
        if plan.window is not None:
            first, stop = plan.window
            candidates = [p for p in candidates if first <= p < stop]
    else:
        candidates = _candidates(store, plan, descending)
    residual = plan.residual
    if hidden:
        candidates = (p for p in candidates if p not in hidden)
    if not residual:
        return list(candidates)
    if len(residual) == 1:
        return list(filter(residual[0], candidates))
    return [p for p in candidates if all(check(p) for check in residual)]


def _count(store: ObjectStore, plan: _Plan, hidden: frozenset[int]) -> int:
    """Live, visible records in the plan's range, counted without walking it."""
    if plan.kind == "modified":
        keys = store.modified_index
        lo_key = keys[plan.lo] if plan.lo < plan.hi else 0
        hi_key = keys[plan.hi - 1] if plan.lo < plan.hi else -1
        table = store.table
        lagging = sum(1 for p in hidden if store.state[p] == LIVE
                      and lo_key <= sort_key(table.modified_ms[p], p) <= hi_key)
        return plan.size - lagging
    if plan.kind == "id_list":
        return sum(1 for p in plan.positions if store.state[p] == LIVE and p not in hidden)
    lagging = sum(1 for p in hidden if plan.lo <= p < plan.hi and store.state[p] == LIVE)
    return plan.size - store.not_live_between(plan.lo, plan.hi) - lagging
