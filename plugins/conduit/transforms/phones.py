"""Phone numbers to E.164 for a whole column, fast.

``phonenumbers`` costs ~40 µs a number and phone numbers are unique per record, so a million
rows would take most of a minute. The fast path here follows phonenumbers' own ``parse`` and
``is_valid_number`` steps, with its own per-region metadata, for the shapes CRM data mostly
has: ``+<country code> ...``, ``<international prefix> ...`` and national numbers written with
digits, spaces and ``( ) . - /``, optionally with an ``x12``/``ext. 12``/``#12``/``;ext=12``
extension. It works on all rows at once (numbers as digit matrices, metadata patterns as
automata, see ``digit_automata``). Where a step is not covered (letters, ``tel:`` URIs,
national-prefix rewrite rules, regions whose patterns the automata do not read, ...) the row
goes to ``fields.phone_to_e164``. Every row gets exactly the library's answer;
``tests/unit/transforms/test_phones.py`` compares both on many dirty numbers.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import PhoneMetadata

from conduit.transforms.digit_automata import (
    AutomatonSet,
    UnsupportedPattern,
    cached_automaton,
    digit_matrix,
    digit_strings,
    drop_leading,
    text_bytes,
)
from conduit.transforms.fields import phone_to_e164

_SHAPE_CHARS = b"0123456789 ().-/"
# A trailing extension in forms the library's extension pattern reads the same way.
_EXTENSION_MARK = r"[xX#;]|[eE][xX][tT]"
_EXTENSION = r"^(?P<number>\+?[0-9 ().\-/]*?[0-9)])[ \t]*(?:;ext=|(?i:ext\.?|x|#)[ \t]*)(?P<ext>[0-9]{1,6})$"
_MIN_NSN, _MAX_NSN = 2, 17  # the library's limits for a national significant number
_MIN_AFTER_IDD = 3  # the library rejects 2 or fewer digits after "+" or an international prefix
_LONGEST = 40  # length statuses are tabulated up to here; anything longer is "too long" anyway
_IS_COUNTRY_CODE = np.zeros(1000, dtype=bool)
_IS_COUNTRY_CODE[list(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)] = True
# _test_number_length's answers
_POSSIBLE, _LOCAL_ONLY, _TOO_SHORT, _TOO_LONG, _INVALID_LENGTH = range(5)
_LEADING_DIGITS_BIT = 62  # in a region's automaton: the number starts with its leading digits


def _non_capturing(pattern: str) -> str:
    """Arrow's extract_regex rejects unnamed groups; the fast path never reads them."""
    return re.sub(r"\((?!\?)", "(?:", pattern)


class _Region:
    """One region's metadata, as the fast path uses it."""

    def __init__(self, metadata: PhoneMetadata):
        general = metadata.general_desc
        descs = [
            metadata.premium_rate,
            metadata.toll_free,
            metadata.shared_cost,
            metadata.voip,
            metadata.personal_number,
            metadata.pager,
            metadata.uan,
            metadata.voicemail,
            metadata.fixed_line,
        ]
        if not metadata.same_mobile_and_fixed_line_pattern:  # else the library never checks mobile alone
            descs.append(metadata.mobile)
        types = [d for d in descs if d is not None and d.national_number_pattern]
        self.country_code = metadata.country_code
        self.idd = _non_capturing(metadata.international_prefix) if metadata.international_prefix else None
        npfp = metadata.national_prefix_for_parsing
        self.national_prefix = _non_capturing(npfp) if npfp else None
        self.prefix_rewritten = bool(metadata.national_prefix_transform_rule)
        # bit 0: the general pattern; bit i: number type i; _LEADING_DIGITS_BIT: re.match(leading_digits)
        patterns = dict(
            enumerate([general.national_number_pattern] + [d.national_number_pattern for d in types])
        )
        if metadata.leading_digits:
            patterns[_LEADING_DIGITS_BIT] = rf"(?:{metadata.leading_digits})\d*"
        self.has_leading_digits = bool(metadata.leading_digits)
        self.automaton = cached_automaton(patterns)
        self.types_by_length = np.zeros(_LONGEST + 1, dtype=np.int64)  # bits of the types allowing a length
        for bit, desc in enumerate(types, start=1):
            for length in range(_LONGEST + 1):
                if not desc.possible_length or length in desc.possible_length:
                    self.types_by_length[length] |= 1 << bit
        lengths = np.arange(_LONGEST + 1)
        possible = sorted(general.possible_length)
        self.length_status = np.select(
            [
                np.isin(lengths, general.possible_length_local_only),
                np.isin(lengths, possible),
                lengths < possible[0],
                lengths > possible[-1],
            ],
            [_LOCAL_ONLY, _POSSIBLE, _TOO_SHORT, _TOO_LONG],
            _INVALID_LENGTH,
        )
        self.possible_lengths = np.isin(lengths, possible)


