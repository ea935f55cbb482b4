"""HubSpot response bodies decoded straight into :class:`~conduit.pipeline.pages.RecordPage` s,
without building a dict per record.

HubSpot answers list, search and batch-read calls with ``{"results": [{"id", "properties": {...},
...}], "paging": ..., "total": ...}``. The extract only needs each record's ``id`` and the requested
properties, so a page is decoded with ``msgspec`` into structs generated for exactly those
property names (everything else in the body is skipped while parsing, nothing is built as a
dict) and kept as ids plus one tuple of values per record. Property values are strings or null,
as the API contract says; any other JSON type fails the decode (the hook turns that into an error
naming the request).

Text that is not Unicode does not fail a page: bytes that are not UTF-8 (each maximal invalid
sequence, as Python's ``errors="replace"`` reads them) and lone surrogate escapes such as
``"\\ud800"`` (JSON allows them, UTF-8 cannot encode them) become U+FFFD, and the record loads;
the mapping records every value holding one as a defect (see ``conduit.transforms.mapping``). Only
a body that needs this pays for it (:func:`repair_unicode`); one that is not JSON still fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, TypeVar

import msgspec

from conduit.pipeline.pages import RecordPage, replace_lone_surrogates

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
T = TypeVar("T")


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
        """Raises ``msgspec.DecodeError`` (a ``ValidationError`` for wrong types) on a bad body;
        text that is not Unicode is read as U+FFFD (:func:`repair_unicode`)."""
        page = _lenient(self._decoder.decode, content)
        results = page.results
        rows = list(map(msgspec.structs.astuple, [r.properties for r in results]))
        paging = page.paging
        after = paging.next.after if paging is not None and paging.next is not None else None
        return RecordPage([r.id for r in results], self.properties, rows, total=page.total, after=after)


def decode_json(content: bytes) -> Any:
    """A JSON body as plain Python values (``msgspec.json.decode``), text that is not Unicode
    read as U+FFFD as in pages: for the calls whose answer is not a page of records."""
    return _lenient(msgspec.json.decode, content)


def _lenient(decode: Callable[[bytes], T], content: bytes) -> T:
    try:
        return decode(content)
    except (msgspec.DecodeError, UnicodeDecodeError):
        repaired = repair_unicode(content)
        if repaired is None:
            raise
        return decode(repaired)


def repair_unicode(content: bytes) -> bytes | None:
    """The JSON body ``content`` with its text made Unicode: undecodable bytes and lone surrogate
    escapes replaced by U+FFFD. None when it holds neither, or is not JSON even then."""
    try:
        text, damaged = content.decode("utf-8"), False
    except UnicodeDecodeError:
        text, damaged = content.decode("utf-8", errors="replace"), True
    if not damaged and not _SURROGATE_ESCAPE.search(content):
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    repaired = replace_lone_surrogates(data)
    return msgspec.json.encode(repaired) if damaged or repaired != data else None


@lru_cache(maxsize=64)
def page_decoder(properties: tuple[str, ...]) -> PageDecoder:
    return PageDecoder(properties)
