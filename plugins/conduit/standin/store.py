"""One object type's live state: the seeded columns plus archive flags and the indexes search uses.

Positions are stable (records are only appended), and position order is id order, so ids are
found with ``bisect`` on the id array. ``modified_index`` holds one int per LIVE record,
``lastmodified_ms << 32 | mix(position)``, sorted: a modified-date range is two bisects, and ties
inside one millisecond come out in a scrambled order, not by id, as on HubSpot (contract §1.10).
"""

from __future__ import annotations

import base64
import binascii
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable

from conduit.standin.data import ObjectTable, iso_ms, modified_property
from conduit.standin.errors import validation_error

LIVE, ARCHIVED, DELETED = 0, 1, 2

_MASK = (1 << 32) - 1
_MIX = 0x9E3779B1  # odd, so multiplying modulo 2**32 is a bijection
_UNMIX = pow(_MIX, -1, 1 << 32)

DEFAULT_PROPERTIES = {
    "contacts": ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"),
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
}
SEARCH_DEFAULT_PROPERTIES = {
    "contacts": ("firstname", "lastname", "email", "lastmodifieddate", "hs_object_id", "createdate"),
    "companies": ("name", "domain", "createdate", "hs_lastmodifieddate", "hs_object_id"),
}
TEXT_SEARCH_PROPERTIES = {
    "contacts": ("firstname", "lastname", "email", "phone", "company"),
    "companies": ("name", "domain", "phone"),
}
MODIFIED_ALIASES = frozenset({"lastmodifieddate", "hs_lastmodifieddate"})
READ_ONLY = frozenset({"hs_object_id", "createdate"}) | MODIFIED_ALIASES
MERGED_IDS = "hs_merged_object_ids"  # the ids merged into a record, ";"-separated (set by merges only)
_ALWAYS = ("hs_object_id", "createdate")


def sort_key(ms: int, pos: int) -> int:
    return ms << 32 | (pos * _MIX) & _MASK


def key_position(key: int) -> int:
    return ((key & _MASK) * _UNMIX) & _MASK


def positions_of(keys: list[int]) -> list[int]:
    """:func:`key_position` of many keys."""
    return [((key & _MASK) * _UNMIX) & _MASK for key in keys]


