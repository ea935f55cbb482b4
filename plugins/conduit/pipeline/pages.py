"""CRM record pages as the extract stages them: ids plus one tuple of string values per record.

A source (``conduit.sources``) reads pages of records, each ``{"id", "properties": {...}}`` with
string-or-null values. Building a dict per record costs more than the rest of the extract, so
sources decode their response bytes straight into a :class:`RecordPage` (ids plus, per record, a
tuple of the requested properties' values), and pages become Arrow tables in batches
(:func:`pages_to_table`): one conversion call for all properties, which matters when several
extract threads share the GIL.

A :class:`RecordPage` still reads as a sequence of ``{"id", "properties"}`` dicts (built on
access), so code written for plain JSON pages keeps working; cursors read its ids and columns.

Staged text is Unicode: a value that is not (a lone surrogate, as Python's ``json`` decodes
``"\\ud800"``) has each such code point replaced by U+FFFD (:func:`replace_lone_surrogates`);
the mapping reports it (see ``conduit.transforms.mapping``). Everything else, NUL included, is
staged as the source sent it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, compress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

REPLACEMENT = "\ufffd"  # U+FFFD REPLACEMENT CHARACTER
_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_lone_surrogates(value: Any) -> Any:
    """``value`` (a str, or dicts, lists and tuples of them, keys included) with every surrogate
    code point replaced by U+FFFD. Decoded JSON holds one only where an escape such as
    ``\\ud800`` was not half of a pair: such text is not Unicode and cannot be encoded as UTF-8."""
    if isinstance(value, str):
        return _SURROGATE.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {replace_lone_surrogates(k): replace_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(replace_lone_surrogates(v) for v in value)
    return value


class RecordPage(Sequence):
    """One page of records: ``ids`` and, per record, a tuple of its ``properties``' values.

    ``total`` (how many records the request matched) and ``after`` (the next page's cursor) are
    the source's, when its answer carries them.
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
    struct_type = pa.struct([(f"p{i}", pa.string()) for i in range(len(names))])
    try:
        struct, id_array = pa.array(rows, type=struct_type), pa.array(ids, pa.string())
    except UnicodeEncodeError:  # a lone surrogate (records decoded by Python's json): not Unicode
        rows, ids = replace_lone_surrogates(list(rows)), replace_lone_surrogates(list(ids))
        struct, id_array = pa.array(rows, type=struct_type), pa.array(ids, pa.string())
    values = dict(zip(names, struct.flatten(), strict=True))
    columns = {"id": id_array}
    for name in properties:
        if name != "id":
            columns[name] = values[name] if name in values else pa.nulls(len(rows), pa.string())
    return pa.table(columns)
