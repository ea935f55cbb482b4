"""Transforms: normalise CRM values and map raw records to ERP columns as a spec says.

``map_frame``/``map_table`` run a spec's mapping over a batch; ``fields`` holds the single-value
normalisers (e-mail, phone, country, timestamp) they build on.
"""

from conduit.transforms.fields import (
    country_to_iso2,
    is_valid_email,
    normalize_email,
    parse_timestamp,
    phone_to_e164,
)
from conduit.transforms.mapping import MAPPED_EXTRA_COLUMNS, map_frame, map_table, mapped_schema, row_hashes

__all__ = [
    "MAPPED_EXTRA_COLUMNS",
    "country_to_iso2",
    "is_valid_email",
    "map_frame",
    "map_table",
    "mapped_schema",
    "normalize_email",
    "parse_timestamp",
    "phone_to_e164",
    "row_hashes",
]