def encode_cursor(record_id: int) -> str:
    """List cursors are opaque, like HubSpot's (base64 of the next id and a newline)."""
    return base64.b64encode(f"{record_id}\n".encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        return int(base64.b64decode(cursor, validate=True).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise validation_error(f"Invalid paging cursor 'after={cursor}'", field="after") from None


def as_property_value(name: str, value: object) -> str | None:
    """Property values are strings or null on HubSpot; booleans come back as ``true``/``false``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise validation_error(f"Property '{name}' must be a string, number, boolean or null, got {type(value).__name__}",
                           field=name)


class ObjectStore:
    def __init__(self, table: ObjectTable, clock: Callable[[], int]):
        self.table = table
        self.object_type = table.object_type
        self.modified_name = modified_property(table.object_type)
        self.clock = clock
        self.state = bytearray(len(table))
        self.archived_at: dict[int, int] = {}
        self.not_live: list[int] = []  # sorted positions that are archived or deleted
        self.changed_at: dict[int, int] = {}  # position -> server ms of its last change (search index lag)
        self._by_value: dict[str, dict[str, int]] = {}  # idProperty lookups, built on first use
        self.rebuild_modified_index()

    def __len__(self) -> int:
        return len(self.table)

    # --- reading ------------------------------------------------------------------------------

    @property
    def ids(self):
        return self.table.ids

    def has_property(self, name: str) -> bool:
        return name in self.table.columns or name in READ_ONLY

    def position(self, record_id: str | int) -> int | None:
        try:
            wanted = int(record_id)
        except (TypeError, ValueError):
            return None
        pos = bisect_left(self.table.ids, wanted)
        return pos if pos < len(self.table) and self.table.ids[pos] == wanted else None

    def find(self, value: str, id_property: str | None = None) -> int | None:
        """Position of the record whose ``id_property`` (default: the id) equals ``value``."""
        if id_property in (None, "hs_object_id"):
            pos = self.position(value)
        else:
            column = self.table.columns.get(id_property)
            if column is None:
                raise validation_error(f"Property '{id_property}' does not exist on {self.object_type}",
                                       field="idProperty")
            index = self._by_value.get(id_property)
            if index is None:
                # first record wins for duplicate values; deleted records are skipped below
                index = {}
                for pos, v in enumerate(column):
                    if v and self.state[pos] != DELETED:
                        index.setdefault(v.strip().lower(), pos)
                self._by_value[id_property] = index
            pos = index.get(str(value).strip().lower())
        return None if pos is None or self.state[pos] == DELETED else pos

    def value(self, pos: int, name: str) -> str | None:
        if name == "hs_object_id":
            return str(self.table.ids[pos])
        if name == "createdate":
            return iso_ms(self.table.created_ms[pos])
        if name in MODIFIED_ALIASES:
            return iso_ms(self.table.modified_ms[pos])
        column = self.table.columns.get(name)
        return None if column is None else column[pos]

    def render(self, positions: Iterable[int], names: Iterable[str] | None = None,
               associations: Iterable[str] = ()) -> list[dict]:
        """Records as the API returns them. ``names=None`` gives the default property set; unknown
        names are left out (as HubSpot does); the id and both timestamps are always there."""
        table = self.table
        names = DEFAULT_PROPERTIES[self.object_type] if names is None else names
        # resolve the columns once per page, not once per record
        picked = [(name, table.columns[name]) for name in dict.fromkeys(names) if name in table.columns]
        aliases = [name for name in names if name in MODIFIED_ALIASES and name != self.modified_name]
        ids, created_ms, modified_ms, state = table.ids, table.created_ms, table.modified_ms, self.state
        wants_companies = "companies" in associations
        records = []
        for pos in positions:
            created, modified, record_id = iso_ms(created_ms[pos]), iso_ms(modified_ms[pos]), str(ids[pos])
            props = {name: column[pos] for name, column in picked}
            props["hs_object_id"] = record_id
            props["createdate"] = created
            props[self.modified_name] = modified
            for alias in aliases:
                props[alias] = modified
            record = {"id": record_id, "properties": props, "createdAt": created, "updatedAt": modified,
                      "archived": state[pos] == ARCHIVED}
            if record["archived"]:
                record["archivedAt"] = iso_ms(self.archived_at[pos])
            if wants_companies:
                linked = self._companies_of(pos)
                if linked:
                    record["associations"] = linked
            records.append(record)
        return records

    def all_property_names(self) -> list[str]:
        return list(self.table.columns) + ["hs_object_id", "createdate", self.modified_name]

    def _companies_of(self, pos: int) -> dict:
        company_id = self.table.columns.get("associatedcompanyid")
        if company_id is None or not company_id[pos]:
            return {}
        return {"companies": {"results": [{"id": company_id[pos], "type": "contact_to_company"}]}}

    def list_page(self, after_id: int | None, limit: int, archived: bool) -> tuple[list[int], int | None]:
        """Positions of one list page in id order, and the id the next page starts at (None: last page)."""
        start = 0 if after_id is None else bisect_left(self.table.ids, after_id)
        if archived:
            candidates = iter(self.not_live[bisect_left(self.not_live, start):])
            wanted = ARCHIVED
        else:
            candidates = iter(range(start, len(self.table)))
            wanted = LIVE
        page: list[int] = []
        state = self.state
        for pos in candidates:
            if state[pos] == wanted:
                if len(page) == limit:
                    return page, self.table.ids[pos]
                page.append(pos)
        return page, None

    def counts(self) -> dict[str, int]:
        archived = sum(1 for pos in self.not_live if self.state[pos] == ARCHIVED)
        return {"live": len(self.table) - len(self.not_live), "archived": archived,
                "deleted": len(self.not_live) - archived}

    # --- writing ------------------------------------------------------------------------------

    def rebuild_modified_index(self) -> None:
        modified, state = self.table.modified_ms, self.state
        self.modified_index = sorted(sort_key(ms, pos) for pos, ms in enumerate(modified) if state[pos] == LIVE)

    def _unindex(self, pos: int) -> None:
        key = sort_key(self.table.modified_ms[pos], pos)
        i = bisect_left(self.modified_index, key)
        if i < len(self.modified_index) and self.modified_index[i] == key:
            del self.modified_index[i]

    def _set_properties(self, pos: int, properties: dict[str, object]) -> dict[str, str | None]:
        """Writes the values; returns the ones that changed."""
        changed = {}
        for name, raw in properties.items():
            if name in READ_ONLY:
                raise validation_error(f"Property '{name}' is read-only", field=name)
            value = as_property_value(name, raw)
            column = self.table.columns.get(name)
            if column is None:
                column = self.table.columns[name] = [None] * len(self.table)
            if column[pos] != value:
                column[pos] = value
                changed[name] = value
                self._by_value.pop(name, None)
        return changed

    def create(self, properties: dict[str, object], created_ms: int | None = None,
               modified_ms: int | None = None) -> int:
        now = self.clock()
        created_ms = now if created_ms is None else created_ms
        table = self.table
        pos = len(table)
        table.ids.append(table.ids[-1] + 1 if pos else 1)
        table.created_ms.append(created_ms)
        table.modified_ms.append(created_ms if modified_ms is None else modified_ms)
        for column in table.columns.values():
            column.append(None)
        self.state.append(LIVE)
        self._set_properties(pos, properties)
        insort(self.modified_index, sort_key(table.modified_ms[pos], pos))
        self.changed_at[pos] = now
        return pos

    def modify(self, pos: int, properties: dict[str, object], modified_ms: int | None = None) -> dict:
        """Sets properties and bumps the last-modified date (to now unless given); returns what changed."""
        changed = self._set_properties(pos, properties)
        self._retime(pos, self.clock() if modified_ms is None else modified_ms)
        return changed

    def _retime(self, pos: int, modified_ms: int) -> None:
        live = self.state[pos] == LIVE
        if live:
            self._unindex(pos)
        self.table.modified_ms[pos] = modified_ms
        if live:
            insort(self.modified_index, sort_key(modified_ms, pos))
        self.changed_at[pos] = self.clock()

    def modify_many(self, positions: list[int], properties: dict[str, object], modified_ms: int | None = None) -> None:
        modified_ms = self.clock() if modified_ms is None else modified_ms
        if len(positions) < 2000:
            for pos in positions:
                self.modify(pos, properties, modified_ms)
            return
        now = self.clock()  # many at once: one sort beats thousands of list inserts
        for pos in positions:
            self._set_properties(pos, properties)
            self.table.modified_ms[pos] = modified_ms
            self.changed_at[pos] = now
        self.rebuild_modified_index()

    def archive(self, pos: int) -> bool:
        """Returns False when the record was archived already."""
        if self.state[pos] != LIVE:
            return False
        self._unindex(pos)
        self.state[pos] = ARCHIVED
        self.archived_at[pos] = self.clock()
        insort(self.not_live, pos)
        return True

    def restore(self, pos: int) -> bool:
        if self.state[pos] != ARCHIVED:
            return False
        self.state[pos] = LIVE
        del self.archived_at[pos]
        del self.not_live[bisect_left(self.not_live, pos)]
        now = self.clock()
        self.table.modified_ms[pos] = now  # a restore is a change the next incremental run must see
        insort(self.modified_index, sort_key(now, pos))
        self.changed_at[pos] = now
        return True

    def delete(self, pos: int) -> None:
        """GDPR delete: the record is gone for good and never shows up as archived."""
        if self.state[pos] == LIVE:
            self._unindex(pos)
            insort(self.not_live, pos)
        self.archived_at.pop(pos, None)
        self.state[pos] = DELETED
        for column in self.table.columns.values():
            column[pos] = None
        self._by_value.clear()

    def merge(self, primary: int, merged: int) -> int:
        """Merge the record at ``merged`` into the one at ``primary`` (both live, not the same), as
        HubSpot's merge does: the primary keeps its id and its values, takes the merged record's
        values where it has none, lists the merged id in ``hs_merged_object_ids`` and is modified
        now; the merged-away record is gone for good (no live record, not archived either: reading
        its id finds nothing). Returns how many properties moved."""
        if primary == merged or self.state[primary] != LIVE or self.state[merged] != LIVE:
            raise validation_error("a merge takes two different live records", field="objectIdToMerge")
        moved = {name: column[merged] for name, column in self.table.columns.items()
                 if name != MERGED_IDS and column[primary] is None and column[merged] is not None}
        earlier = [i for i in (self.value(primary, MERGED_IDS) or "").split(";") if i]
        moved_too = [i for i in (self.value(merged, MERGED_IDS) or "").split(";") if i]
        ids = ";".join(dict.fromkeys([*earlier, str(self.table.ids[merged]), *moved_too]))
        self._set_properties(primary, {**moved, MERGED_IDS: ids})
        self._retime(primary, self.clock())
        self.delete(merged)
        return len(moved)

    def not_live_between(self, lo: int, hi: int) -> int:
        """How many positions in [lo, hi) are archived or deleted (none when hi <= lo: an empty range)."""
        return max(0, bisect_left(self.not_live, hi) - bisect_left(self.not_live, lo))

    def modified_slice(self, lo_ms: int, hi_ms: int) -> tuple[int, int]:
        """Index range of live records with lo_ms <= lastmodified_ms <= hi_ms."""
        return (bisect_left(self.modified_index, lo_ms << 32),
                bisect_right(self.modified_index, (hi_ms << 32) | _MASK))
