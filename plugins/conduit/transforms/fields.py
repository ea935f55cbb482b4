"""Normalising single values with the well-kept libraries.

Transforms normalise, the quality gate judges: nothing here raises on bad data. A value that
cannot be normalised comes back as its best-effort form (trimmed; e-mail lower-cased) so the
gate's expectations catch it. Blank text becomes ``None``.

The results are cached: the mapping engine calls these for the distinct values its vectorised
fast paths do not cover, and the same values recur across batches.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import email_validator
import pandas as pd
import phonenumbers
import pycountry

_CACHE_SIZE = 1 << 16

# What pycountry's lookup misses but CRM users type.
_COUNTRY_ALIASES = {
    "uk": "GB",
    "britain": "GB",
    "great britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "usa": "US",
    "america": "US",
    "united states of america": "US",
    "deutschland": "DE",
    "holland": "NL",
    "the netherlands": "NL",
    "russia": "RU",
    "turkey": "TR",
    "south korea": "KR",
    "korea": "KR",
    "north korea": "KP",
    "ivory coast": "CI",
    "czech republic": "CZ",
    "vatican": "VA",
    "macedonia": "MK",
    "swaziland": "SZ",
}

EPOCH_MS = re.compile(r"-?[0-9]{1,16}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def clean_text(value: str | None) -> str | None:
    """Trimmed text, or None for None and blank text."""
    if value is None:
        return None
    text = value.strip()
    return text or None


@lru_cache(maxsize=_CACHE_SIZE)
def normalize_email(value: str | None) -> str | None:
    """Trim and lower-case; a valid address in email-validator's normalised form."""
    text = clean_text(value)
    if text is None:
        return None
    try:
        return email_validator.validate_email(text, check_deliverability=False).normalized.lower()
    except email_validator.EmailNotValidError:
        return text.lower()


@lru_cache(maxsize=_CACHE_SIZE)
def is_valid_email(value: str | None) -> bool:
    text = clean_text(value)
    if text is None:
        return False
    try:
        email_validator.validate_email(text, check_deliverability=False)
    except email_validator.EmailNotValidError:
        return False
    return True


@lru_cache(maxsize=_CACHE_SIZE)
def country_to_iso2(value: str | None) -> str | None:
    """A country name, alpha-2 or alpha-3 code as ISO-3166 alpha-2; unknown text kept trimmed."""
    text = clean_text(value)
    if text is None:
        return None
    key = " ".join(text.replace(".", "").split())
    try:
        return pycountry.countries.lookup(key).alpha_2
    except LookupError:
        return _COUNTRY_ALIASES.get(key.lower(), text)


@lru_cache(maxsize=1)
def iso2_codes() -> tuple[str, ...]:
    """Every ISO-3166 alpha-2 code, as :func:`country_to_iso2` returns them."""
    return tuple(sorted(country.alpha_2 for country in pycountry.countries))


@lru_cache(maxsize=1024)
def phone_region(country: str | None, default_region: str) -> str:
    """The phonenumbers region for a country given in any form, else the default region."""
    code = country_to_iso2(country)
    return code if code in phonenumbers.SUPPORTED_REGIONS else default_region.upper()


@lru_cache(maxsize=_CACHE_SIZE)
def phone_to_e164(value: str | None, region: str) -> str | None:
    """A valid number as E.164 (any extension dropped); anything else kept trimmed."""
    text = clean_text(value)
    if text is None:
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return text
    if not phonenumbers.is_valid_number(number):
        return text
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_timestamp(value: str | None) -> datetime | None:
    """ISO-8601 (``Z``, an offset, or none meaning UTC) or epoch-milliseconds text as UTC."""
    text = clean_text(value)
    if text is None:
        return None
    if EPOCH_MS.fullmatch(text):
        return _EPOCH + timedelta(milliseconds=int(text))
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    return None if pd.isna(parsed) else parsed.to_pydatetime()
