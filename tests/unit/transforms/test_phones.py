"""The vectorised E.164 fast path must give exactly the library's answer, row for row."""

import random

import phonenumbers
import pyarrow as pa
import pytest
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


def _fast(values, regions):
    return phones.phones_to_e164(pa.array(values, pa.string()), pa.array(regions, pa.string())).to_pylist()


def _library(values, regions):
    return [
        phone_to_e164.__wrapped__(v, r) for v, r in zip(values, regions, strict=True)
    ]  # uncached, straight


@pytest.fixture(autouse=True)
def _forget_results():
    phones._RESULTS.clear()  # each test exercises the fast path itself, not the cross-batch memory


def test_dirty_formats_match_the_library():
    values, regions = zip(*DIRTY, strict=True)
    assert _fast(list(values), list(regions)) == _library(values, regions)


def test_fast_path_matches_the_library_on_many_generated_numbers():
    rng = random.Random(20240115)
    values, regions = [], []
    for _ in range(4000):
        region = rng.choice(PHONE_REGIONS)
        values.append(phone(rng, region))
        # now and then the contact's country is not the number's
        regions.append(region if rng.random() < 0.85 else rng.choice(PHONE_REGIONS))
    fast = _fast(values, regions)
    mismatches = [
        (v, r, f, s)
        for v, r, f, s in zip(values, regions, fast, _library(values, regions), strict=True)
        if f != s
    ]
    assert mismatches == []


def test_common_shapes_do_not_call_the_library(monkeypatch):
    calls = []
    monkeypatch.setattr(phones, "phone_to_e164", lambda v, r: calls.append(v) or phone_to_e164(v, r))
    values = [
        "(030) 1234567",
        "+1 415-555-0100",
        "0049 30 1234567",
        "415.555.0199",
        "+44 20 7946 0958 x12",
        "020 7946 0958",
        "+49 (0)30 1234567",
        "1-415-555-0100",
        "123",
        "(506) 234-5678",
    ]
    regions = ["DE", "US", "DE", "US", "DE", "GB", "DE", "US", "DE", "CA"]
    assert _fast(values, regions) == _library(values, regions)
    assert calls == []


def test_repeated_values_are_worked_out_once(monkeypatch):
    decided = []
    real = phones._phones_to_e164
    monkeypatch.setattr(phones, "_phones_to_e164", lambda v, r: decided.append(len(v)) or real(v, r))
    assert _fast(["(030) 1234567"] * 3 + [None], ["DE"] * 4) == ["+49301234567"] * 3 + [None]
    second = ["(030) 1234567", "030 7654321", "(030) 1234567", "030 7654321"]
    assert _fast(second, ["DE"] * 4) == ["+49301234567", "+49307654321"] * 2
    assert decided == [2, 1]  # the second batch only works out the number it has not seen
    assert _fast(["030 1111111", "030 2222222"], ["DE"] * 2) == ["+49301111111", "+49302222222"]
    assert decided == [2, 1, 2]


def test_empty_and_all_null_columns():
    assert _fast([], []) == []
    assert _fast([None, None], ["US", "DE"]) == [None, None]


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
