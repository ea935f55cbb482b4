"""The mapping engine: raw CRM records to ERP columns, as the spec's ``mapping`` says.

``map_frame`` turns a batch of raw records (one row per CRM record, one text column per CRM
property) into exactly the spec's columns, typed, plus ``source_modified_at`` and ``row_hash``.
It normalises and never drops a row or raises on bad data; the quality gate judges.

A step with ``on_invalid: null`` or ``reject`` (``email``, ``phone_e164``, ``country_iso2``) also
says which values it could not normalise: the mapped rows then carry, per such column, a text
column :func:`invalid_column` holding the value that entered the step where it was invalid (null
elsewhere). Under ``null`` the column itself is null there. The gate turns these into defects or
rejections; the load ignores them.

CRM text that cannot be stored as it came. Text loads exactly as the CRM holds it: tabs,
newlines, carriage returns, backslashes, quotes, ``\\.`` lines, emoji, right-to-left text and
bidi controls, values of a megabyte, byte for byte in PostgreSQL (CSV ``COPY``) and SQLite. Two
kinds of text cannot:

* NUL (U+0000): PostgreSQL ``text`` cannot hold it. It is removed from every CRM property before
  any step runs (for every target, so PostgreSQL and SQLite hold the same values and row hashes).
* Text that is not Unicode (bytes that are not UTF-8, a lone surrogate escape such as
  ``\\ud800``) cannot even be decoded: the page decoder (``conduit.sources.hubspot.pages``)
  replaces each such sequence with U+FFFD, the replacement character, and the page loads.

A property that held a NUL or holds a U+FFFD is *damaged*, and so is every column made from its
text (its ``source``, ``template`` and ``concat`` properties; not a phone's ``region_from``). A
damaged column whose step sets ``on_invalid`` (e-mail, phone, country) counts as a value that does
not normalise: a damaged contact detail is not guessed at (``null``: nulled and a defect;
``reject``: the record is quarantined). Any other column loads the cleaned text and records a
defect with rule ``clean_text`` (:data:`TEXT_RULE`). The defect's value is the CRM's text with each
NUL shown as ␀ (U+2400); its reason reads e.g. ``first_name 'Ann␀a' could not be normalised by
clean_text``, and it stays open until the CRM holds clean text. A U+FFFD the CRM itself stores is
reported the same way: it always stands for text lost before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from conduit.exceptions import TransformError
from conduit.specs.model import (
    Concat,
    CountryIso2,
    DType,
    Email,
    FieldMapping,
    Lower,
    MapValues,
    PhoneE164,
    SyncSpec,
    Template,
    TitleCase,
    ToTimestamp,
    Transform,
    Trim,
    Upper,
    template_parts,
)
from conduit.targets.base import TRACKING_COLUMNS
from conduit.transforms import columns, text
from conduit.transforms.phones import invalid_results, phones_to_e164

MAPPED_EXTRA_COLUMNS = TRACKING_COLUMNS  # what the transform adds after the mapped columns
INVALID_PREFIX = "conduit_invalid:"  # never a spec column: those are plain identifiers
TEXT_RULE = "clean_text"  # the defect rule of damaged text in columns without an on_invalid step
_INVALID_ROWS = {
    Email: columns.invalid_emails,
    PhoneE164: invalid_results,
    CountryIso2: columns.invalid_countries,
}


def invalid_column(column: str) -> str:
    """The mapped column holding the values ``column``'s ``on_invalid`` step could not normalise."""
    return INVALID_PREFIX + column


def checked_columns(spec: SyncSpec) -> dict[str, FieldMapping]:
    """The spec's columns whose values that do not normalise are nulled or rejected."""
    return {name: m for name, m in spec.mapping.items() if m.invalid_check is not None}


def text_checked_columns(spec: SyncSpec) -> dict[str, FieldMapping]:
    """The spec's other columns made from CRM text: damaged text there is a ``clean_text`` defect."""
    return {name: m for name, m in spec.mapping.items() if m.invalid_check is None and text_sources(m)}


