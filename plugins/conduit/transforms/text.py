"""CRM text that cannot be stored as it came: NUL characters, and text that was not Unicode.

The rule these functions implement is described in :mod:`conduit.transforms.mapping`, which
applies it. In short: NUL (U+0000) is removed (PostgreSQL ``text`` cannot hold it), U+FFFD marks
text the CRM sent that was not Unicode (the page decoder put it there), and either makes the value
*damaged*: the mapping records it as a defect of every column made from it.

Every function takes and returns Arrow string arrays; a batch without damage costs one pass over
its bytes per property (no per-row work, no copies).
"""

from __future__ import annotations

from functools import reduce

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NUL = "\x00"
REPLACEMENT = "\ufffd"  # U+FFFD REPLACEMENT CHARACTER
SHOWN_NUL = "\u2400"  # ␀ SYMBOL FOR NULL: how a removed NUL is shown in defects and the quarantine
_UTF8_REPLACEMENT = np.frombuffer(REPLACEMENT.encode(), np.uint8)


def utf8_data(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of a string array (without copying) and each text's offsets into them."""
    if not len(texts):
        return np.zeros(0, np.uint8), np.zeros(1, np.int64)
    offsets_buffer, data_buffer = texts.buffers()[1:3]
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[texts.offset : texts.offset + len(texts) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    return data[offsets[0] : offsets[-1]], offsets - offsets[0]


def damaged(values: pa.Array) -> pa.Array | None:
    """Per text (string array): does it hold a NUL or a U+FFFD? Null texts are not damaged.
    None when no text is (the common case: decided on the raw bytes, without a per-row pass)."""
    data, _ = utf8_data(values)
    if not (data == 0).any() and not _holds(data, _UTF8_REPLACEMENT):
        return None
    mask = pc.or_(pc.match_substring(values, NUL), pc.match_substring(values, REPLACEMENT))
    mask = pc.fill_null(mask, False)
    return mask if pc.any(mask).as_py() else None


def without_nul(values: pa.Array) -> pa.Array:
    """The texts with every NUL removed."""
    return pc.replace_substring(values, NUL, "")


def shown(values: pa.Array) -> pa.Array:
    """The texts as a person reads them and any database stores them: NUL shown as ␀ (U+2400)."""
    return pc.replace_substring(values, NUL, SHOWN_NUL)


def any_of(masks: list[pa.Array | None]) -> pa.Array | None:
    """The rows damaged in any of ``masks`` (None entries: nothing damaged); None if none is."""
    present = [m for m in masks if m is not None]
    return reduce(pc.or_, present) if present else None


def joined(parts: list[pa.Array], separator: str = " ") -> pa.Array:
    """Per row, the non-null texts of ``parts`` joined by ``separator`` (null when all are null)."""
    joined_ = parts[0]
    # not null_handling="skip": pyarrow 26 then drops rows whose values are all null
    for part in parts[1:]:
        joined_ = pc.coalesce(pc.binary_join_element_wise(joined_, part, separator), joined_, part)
    return joined_


def _holds(data: np.ndarray, needle: np.ndarray) -> bool:
    """Whether the byte sequence ``needle`` occurs in ``data`` (vectorised on its first byte)."""
    starts = np.flatnonzero(data[: max(len(data) - len(needle) + 1, 0)] == needle[0])
    hit = np.ones(len(starts), dtype=bool)
    for i, byte in enumerate(needle[1:], start=1):
        hit &= data[starts + i] == byte
    return bool(hit.any())
