"""The column-wise E.164 transform gives exactly the library's answer, row for row."""

import random

import phonenumbers
import pyarrow as pa
from crm_samples import PHONE_REGIONS, phone

import conduit.transforms.phones as phones
from conduit.transforms.fields import phone_to_e164

DIRTY = [
    ("(030) 1234567", "DE"),
    ("+1 415-555-0100", "US"),
    ("0049 30 1234567", "DE"),
    ("415.555.0199", "US"),
    ("+44 20 7946 0958 x12", "GB"),
    ("+44 20 7946 0958 x12", "US"),
    ("020 7946 0958", "GB"),
    ("+49 (0)30 1234567", "DE"),
    ("14155550100", "US"),
    ("1-415-555-0100", "US"),
    ("011 44 20 7946 0958", "US"),
    ("030/1234567", "DE"),
    ("+33 1 42 68 53 00", "FR"),
    ("01 42 68 53 00", "FR"),
    ("+39 06 6982 1234", "IT"),
    ("06 6982 1234", "IT"),
    ("+7 495 123-45-67", "RU"),
    ("+61 2 9374 4000", "AU"),
    ("(506) 234-5678", "CA"),
    ("+1 506 234 5678", "US"),
    ("03-1234-5678", "JP"),
    ("tel:+1-415-555-0100", "US"),
    ("4930 1234567", "DE"),
    ("49301234567", "DE"),
    ("+999 123456", "US"),
    ("++49 30 1234567", "DE"),
    ("0", "DE"),
    ("12", "US"),
    ("+", "US"),
    ("+1", "US"),
    ("00", "DE"),
    ("0049", "DE"),
    ("(", "US"),
    ("abc", "US"),
    ("", "US"),
    ("  ", "US"),
    (None, "US"),
    ("+49 30 1234567 ext. 5", "US"),
    ("030 1234567;ext=3", "DE"),
    ("030 1234567 #7", "DE"),
    ("x12", "US"),
    ("1 x12", "US"),
    ("0180020 1234", "GB"),
    ("+44 (0)20 7946 0958", "GB"),
]


def _column(values, regions):
    return phones.phones_to_e164(pa.array(values, pa.string()), pa.array(regions, pa.string())).to_pylist()


def _library(values, regions):
    return [
        phone_to_e164.__wrapped__(v, r) for v, r in zip(values, regions, strict=True)
    ]  # uncached, straight


def test_dirty_formats_match_the_library():
    values, regions = zip(*DIRTY, strict=True)
    assert _column(list(values), list(regions)) == _library(values, regions)


def test_generated_numbers_match_the_library_row_for_row():
    rng = random.Random(20240115)
    values, regions = [], []
    for _ in range(1000):
        region = rng.choice(PHONE_REGIONS)
        values.append(phone(rng, region))
        # now and then the contact's country is not the number's
        regions.append(region if rng.random() < 0.85 else rng.choice(PHONE_REGIONS))
    assert _column(values, regions) == _library(values, regions)


def test_each_distinct_region_and_number_is_asked_once(monkeypatch):
    calls = []
    monkeypatch.setattr(phones, "phone_to_e164", lambda v, r: calls.append((v, r)) or phone_to_e164(v, r))
    values = ["(030) 1234567", "(030) 1234567", "(030) 1234567", "030 7654321", None, ""]
    regions = ["DE", "DE", "AT", "DE", "DE", "DE"]
    assert _column(values, regions) == ["+49301234567", "+49301234567", "(030) 1234567", "+49307654321",
                                        None, None]
    assert sorted(calls) == [("", "DE"), ("(030) 1234567", "AT"), ("(030) 1234567", "DE"),
                             ("030 7654321", "DE")]


def test_a_separator_inside_the_number_stays_in_the_number():
    values, regions = ["+49 30|1234567", "a|b", "030 1234567"], ["US", "DE", "DE"]
    assert _column(values, regions) == _library(values, regions) == ["+49 30|1234567", "a|b", "+49301234567"]


def test_empty_and_all_null_columns():
    assert _column([], []) == []
    assert _column([None, None], ["US", "DE"]) == [None, None]
    assert phones.invalid_results(pa.array([], pa.string())).tolist() == []
    assert phones.invalid_results(pa.array([None, None], pa.string())).tolist() == [False, False]


def _library_valid(value, region) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(value, region))
    except phonenumbers.NumberParseException:
        return False


def test_invalid_results_are_exactly_the_numbers_the_library_rejects():
    rng = random.Random(7)
    values, regions = [], []
    for _ in range(3000):
        region = rng.choice(PHONE_REGIONS)
        values.append(phone(rng, region))
        regions.append(region if rng.random() < 0.7 else rng.choice(PHONE_REGIONS))
    dirty_values, dirty_regions = zip(*DIRTY, strict=True)
    values += [*dirty_values, "n/a", "+4930123", "+49", "", "12345"]
    regions += [*dirty_regions, "DE", "US", "DE", "US", "AT"]
    invalid = phones.invalid_results(
        phones.phones_to_e164(pa.array(values, pa.string()), pa.array(regions, pa.string())))
    want = [v is not None and v.strip() != "" and not _library_valid(v.strip(), r)
            for v, r in zip(values, regions, strict=True)]
    assert invalid.tolist() == want
    assert any(want) and not all(want)