def judged_columns(spec: SyncSpec) -> list[str]:
    """The columns that carry an :func:`invalid_column`, in spec order."""
    judged = checked_columns(spec).keys() | text_checked_columns(spec).keys()
    return [name for name in spec.mapping if name in judged]


def text_sources(mapping: FieldMapping) -> list[str]:
    """The CRM properties whose text flows into the column (a phone's ``region_from`` only picks
    the numbering plan)."""
    return list(dict.fromkeys(_text_sources(mapping)))


def _text_sources(mapping: FieldMapping) -> Iterator[str]:
    if mapping.source:
        yield mapping.source
    for step in mapping.transforms:
        if isinstance(step, Template):
            yield from (name for _, name in template_parts(step.template) if name)
        elif isinstance(step, Concat):
            yield from step.sources

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "timestamp": columns.UTC_MICROS,
    "boolean": pa.bool_(),
}
_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
_SEPARATOR = "\x1f"  # between a row's values when hashed


def mapped_schema(spec: SyncSpec) -> pa.Schema:
    """The schema of the mapped Parquet files. Every mapped column is nullable here even where
    the spec says ``nullable: false``: rows breaking that must reach the quality gate."""
    fields_ = [pa.field(name, _ARROW_TYPES[m.dtype]) for name, m in spec.mapping.items()]
    fields_ += [
        pa.field("source_modified_at", columns.UTC_MICROS),
        pa.field("row_hash", pa.string(), nullable=False),
    ]
    fields_ += [pa.field(invalid_column(name), pa.string()) for name in judged_columns(spec)]
    return pa.schema(fields_)


class _Properties:
    """The raw CRM properties of a batch as Arrow text, NULs removed, blanks as null; absent ones
    all null. Which rows of a property were damaged, and their text as shown, are kept aside."""

    def __init__(self, raw: pd.DataFrame):
        self._raw = raw
        self._cache: dict[str, pa.Array] = {}
        self._damage: dict[str, pa.Array] = {}
        self._shown: dict[str, pa.Array] = {}

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, name: str) -> pa.Array:
        if name not in self._cache:
            if name in self._raw.columns:
                values = pa.array(self._raw[name], from_pandas=True)
                if isinstance(values, pa.ChunkedArray):
                    values = values.combine_chunks()
                values = _text(values)
                damage = text.damaged(values)
                if damage is not None:
                    self._damage[name], self._shown[name] = damage, text.shown(values)
                    values = text.without_nul(values)
                self._cache[name] = columns.blank_to_null(values)
            else:
                self._cache[name] = pa.nulls(len(self), pa.string())
        return self._cache[name]

    def damage(self, name: str) -> pa.Array | None:
        """The rows whose ``name`` held a NUL or holds a U+FFFD; None when no row's does."""
        self[name]
        return self._damage.get(name)

    def shown(self, name: str) -> pa.Array:
        """``name`` as the CRM holds it, NULs shown as ␀ (clean values: as mapped)."""
        self[name]
        return self._shown.get(name, self._cache[name])


def _text(values: pa.Array) -> pa.Array:
    return values if pa.types.is_string(values.type) else values.cast(pa.string())


def _template(step: Template, props: _Properties) -> pa.Array:
    parts: list[pa.Array | str] = []
    for literal, name in template_parts(step.template):  # the spec refused what this cannot fill
        if literal:
            parts.append(literal)
        if name is not None:
            parts.append(props[name])
    if not any(isinstance(p, pa.Array) for p in parts):
        return pa.array(["".join(parts)] * len(props), pa.string())
    return pc.binary_join_element_wise(*parts, "")  # a null field makes the value null


def _concat(step: Concat, props: _Properties) -> pa.Array:
    """The non-blank values (trimmed) joined by the separator; null when all are blank."""
    parts = [columns.blank_to_null(pc.utf8_trim_whitespace(props[name])) for name in step.sources]
    return text.joined(parts, step.separator)


