"""CRM record pages decoded straight from response bytes, without building a dict per record.

HubSpot answers list, search and batch-read calls with ``{"results": [{"id", "properties": {...},
...}], "paging": ..., "total": ...}``. The extract only needs each record's ``id`` and the requested
properties, so a page is decoded with ``msgspec`` into structs generated for exactly those
property names (everything else in the body is skipped while parsing, nothing is built as a
dict) and kept as ids plus one tuple of values per record: :class:`RecordPage`. Pages become
Arrow tables in batches (:func:`pages_to_table`): one conversion call for all properties, which
matters when several extract threads share the GIL. Property values are strings or null, as the
API contract says; any other JSON type fails the decode (the hook turns that into an error
naming the request).

A :class:`RecordPage` still reads as a sequence of ``{"id", "properties"}`` dicts (built on
access), so code written for plain JSON pages keeps working; the cursor reads its ids and columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from itertools import chain, compress
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import pyarrow as pa


class _Next(msgspec.Struct, gc=False):
    after: str | None = None


class _Paging(msgspec.Struct, gc=False):
    next: _Next | None = None


class PageDecoder:
    """Decodes one response body (list, search or batch read) for one list of property names."""

    def __init__(self, properties: Sequence[str]):
        self.properties = tuple(dict.fromkeys(properties))
        fields = [f"p{i}" for i in range(len(self.properties))]
        # Field names are generated: property names need not be Python identifiers.
        props = msgspec.defstruct("Properties", [(f, str | None, None) for f in fields],
                                  rename=dict(zip(fields, self.properties, strict=True)), gc=False)
        record = msgspec.defstruct("Record", [("id", str), ("properties", props, msgspec.field(default_factory=props))],
                                   gc=False)
        page = msgspec.defstruct("Page", [("results", list[record], msgspec.field(default_factory=list)),
                                          ("total", int | None, None), ("paging", _Paging | None, None)])
        self._decoder = msgspec.json.Decoder(page)

    def decode(self, content: bytes) -> RecordPage:
        """Raises ``msgspec.DecodeError`` (a ``ValidationError`` for wrong types) on a bad body."""
        page = self._decoder.decode(content)
        results = page.results
        rows = list(map(msgspec.structs.astuple, [r.properties for r in results]))
        paging = page.paging
        after = paging.next.after if paging is not None and paging.next is not None else None
        return RecordPage([r.id for r in results], self.properties, rows, total=page.total, after=after)


@lru_cache(maxsize=64)
def page_decoder(properties: tuple[str, ...]) -> PageDecoder:
    return PageDecoder(properties)


class RecordPage(Sequence):
    """One page of records: ``ids`` and, per record, a tuple of its ``properties``' values.

    ``total`` (search) and ``after`` (the next-page cursor of list and search) come from the body.
    Indexing or iterating gives ``{"id": ..., "properties": {...}}`` dicts, built on access.
    """

    __slots__ = ("ids", "properties", "rows", "total", "after", "_columns", "_index")

    def __init__(self, ids: Sequence[str], properties: Sequence[str], rows: Sequence[tuple],
                 *, total: int | None = None, after: str | None = None):
        self.properties = tuple(properties)
        if len(rows) != len(ids) or (rows and len(rows[0]) != len(self.properties)):
            raise ValueError("every record needs one id and one value per property")
        self.ids = ids
        self.rows = rows
        self.total = total
        self.after = after
        self._columns: list[Sequence[str | None]] | None = None
        self._index: dict[str, int] | None = None

    @classmethod
    def from_records(cls, records: Iterable[dict], properties: Sequence[str]) -> RecordPage:
        """A page from plain JSON records (``{"id", "properties"}`` dicts); missing values are null."""
        records = list(records)
        properties = tuple(dict.fromkeys(properties))
        props = [r.get("properties") or {} for r in records]
        return cls([r["id"] for r in records], properties, [tuple(p.get(name) for name in properties) for p in props])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return RecordPage(self.ids[index], self.properties, self.rows[index])
        return {"id": self.ids[index], "properties": dict(zip(self.properties, self.rows[index], strict=True))}

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self.ids)):
            yield self[i]

    def __repr__(self) -> str:
        return f"RecordPage({len(self)} records, properties={list(self.properties)})"

    @property
    def columns(self) -> list[Sequence[str | None]]:
        """The values column by column (in ``properties`` order)."""
        if self._columns is None:
            self._columns = list(zip(*self.rows, strict=True)) if self.rows else [() for _ in self.properties]
        return self._columns

    def column(self, name: str) -> Sequence[str | None]:
        """The values of one property; all null when the page was not asked for it."""
        if self._index is None:
            self._index = {name: i for i, name in enumerate(self.properties)}
        i = self._index.get(name)
        return self.columns[i] if i is not None else [None] * len(self.ids)

    def where(self, keep: Sequence[bool]) -> RecordPage:
        """The records whose ``keep`` flag is true, in order."""
        return RecordPage(list(compress(self.ids, keep)), self.properties, list(compress(self.rows, keep)))


def as_record_page(page: Any, properties: Sequence[str]) -> RecordPage:
    """A :class:`RecordPage` as is; plain JSON records (a list of dicts) converted."""
    return page if isinstance(page, RecordPage) else RecordPage.from_records(page, properties)


def results_of(reply: Any) -> Any:
    """The records of a search/list reply: a :class:`RecordPage` itself, or a JSON body's ``results``."""
    return reply if isinstance(reply, RecordPage) else reply.get("results", [])


def pages_to_table(pages: Sequence[RecordPage], properties: Sequence[str]) -> pa.Table:
    """One Arrow table (``id`` and every property, all strings) of the pages' records, in order.
    A property the pages were not asked for is all null."""
    import pyarrow as pa

    if len({p.properties for p in pages}) > 1:  # pages of different requests: one at a time
        return pa.concat_tables([pages_to_table([p], properties) for p in pages])
    names = pages[0].properties if pages else ()
    rows = pages[0].rows if len(pages) == 1 else list(chain.from_iterable(p.rows for p in pages))
    ids = pages[0].ids if len(pages) == 1 else list(chain.from_iterable(p.ids for p in pages))
    # all properties in one conversion call: rows -> a struct array, whose fields are the columns
    struct = pa.array(rows, type=pa.struct([(f"p{i}", pa.string()) for i in range(len(names))]))
    values = dict(zip(names, struct.flatten(), strict=True))
    columns = {"id": pa.array(ids, pa.string())}
    for name in properties:
        if name != "id":
            columns[name] = values[name] if name in values else pa.nulls(len(rows), pa.string())
    return pa.table(columns)
