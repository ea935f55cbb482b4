"""Phone numbers to E.164 for whole Arrow columns, with ``phonenumbers``.

The library is asked once per distinct (region, number) pair of a batch, and
``fields.phone_to_e164`` keeps its answers across batches (the stand-in's million contacts hold
436 distinct numbers). A hand-written vectorised copy of the library's parsing used to stand in
here; on the 1M benchmark the library path is cheaper, so it went. Where numbers are unique it
costs ~40 µs a number (``bench/README.md``, "Hand-written paths: kept or deleted").
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

from conduit.transforms.columns import map_distinct
from conduit.transforms.fields import phone_to_e164

# Region codes ("US", "001") hold no "|": the first "|" of a "region|number" key ends the region.
_SEPARATOR = "|"
_E164 = r"^\+[1-9][0-9]{1,16}$"


def phones_to_e164(values: pa.Array, regions: pa.Array) -> pa.Array:
    """``fields.phone_to_e164`` for every row: ``values`` are phone texts (or null), ``regions``
    each row's phonenumbers region code. Each distinct (region, number) is asked once."""
    pairs = pc.dictionary_encode(pc.binary_join_element_wise(regions, pc.fill_null(values, ""), _SEPARATOR))
    results = []
    for pair in pairs.dictionary.to_pylist():
        region, _, value = pair.partition(_SEPARATOR)
        results.append(phone_to_e164(value, region))  # blank text (and null, filled) -> None
    return pa.array(results, pa.string()).take(pairs.indices)


@lru_cache(maxsize=1 << 16)
def _is_valid_international(text: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(text, None))
    except phonenumbers.NumberParseException:
        return False


def invalid_results(results: pa.Array) -> np.ndarray:
    """Per row of :func:`phones_to_e164`'s ``results``: True where a number was given but is not
    valid (the transform kept it as text). A valid number comes back in E.164, and "+" numbers
    read the same in every region, so a result is valid exactly when it is E.164 text that
    parses as a valid number (asked once per distinct text)."""
    present = np.asarray(results.is_valid(), dtype=bool)
    e164 = np.asarray(pc.fill_null(pc.match_substring_regex(results, _E164), False), dtype=bool)
    valid = np.zeros(len(results), dtype=bool)
    rows = np.flatnonzero(e164)
    if len(rows):
        checked = map_distinct(results.take(pa.array(rows)), _is_valid_international, pa.bool_())
        valid[rows] = np.asarray(checked, dtype=bool)
    return present & ~valid