def _map_values(step: MapValues, values: pa.Array) -> pa.Array:
    fold = str.lower if step.case_insensitive else str
    table = {fold(key.strip()): value for key, value in step.values.items()}

    def lookup(value: str) -> str | None:
        key = fold(value.strip())
        return table[key] if key in table else value

    return columns.blank_to_null(columns.map_distinct(_text(values), lookup))


def _apply(step: Transform, values: pa.Array, props: _Properties) -> pa.Array:
    match step:
        case Trim():
            return columns.blank_to_null(pc.utf8_trim_whitespace(_text(values)))
        case Lower():
            return pc.utf8_lower(_text(values))
        case Upper():
            return pc.utf8_upper(_text(values))
        case TitleCase():
            return pc.utf8_title(_text(values))
        case Email():
            return columns.normalize_emails(_text(values))
        case PhoneE164(default_region=default_region, region_from=region_from):
            countries = props[region_from] if region_from else None
            return phones_to_e164(
                _text(values), columns.phone_regions(countries, default_region, len(values))
            )
        case CountryIso2():
            return columns.countries_to_iso2(_text(values))
        case Template():
            return _template(step, props)
        case Concat():
            return _concat(step, props)
        case MapValues():
            return _map_values(step, values)
        case ToTimestamp():
            return columns.parse_timestamps(values)
    raise TransformError(f"no implementation for transform {step.type!r}")


def _typed(values: pa.Array, dtype: DType) -> pa.Array:
    if dtype == "integer":
        return columns.to_integers(values)
    if dtype == "boolean":
        return columns.to_booleans(values)
    if dtype == "timestamp":
        return values if pa.types.is_timestamp(values.type) else columns.parse_timestamps(values)
    if pa.types.is_timestamp(values.type):
        return pc.strftime(values, "%Y-%m-%dT%H:%M:%SZ")
    return _text(values)


def typed_default(default: str | int | bool, dtype: DType) -> pa.Scalar:
    """A column's ``default`` as its ``dtype``, read like the CRM's text (null when it is not one:
    the spec refuses such a default)."""
    return _typed(pa.array([str(default)]), dtype)[0]


class _Damage:
    """The rows of one column made from damaged CRM text (None: no row is), and that text as shown."""

    def __init__(self, mapping: FieldMapping, props: _Properties):
        self._sources, self._props = text_sources(mapping), props
        self.rows = text.any_of([props.damage(name) for name in self._sources])

    def shown(self) -> pa.Array:
        return text.joined([self._props.shown(name) for name in self._sources])


def _map_column(mapping: FieldMapping, props: _Properties) -> tuple[pa.Array, pa.Array | None]:
    """The column's values and what the gate judges: the values its ``on_invalid`` step could
    not normalise (as they entered it) and, in any column, the damaged CRM text it was made from
    (as shown); null elsewhere, or None when no row has either."""
    values = props[mapping.source] if mapping.source else pa.nulls(len(props), pa.string())
    check, invalid_raw = mapping.invalid_check, None
    damage = _Damage(mapping, props)
    for step in mapping.transforms:
        result = _apply(step, values, props)
        if step is check:
            invalid_raw, result = _judge(step, _text(values), result, damage)
        values = result
    if check is None and damage.rows is not None:
        invalid_raw = pc.if_else(damage.rows, damage.shown(), pa.scalar(None, pa.string()))
    typed = _typed(values, mapping.dtype)
    if mapping.default is not None:
        typed = pc.fill_null(typed, typed_default(mapping.default, mapping.dtype))
    return typed, invalid_raw


def _judge(step: Transform, given: pa.Array, result: pa.Array, damage: _Damage) -> tuple[pa.Array, pa.Array]:
    """(the given values where ``step`` could not normalise them, else null; the step's result,
    nulled there under ``on_invalid: null``). Damaged text counts as not normalised, shown as
    the CRM holds it."""
    invalid = pa.array(_INVALID_ROWS[type(step)](result), pa.bool_())
    raw = pc.if_else(invalid, given, pa.scalar(None, pa.string()))
    if damage.rows is not None:
        invalid = pc.or_(invalid, damage.rows)
        raw = pc.if_else(damage.rows, damage.shown(), raw)
    if step.on_invalid == "null":
        result = pc.if_else(invalid, pa.scalar(None, result.type), result)
    return raw, result


