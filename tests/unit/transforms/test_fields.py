from datetime import UTC, datetime

import pytest

from conduit.transforms.fields import (
    clean_text,
    country_to_iso2,
    is_valid_email,
    normalize_email,
    parse_timestamp,
    phone_region,
    phone_to_e164,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  John.Doe@Example.COM \t", "john.doe@example.com"),
        ("jane@example.org", "jane@example.org"),
        ("x@xn--bcher-kva.com", "x@bücher.com"),  # IDNA domain in its Unicode form
        ("not an email", "not an email"),  # kept for the gate, lower-cased
        (" Broken@@Example.com ", "broken@@example.com"),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_normalize_email(raw, expected):
    assert normalize_email(raw) == expected


def test_is_valid_email():
    assert is_valid_email(" Jane.Doe@Example.com ")
    assert not is_valid_email("jane@@example.com")
    assert not is_valid_email("jane@localhost")
    assert not is_valid_email(None)


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("(030) 1234567", "DE", "+49301234567"),
        ("+1 415-555-0100", "US", "+14155550100"),
        ("0049 30 1234567", "DE", "+49301234567"),
        ("415.555.0199", "US", "+14155550199"),
        ("+44 20 7946 0958 x12", "DE", "+442079460958"),  # extension dropped
        ("(415) 555-0100 ext. 7", "US", "+14155550100"),
        ("+49 (0)30 1234567", "US", "+49301234567"),
        ("1-415-555-0100", "US", "+14155550100"),
        ("  call me  ", "US", "call me"),  # unparseable: trimmed raw
        ("123", "DE", "123"),  # parseable but not a valid number: trimmed raw
        ("(030) 1234567", "US", "(030) 1234567"),  # a German number read as American is invalid
        ("", "US", None),
        (None, "US", None),
    ],
)
def test_phone_to_e164(raw, region, expected):
    assert phone_to_e164(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("germany", "DE"),
        ("DEU", "DE"),
        ("de", "DE"),
        ("Germany ", "DE"),
        ("Deutschland", "DE"),
        ("United States", "US"),
        ("USA", "US"),
        ("U.S.A.", "US"),
        ("united states", "US"),
        ("UK", "GB"),
        ("United Kingdom", "GB"),
        ("GBR", "GB"),
        ("South Korea", "KR"),
        ("  Atlantis ", "Atlantis"),  # unknown: kept trimmed for the gate
        (" ", None),
        (None, None),
    ],
)
def test_country_to_iso2(raw, expected):
    assert country_to_iso2(raw) == expected


def test_phone_region_reads_any_country_form_and_falls_back():
    assert phone_region("germany", "US") == "DE"
    assert phone_region("DEU", "US") == "DE"
    assert phone_region("Atlantis", "us") == "US"
    assert phone_region(None, "GB") == "GB"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-15T10:30:00.123Z", datetime(2024, 1, 15, 10, 30, 0, 123000, tzinfo=UTC)),
        ("2024-01-15T12:30:00+02:00", datetime(2024, 1, 15, 10, 30, tzinfo=UTC)),
        ("2024-01-15T10:30:00", datetime(2024, 1, 15, 10, 30, tzinfo=UTC)),  # no offset: UTC
        ("2024-01-15", datetime(2024, 1, 15, tzinfo=UTC)),
        ("1705314600123", datetime(2024, 1, 15, 10, 30, 0, 123000, tzinfo=UTC)),  # epoch ms
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_timestamp(raw, expected):
    assert parse_timestamp(raw) == expected


def test_clean_text():
    assert clean_text("  a b ") == "a b"
    assert clean_text(" \t") is None