class _Rules:
    """Every region the fast path has met, as tables indexed by region number."""

    def __init__(self) -> None:
        self.number: dict[str, int] = {}
        self.regions: list[_Region] = []
        self._build()

    def _build(self) -> None:
        regions = self.regions
        self.automata = AutomatonSet([r.automaton for r in regions])
        self.types_by_length = np.array([r.types_by_length for r in regions]).reshape(-1, _LONGEST + 1)
        self.length_status = np.array([r.length_status for r in regions]).reshape(-1, _LONGEST + 1)
        self.possible_lengths = np.array([r.possible_lengths for r in regions]).reshape(-1, _LONGEST + 1)
        self.country_code = np.array([r.country_code for r in regions], dtype=np.int64)
        self.has_leading_digits = np.array([r.has_leading_digits for r in regions], dtype=bool)
        self.idd = np.array([r.idd for r in regions], dtype=object)
        self.national_prefix = np.array([r.national_prefix for r in regions], dtype=object)
        self.prefix_rewritten = np.array([r.prefix_rewritten for r in regions], dtype=bool)

    def region_number(self, code: str | None) -> int:
        """The region's number in the tables, or -1 where the fast path cannot follow it."""
        if code not in self.number:
            metadata = PhoneMetadata.metadata_for_region(code, None) if code else None
            try:
                region = (
                    _Region(metadata)
                    if metadata is not None and metadata.general_desc.possible_length
                    else None
                )
            except UnsupportedPattern:
                region = None
            if region is None:
                self.number[code] = -1
            else:
                self.number[code] = len(self.regions)
                self.regions.append(region)
                self._build()
        return self.number[code]

    @cache  # noqa: B019 - one instance for the process
    def claimants(self, country_code: int) -> tuple[int, ...] | None:
        """The regions that may claim numbers of a country code, in the library's order; None
        when one of them is beyond the fast path."""
        numbers = tuple(
            self.region_number(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[country_code]
        )
        return None if -1 in numbers else numbers

    def match(self, digits: np.ndarray, lengths: np.ndarray, region: np.ndarray) -> np.ndarray:
        return self.automata.match(digits, lengths, region)

    def lengths(self, table: np.ndarray, region: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return table[region, np.minimum(lengths, _LONGEST)]


_RULES = _Rules()
_RESULTS: dict[str, str | None] = {}  # "region|number" -> result, across batches
_MAX_REMEMBERED = 1 << 17
_UNSEEN = object()


def _mask(array: pa.Array) -> np.ndarray:
    if array.null_count:
        array = pc.fill_null(array, False)
    return np.asarray(array, dtype=bool)


def _match_prefixes(digits, lengths, region, patterns) -> tuple[np.ndarray, np.ndarray]:
    """Per row, whether ``re.match(patterns[region], number)`` matches and how many digits it
    takes (rows whose region has no pattern do not match)."""
    matched = np.zeros(len(lengths), dtype=bool)
    taken = np.zeros(len(lengths), dtype=np.int64)
    present = np.unique(region)
    for pattern in {patterns[r] for r in present} - {None}:
        rows = np.flatnonzero(np.isin(region, [r for r in present if patterns[r] == pattern]))
        if pattern.isdigit():  # most prefixes are plain digits ("0", "00", "011")
            literal = np.array([int(c) for c in pattern])
            width = len(literal)
            hit = np.all(digits[rows, :width] == literal, axis=1) if digits.shape[1] >= width else False
            matched[rows] = hit & (lengths[rows] >= width)
            taken[rows] = width
        else:
            parts = pc.extract_regex(digit_strings(digits[rows], lengths[rows]), f"^(?P<prefix>{pattern})")
            matched[rows] = _mask(parts.is_valid())
            taken[rows] = np.asarray(pc.fill_null(pc.utf8_length(parts.field("prefix")), 0))
    return matched, taken


def _viable(digits: np.ndarray, lengths: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The general pattern matches (``_match_national_number``)."""
    return (_RULES.match(digits, lengths, region) & 1).astype(bool)


def _strip_national_prefix(digits, lengths, region, check_length=True):
    """``_maybe_strip_national_prefix_carrier_code`` (and, in ``parse``, the length check on
    its result): the digits kept, their lengths, and whether the fast path knows them (a
    rewrite rule is the library's business)."""
    prefixed, taken = _match_prefixes(digits, lengths, region, _RULES.national_prefix)
    known = ~(prefixed & _RULES.prefix_rewritten[region])
    rows = np.flatnonzero(prefixed & known)
    stripped, stripped_lengths = drop_leading(digits[rows], lengths[rows], taken[rows])
    # the prefix goes unless that turns a viable number into a non-viable one
    strip = _viable(stripped, stripped_lengths, region[rows])
    kept = np.flatnonzero(~strip)
    strip[kept] = ~_viable(digits[rows[kept]], lengths[rows[kept]], region[rows[kept]])
    if check_length:  # and, in parse, only if what remains is of a possible length or too long
        status = _RULES.lengths(_RULES.length_status, region[rows], stripped_lengths)
        strip &= np.isin(status, [_POSSIBLE, _TOO_LONG])
    digits, lengths = digits.copy(), lengths.copy()
    digits[rows[strip]] = stripped[strip]
    lengths[rows[strip]] = stripped_lengths[strip]
    return digits, lengths, known


def _leading_value(digits: np.ndarray, count: int) -> np.ndarray:
    value = np.zeros(len(digits), dtype=np.int64)
    for column in range(count):
        value = value * 10 + digits[:, column]
    return value


def _country_codes(digits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The country code each number starts with, or 0: like the library, the first of its 1, 2
    and 3 leading digits that is a code (codes never start with 0)."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    for count in (3, 2, 1):
        value = _leading_value(digits, count)
        codes = np.where((lengths >= count) & _IS_COUNTRY_CODE[np.minimum(value, 999)], value, codes)
    return np.where(digits[:, 0] == 0, 0, codes) if len(codes) else codes


def _is_valid(codes: np.ndarray, digits: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``is_valid_number`` per row, and whether the fast path could tell.

    Like ``region_code_for_number``, the regions sharing a country code claim a number in
    order: by ``leading_digits`` where the region has them, else by being a known type there;
    a code with a single region claims every number."""
    valid = np.zeros(len(codes), dtype=bool)
    decided = np.zeros(len(codes), dtype=bool)
    first = np.full(len(codes), -1)
    claimants_of = {}
    for code in np.unique(codes):
        claimants_of[code] = _RULES.claimants(int(code))
        if claimants_of[code] is not None:
            first[codes == code] = claimants_of[code][0]
    # the first claimant settles most numbers (US for +1, GB for +44)
    rows = np.flatnonzero(first >= 0)
    known, leading = _known_type(digits[rows], lengths[rows], first[rows])
    alone = np.isin(
        codes[rows], [c for c, claimants in claimants_of.items() if claimants and len(claimants) == 1]
    )
    claimed = alone | np.where(_RULES.has_leading_digits[first[rows]], leading, known)
    valid[rows[claimed]] = known[claimed]
    decided[rows] = claimed
    for code, claimants in claimants_of.items():
        rows = np.flatnonzero((codes == code) & (first >= 0) & ~decided)
        if not len(rows):
            continue
        # the other claimants in order, every row against each at once: (row, claimant) pairs
        others = np.array(claimants[1:])
        pairs = np.repeat(rows, len(others))
        known, leading = _known_type(digits[pairs], lengths[pairs], np.tile(others, len(rows)))
        known, leading = known.reshape(len(rows), -1), leading.reshape(len(rows), -1)
        claims = np.where(_RULES.has_leading_digits[others], leading, known)
        chosen = claims.argmax(axis=1)
        valid[rows] = claims.any(axis=1) & known[np.arange(len(rows)), chosen]
        decided[rows] = True
    return valid, decided


def _known_type(digits, lengths, region) -> tuple[np.ndarray, np.ndarray]:
    """``_number_type_helper(number, region) != UNKNOWN`` (of a possible length and matching
    the general pattern, and matching some type's lengths and pattern); and whether the number
    starts with the region's leading digits."""
    bits = _RULES.match(digits, lengths, region)
    known = (
        _RULES.lengths(_RULES.possible_lengths, region, lengths)
        & (bits & 1).astype(bool)
        & ((bits & _RULES.lengths(_RULES.types_by_length, region, lengths)) != 0)
    )
    return known, (bits >> _LEADING_DIGITS_BIT & 1).astype(bool)


def _simple_shape(texts: pa.Array) -> np.ndarray:
    """Per text: only digits, spaces and ``( ) . - /``, after an optional leading "+"."""
    data, row = text_bytes(texts)
    allowed = np.isin(data, np.frombuffer(_SHAPE_CHARS, dtype=np.uint8))
    first = np.ones(len(data), dtype=bool)
    first[1:] = row[1:] != row[:-1]
    allowed |= first & (data == ord("+"))
    lengths = np.bincount(row, minlength=len(texts))
    return (np.bincount(row[~allowed], minlength=len(texts)) == 0) & (lengths > 0) & (lengths <= _LONGEST)


def _code_digits(codes: np.ndarray) -> np.ndarray:
    return np.where(codes >= 100, 3, np.where(codes >= 10, 2, 1))


def _international(digits, lengths):
    """Numbers after "+" or an international prefix, as ``parse`` reads them: country codes,
    national significant numbers (digits, lengths), and whether the fast path knows them."""
    codes = np.where(lengths >= _MIN_AFTER_IDD, _country_codes(digits, lengths), 0)
    region = np.full(len(codes), -1)
    for code in np.unique(codes[codes > 0]):
        region[codes == code] = _RULES.region_number(phonenumbers.region_code_for_country_code(int(code)))
    known = region >= 0
    digits, lengths = drop_leading(digits, lengths, np.where(known, _code_digits(codes), 0))
    rows = np.flatnonzero(known)
    nsn, nsn_lengths, known[rows] = _strip_national_prefix(digits[rows], lengths[rows], region[rows])
    digits[rows], lengths[rows] = nsn, nsn_lengths
    return codes, digits, lengths, known


def _national(digits, lengths, region):
    """Numbers dialled within ``region`` (no international prefix), as ``parse`` reads them."""
    codes = _RULES.country_code[region]
    code_digits = _code_digits(codes)
    nsn, nsn_lengths, known = _strip_national_prefix(digits, lengths, region)
    # a number starting with the region's own country code loses it when that turns a
    # non-viable number into a viable one, or when the whole is too long
    with_code = lengths >= code_digits
    for count in (1, 2, 3):
        with_code &= (code_digits != count) | (_leading_value(digits, count) == codes)
    rows = np.flatnonzero(with_code)
    rest, rest_lengths = drop_leading(digits[rows], lengths[rows], code_digits[rows])
    rest, rest_lengths, rest_known = _strip_national_prefix(
        rest, rest_lengths, region[rows], check_length=False
    )
    dropped = (
        ~_viable(digits[rows], lengths[rows], region[rows]) & _viable(rest, rest_lengths, region[rows])
    ) | (_RULES.lengths(_RULES.length_status, region[rows], lengths[rows]) == _TOO_LONG)
    rows, rest, rest_lengths, rest_known = (
        rows[dropped],
        rest[dropped],
        rest_lengths[dropped],
        rest_known[dropped],
    )
    rest, rest_lengths, again_known = _strip_national_prefix(rest, rest_lengths, region[rows])
    nsn[rows], nsn_lengths[rows], known[rows] = rest, rest_lengths, rest_known & again_known
    return codes, nsn, nsn_lengths, known


def _decide(texts: pa.Array, regions: pa.Array) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """The rows the fast path decides, which of them are valid, and their E.164 text."""
    n = len(texts)
    shaped = _simple_shape(texts)
    with_plus = shaped & _mask(pc.starts_with(texts, "+"))
    encoded = pc.dictionary_encode(regions)
    numbers = np.array([_RULES.region_number(c) for c in encoded.dictionary.to_pylist()] + [-1])
    home = numbers[np.asarray(pc.fill_null(encoded.indices, len(numbers) - 1))]
    digits, lengths = digit_matrix(pc.if_else(pa.array(shaped), texts, ""), min_width=3)

    codes = np.zeros(n, dtype=np.int64)
    nsn, nsn_lengths = np.full_like(digits, 10), np.zeros(n, dtype=lengths.dtype)
    known = np.zeros(n, dtype=bool)

    dialled = np.flatnonzero(shaped & ~with_plus & (home >= 0))
    idd, taken = _match_prefixes(digits[dialled], lengths[dialled], home[dialled], _RULES.idd)
    # the library does not take the prefix as an international one when a 0 follows it
    abroad = idd & (digits[dialled, np.minimum(taken, digits.shape[1] - 1)] != 0)
    international = np.concatenate([np.flatnonzero(with_plus), dialled[abroad]])
    skip = np.concatenate([np.zeros(with_plus.sum(), dtype=np.int64), taken[abroad]])
    body, body_lengths = drop_leading(digits[international], lengths[international], skip)
    codes[international], nsn[international], nsn_lengths[international], known[international] = (
        _international(body, body_lengths)
    )
    national = dialled[~abroad]
    codes[national], nsn[national], nsn_lengths[national], known[national] = _national(
        digits[national], lengths[national], home[national]
    )

    rows = np.flatnonzero(known & (nsn_lengths >= _MIN_NSN) & (nsn_lengths <= _MAX_NSN))
    valid, decided = _is_valid(codes[rows], nsn[rows], nsn_lengths[rows])
    rows, valid = rows[decided], valid[decided]
    valid_rows = rows[valid]
    e164 = pc.binary_join_element_wise(
        "+",
        pa.array(codes[valid_rows]).cast(pa.string()),
        digit_strings(nsn[valid_rows], nsn_lengths[valid_rows]),
        "",
    )
    return rows, valid, e164


def _assemble(size: int, pieces: list[tuple[np.ndarray, pa.Array]]) -> pa.Array:
    """One array of ``size`` rows from (rows, values) pieces; rows no piece covers are null."""
    position = np.full(size, -1, dtype=np.int64)
    offset = 0
    for rows, _ in pieces:
        position[rows] = np.arange(offset, offset + len(rows))
        offset += len(rows)
    values = pa.concat_arrays([v for _, v in pieces] + [pa.array([], pa.string())])
    return values.take(pa.array(position, mask=position < 0))


def phones_to_e164(values: pa.Array, regions: pa.Array) -> pa.Array:
    """``fields.phone_to_e164`` for every row: ``values`` are phone texts (or null), ``regions``
    each row's phonenumbers region code. Each distinct (region, number) is worked out once; in
    batches of mostly repeated numbers the results are also remembered across batches."""
    pairs = pc.dictionary_encode(pc.binary_join_element_wise(regions, pc.fill_null(values, ""), "|"))
    if len(pairs.dictionary) > len(values) // 2:  # mostly unique: remembering costs more than it saves
        return _distinct_phones(pairs.dictionary).take(pairs.indices)
    keys = pairs.dictionary.to_pylist()
    known = [_RESULTS.get(k, _UNSEEN) for k in keys]
    new = [i for i, result in enumerate(known) if result is _UNSEEN]
    if new:
        results = _distinct_phones(pairs.dictionary.take(pa.array(new, pa.int64()))).to_pylist()
        if len(_RESULTS) + len(new) > _MAX_REMEMBERED:
            _RESULTS.clear()
        for i, result in zip(new, results, strict=True):
            known[i] = _RESULTS[keys[i]] = result
    return pa.array(known, pa.string()).take(pairs.indices)


def _distinct_phones(pairs: pa.Array) -> pa.Array:
    """Results for "region|number" texts."""
    split = pc.split_pattern(pairs, "|", max_splits=1)
    return _phones_to_e164(pc.list_element(split, 1), pc.list_element(split, 0))


def _phones_to_e164(values: pa.Array, regions: pa.Array) -> pa.Array:
    values = pc.utf8_trim_whitespace(values)
    texts = pc.fill_null(values, "")
    maybe_extension = np.flatnonzero(_mask(pc.match_substring_regex(values, _EXTENSION_MARK)))
    if len(maybe_extension):
        extension = pc.extract_regex(texts.take(pa.array(maybe_extension)), _EXTENSION)
        number = pc.fill_null(extension.field("number"), "")
        # the library takes an extension off only when what precedes it is viable (3+ digits)
        split = _mask(extension.is_valid()) & (digit_matrix(number)[1] >= 3)
        position = np.arange(len(texts))
        position[maybe_extension[split]] = len(texts) + np.arange(split.sum())
        texts = pa.concat_arrays([texts, number.filter(pa.array(split))]).take(pa.array(position))
    rows, valid, e164 = _decide(texts, regions)
    invalid_rows = rows[~valid]
    rest = _mask(values.is_valid())
    rest[rows] = False
    rest_rows = np.flatnonzero(rest)
    slow = [
        phone_to_e164(v, r)
        for v, r in zip(
            values.take(pa.array(rest_rows)).to_pylist(),
            regions.take(pa.array(rest_rows)).to_pylist(),
            strict=True,
        )
    ]
    return _assemble(
        len(values),
        [
            (rows[valid], e164),
            (invalid_rows, values.take(pa.array(invalid_rows))),
            (rest_rows, pa.array(slow, pa.string())),
        ],
    )


# --- validity of results ------------------------------------------------------------------------

_E164 = r"^\+[1-9][0-9]{1,16}$"


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
    parses as a valid number; that is decided by the fast path, the rest by the library."""
    present = _mask(results.is_valid())
    rows = np.flatnonzero(_mask(pc.fill_null(pc.match_substring_regex(results, _E164), False)))
    valid = np.zeros(len(results), dtype=bool)
    if len(rows):
        texts = results.take(pa.array(rows))
        decided, ok, _ = _decide(texts, pa.array(np.full(len(rows), "US"), pa.string()))
        valid[rows[decided[ok]]] = True
        rest = np.setdiff1d(np.arange(len(rows)), decided)
        checked = [_is_valid_international(t) for t in texts.take(pa.array(rest, pa.int64())).to_pylist()]
        valid[rows[rest[np.array(checked, dtype=bool)]] if len(rest) else []] = True
    return present & ~valid