def _hash_text(values: pa.Array) -> pa.Array:
    """Each value as bytes that cannot run into its neighbours once joined by ``_SEPARATOR``.
    Text: backslashes and separators escaped, null as ``\\N`` (which escaped text never is).
    Numbers, timestamps (µs) and booleans: a null flag and 8 big-endian bytes, fixed width."""
    if pa.types.is_string(values.type):
        data, _ = text.utf8_data(values)
        if ((data == ord("\\")) | (data == ord(_SEPARATOR))).any():  # rare: escape only then
            values = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), _SEPARATOR, "\\s")
        return pc.fill_null(values, "\\N").cast(pa.binary())
    numbers = values.cast(pa.int64()) if not pa.types.is_boolean(values.type) else pc.if_else(values, 1, 0)
    fixed = np.zeros((len(values), 9), dtype=np.uint8)
    fixed[:, 0] = np.asarray(numbers.is_valid())
    fixed[:, 1:] = (
        np.asarray(pc.fill_null(numbers, 0).cast(pa.int64())).astype(">i8").view(np.uint8).reshape(-1, 8)
    )
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(9), len(values), [None, pa.py_buffer(fixed.tobytes())]
    ).cast(pa.binary())


def row_hashes(mapped: list[pa.Array]) -> pa.Array:
    """blake2b-128 (hex) of each row's mapped values: stable across processes and versions."""
    if not mapped or not len(mapped[0]):
        return pa.array([], pa.string())
    rows = pc.binary_join_element_wise(*[_hash_text(v) for v in mapped], _SEPARATOR.encode())
    blake2b = hashlib.blake2b
    digests = b"".join([blake2b(r, digest_size=16).digest() for r in rows.to_pylist()])
    hex_text = digests.hex().encode()
    offsets = np.arange(0, len(hex_text) + 1, 32, dtype=np.int32)
    return pa.StringArray.from_buffers(len(rows), pa.py_buffer(offsets), pa.py_buffer(hex_text))


def map_table(raw: pd.DataFrame, spec: SyncSpec) -> pa.Table:
    """``map_frame`` as an Arrow table of ``mapped_schema(spec)``, for writing Parquet without
    the detour through pandas objects."""
    props = _Properties(raw.reset_index(drop=True))
    results = {name: _map_column(mapping, props) for name, mapping in spec.mapping.items()}
    mapped = {name: values for name, (values, _) in results.items()}
    mapped["source_modified_at"] = columns.parse_timestamps(props[spec.source.cursor.property])
    mapped["row_hash"] = row_hashes([mapped[name] for name in spec.mapping])
    for name in judged_columns(spec):
        judged = results[name][1]
        mapped[invalid_column(name)] = judged if judged is not None else pa.nulls(len(props), pa.string())
    return pa.Table.from_arrays(list(mapped.values()), schema=mapped_schema(spec))


def map_frame(raw: pd.DataFrame, spec: SyncSpec) -> pd.DataFrame:
    """The spec's columns (in order, typed: string -> str/None objects, integer -> Int64,
    timestamp -> datetime64[us, UTC], boolean -> boolean), then ``source_modified_at`` and
    ``row_hash``, then the :func:`invalid_column` of each :func:`judged_columns` column."""
    table = map_table(raw, spec)
    return pd.DataFrame(
        {name: _to_pandas(table.column(name).combine_chunks()) for name in table.column_names}
    )


def _to_pandas(values: pa.Array) -> pd.Series:
    if pa.types.is_string(values.type):
        return pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)
    if pa.types.is_timestamp(values.type):
        return pd.Series(values.to_pandas(), dtype="datetime64[us, UTC]")
    return pd.Series(values.to_pandas(types_mapper=_PANDAS_TYPES.get))
