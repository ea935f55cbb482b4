"""The value normalisers of ``fields`` for whole Arrow columns.

Library calls are made once per distinct value (and cached across batches); e-mail addresses,
unique per record, take a vectorised fast path that gives the library's answer without calling it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from conduit.specs.model import FALSE_TEXTS, TRUE_TEXTS, WHOLE_NUMBER
from conduit.transforms import fields

UTC_MICROS = pa.timestamp("us", tz="UTC")
_STRING = pa.string()
# Addresses email-validator would return as they are (modulo case) if valid: plain ASCII
# atext, dots and "@", and no IDNA ("xn--") labels, which it turns into Unicode.
_PLAIN_EMAIL = r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~@-]+$"
_EPOCH_MS = f"^{fields.EPOCH_MS.pattern}$"
# Addresses email-validator certainly accepts (checked against it in the tests): a dot-atom local
# part of at most 64 characters, host labels of letters, digits and inner single hyphens, a TLD of
# letters, no special-use domain. Anything else is asked of the library.
_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_SURELY_VALID_EMAIL = (
    rf"^[{_ATEXT}]+(?:\.[{_ATEXT}]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9]|-[A-Za-z0-9]){{0,61}}\.)+[A-Za-z]{{2,63}}$"
)
_SHORT_LOCAL_PART = r"^[^@]{1,64}@"
_SPECIAL_USE_DOMAIN = r"(?i)[.@](?:arpa|invalid|local|localhost|onion|test)$"
_MAX_EMAIL_LENGTH = 254


def blank_to_null(values: pa.Array) -> pa.Array:
    """Empty and whitespace-only text becomes null."""
    blank = pc.or_(pc.equal(values, ""), pc.utf8_is_space(values))
    if not pc.any(blank).as_py():
        return values
    return pc.if_else(blank, pa.scalar(None, values.type), values)


def map_distinct(
    values: pa.Array, function: Callable[[str], object], type_: pa.DataType = _STRING
) -> pa.Array:
    """``function`` applied once per distinct non-null value; nulls stay null."""
    encoded = pc.dictionary_encode(values)
    mapped = pa.array([function(v) for v in encoded.dictionary.to_pylist()], type_)
    return mapped.take(encoded.indices)


def normalize_emails(values: pa.Array) -> pa.Array:
    """``fields.normalize_email`` per row."""
    trimmed = blank_to_null(pc.utf8_trim_whitespace(values))
    plain = pc.and_(
        pc.match_substring_regex(trimmed, _PLAIN_EMAIL),
        pc.invert(pc.match_substring(trimmed, "xn--", ignore_case=True)),
    )
    plain = pc.fill_null(plain, True)  # nulls stay null either way
    if pc.all(plain).as_py():
        return pc.utf8_lower(trimmed)
    other = pc.invert(plain)
    looked_up = map_distinct(pc.if_else(other, trimmed, None), fields.normalize_email)
    return pc.if_else(other, looked_up, pc.utf8_lower(trimmed))


def invalid_emails(normalized: pa.Array) -> np.ndarray:
    """Per row of :func:`normalize_emails`' result: True where an address was given but is not
    valid. Most addresses pass a vectorised check that only valid ones pass; the rest are asked
    of ``fields.is_valid_email`` once per distinct value."""
    sure = pc.and_(
        pc.and_(pc.match_substring_regex(normalized, _SURELY_VALID_EMAIL),
                pc.match_substring_regex(normalized, _SHORT_LOCAL_PART)),
        pc.and_(pc.invert(pc.match_substring_regex(normalized, _SPECIAL_USE_DOMAIN)),
                pc.less_equal(pc.utf8_length(normalized), _MAX_EMAIL_LENGTH)),
    )
    unsure = np.asarray(pc.fill_null(pc.invert(sure), False), dtype=bool)
    invalid = np.zeros(len(normalized), dtype=bool)
    if unsure.any():
        rows = np.flatnonzero(unsure)
        checked = map_distinct(normalized.take(pa.array(rows)), fields.is_valid_email, pa.bool_())
        invalid[rows] = ~np.asarray(checked, dtype=bool)
    return invalid


def countries_to_iso2(values: pa.Array) -> pa.Array:
    return map_distinct(values, fields.country_to_iso2)


def invalid_countries(codes: pa.Array) -> np.ndarray:
    """Per row of :func:`countries_to_iso2`' result: True where a country was given but is not
    an ISO-3166 alpha-2 code (the transform kept the text)."""
    known = np.asarray(pc.fill_null(pc.is_in(codes, value_set=pa.array(fields.iso2_codes(), pa.string())), False),
                       dtype=bool)
    return np.asarray(codes.is_valid(), dtype=bool) & ~known


def phone_regions(countries: pa.Array | None, default_region: str, size: int) -> pa.Array:
    """Each row's phonenumbers region: its country in any form, else ``default_region``."""
    if countries is None:
        return pa.array(np.full(size, fields.phone_region(None, default_region)), pa.string())
    return map_distinct(pc.fill_null(countries, ""), lambda c: fields.phone_region(c or None, default_region))


def parse_timestamps(values: pa.Array) -> pa.Array:
    """``fields.parse_timestamp`` per row, as UTC microseconds; unparseable text is null."""
    values = pc.utf8_trim_whitespace(values.cast(pa.string()))
    epoch = pc.fill_null(pc.match_substring_regex(values, _EPOCH_MS), False)
    try:  # Arrow reads ISO-8601 with a "Z" or an offset, HubSpot's format
        parsed = pc.cast(pc.if_else(epoch, None, values), UTC_MICROS)
    except pa.ArrowInvalid:  # dates, times without offset (UTC), or garbage (null): pandas
        text = pc.if_else(epoch, None, values).to_pandas()
        parsed = pa.array(
            pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce").astype("datetime64[us, UTC]")
        )
    if pc.any(epoch).as_py():
        millis = pc.cast(pc.if_else(epoch, values, None), pa.int64())
        from_epoch = pc.cast(pc.multiply(millis, 1000), pa.timestamp("us")).cast(UTC_MICROS)
        parsed = pc.if_else(epoch, from_epoch, parsed)
    return parsed


def to_integers(values: pa.Array) -> pa.Array:
    """Whole numbers in text as int64; anything else null."""
    if pa.types.is_integer(values.type):
        return values.cast(pa.int64())
    text = pc.utf8_trim_whitespace(values.cast(pa.string()))
    whole = pc.fill_null(pc.match_substring_regex(text, WHOLE_NUMBER), False)
    unsigned = pc.replace_substring_regex(text, r"^\+", "")  # Arrow's cast refuses "+7"
    return pc.cast(pc.if_else(whole, unsigned, None), pa.int64())


def to_booleans(values: pa.Array) -> pa.Array:
    """true/false, yes/no, 1/0 (any case) as booleans; anything else null."""
    if pa.types.is_boolean(values.type):
        return values

    def read(text: str) -> bool | None:
        key = text.strip().lower()
        return True if key in TRUE_TEXTS else False if key in FALSE_TEXTS else None

    return map_distinct(values.cast(pa.string()), read, pa.bool_())
