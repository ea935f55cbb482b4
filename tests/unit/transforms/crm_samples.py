"""Realistic, dirty CRM values: what people type into HubSpot (for property tests and timing)."""

from __future__ import annotations

import random

import phonenumbers

PHONE_REGIONS = ["US", "DE", "GB", "FR", "AT", "CH", "NL", "ES", "IT", "CA", "AU", "IN", "BR", "JP"]
COUNTRY_FORMS = {
    "US": ["United States", "USA", "US", "us", "united states", "U.S.A."],
    "DE": ["Germany", "germany", "DE", "de", "DEU", "Deutschland"],
    "GB": ["United Kingdom", "UK", "GB", "GBR", "England"],
    "FR": ["France", "FR", "fra"],
    "AT": ["Austria", "AT"],
    "CH": ["Switzerland", "CH", "che"],
    "NL": ["Netherlands", "NL", "Holland"],
    "ES": ["Spain", "ES"],
    "IT": ["Italy", "IT", "ITA"],
    "CA": ["Canada", "CA"],
    "AU": ["Australia", "AU"],
    "IN": ["India", "IN"],
    "BR": ["Brazil", "BR"],
    "JP": ["Japan", "JP"],
}
FIRST = ["Anna", "jürgen", " Maria ", "JOHN", "li", "Zoë", "Ólafur", "", None]
LAST = ["Schmidt", "o'brien", "Müller ", "SMITH", "van der Berg", None]
FORMATS = [
    phonenumbers.PhoneNumberFormat.E164,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.NATIONAL,
    phonenumbers.PhoneNumberFormat.RFC3966,
]
DOMAINS = [
    "Example.com",
    "gmail.com",
    "sub.Mail.co.uk",
    "xn--bcher-kva.com",
    "bücher.de",
    "localhost",
    "test",
    "a.b",
]


def _example(region: str, rng: random.Random) -> phonenumbers.PhoneNumber:
    kind = rng.choice([phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE])
    number = phonenumbers.example_number_for_type(region, kind) or phonenumbers.example_number(region)
    digits = str(number.national_number)
    keep = max(2, len(digits) - rng.choice([2, 3, 4, 5]))
    tail = "".join(rng.choice("0123456789") for _ in range(len(digits) - keep))
    return phonenumbers.parse("+" + str(number.country_code) + digits[:keep] + tail, None)


def phone(rng: random.Random, region: str) -> str | None:
    """A number of ``region`` in one of the ways people write numbers, sometimes broken."""
    roll = rng.random()
    if roll < 0.03:
        return rng.choice(
            [None, "", "  ", "n/a", "123", "+", "0", "call me", "++49 30 1234567", "+999 123456"]
        )
    number = _example(region, rng)
    text = phonenumbers.format_number(number, rng.choices(FORMATS, weights=[25, 35, 37, 3])[0])
    style = rng.random()
    if style < 0.15:
        text = text.replace(" ", "-")
    elif style < 0.25:
        text = text.replace(" ", ".").replace("-", ".")
    elif style < 0.3:
        text = text.replace(" ", "")
    elif style < 0.35 and text.startswith("+"):
        text = "00" + text[1:]
    elif style < 0.38 and text.startswith("+"):
        text = "011 " + text[1:]
    elif style < 0.41 and text.startswith("+"):
        text = text.replace(" ", " (0)", 1)
    elif style < 0.44:
        text += rng.choice([" x12", " ext. 5", " #7", ";ext=3"])
    elif style < 0.47:
        text = rng.choice(["(", " "]) + text + rng.choice([")", " ", ""])
    elif style < 0.5:
        chars = list(text)
        chars[rng.randrange(len(chars))] = rng.choice("0123456789")
        text = "".join(chars)
    elif style < 0.52:
        text = str(number.country_code) + str(number.national_number)
    return rng.choice(["", " ", "  "]) + text + rng.choice(["", " "])


def email(rng: random.Random, first: str, last: str) -> str | None:
    roll = rng.random()
    if roll < 0.03:
        return rng.choice(
            [None, "", "   ", "not-an-email", "a@b", "john..doe@example.com", '"john"@example.com']
        )
    local = rng.choice(
        [f"{first}.{last}", f"{first[:1]}{last}", f"{first}+crm", f"{last}_{rng.randrange(99)}"]
    )
    text = f"{local}@{rng.choice(DOMAINS)}".replace(" ", "")
    if rng.random() < 0.3:
        text = text.upper() if rng.random() < 0.5 else text.title()
    return rng.choice(["", " ", "\t"]) + text + rng.choice(["", " "])


def country(rng: random.Random, region: str) -> str | None:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice([None, "", "Atlantis", "  germany  ", "Unknown"])
    return rng.choice(COUNTRY_FORMS[region])


def contacts(n: int, seed: int = 7) -> list[dict]:
    """``n`` raw contact rows as the hook delivers them (strings or None)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        region = rng.choice(PHONE_REGIONS)
        first, last = rng.choice(FIRST), rng.choice(LAST)
        created_ms = 1_600_000_000_000 + rng.randrange(10**11)
        rows.append(
            {
                "id": str(100_000 + i),
                "hs_object_id": str(100_000 + i),
                "email": email(rng, (first or "x").strip(), (last or "y").strip()),
                "firstname": first,
                "lastname": last,
                "phone": phone(rng, region),
                "country": country(rng, region),
                "company": rng.choice(["Acme GmbH", " Initech ", "", None, "Globex Corp."]),
                "lifecyclestage": rng.choice(["lead", "Customer", " opportunity ", "", None, "SUBSCRIBER"]),
                "createdate": str(created_ms) if rng.random() < 0.1 else _iso(created_ms),
                "lastmodifieddate": _iso(created_ms + rng.randrange(10**9)),
            }
        )
    return rows


def _iso(ms: int) -> str:
    from datetime import UTC, datetime, timedelta

    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
