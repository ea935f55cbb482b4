"""The seeded data: deterministic, dirty in the documented ways, and fixable."""

from __future__ import annotations

from collections import Counter

import phonenumbers
import pycountry
import pytest
from email_validator import EmailNotValidError, validate_email

from conduit.standin.data import DEFAULT_ANCHOR_MS, LIFECYCLE_STAGES, TWO_YEARS_MS, generate, iter_records

N = 4000


@pytest.fixture(scope="module")
def dataset():
    return generate(seed=7, contacts=N, companies=80)


@pytest.fixture(scope="module")
def contacts(dataset):
    return list(iter_records(dataset.contacts))


def _valid_email(text: str) -> bool:
    try:
        validate_email(text.strip().lower(), check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


def _region(country: str | None) -> str:
    return pycountry.countries.lookup(country).alpha_2 if country else "US"


def test_same_seed_gives_identical_data_and_another_seed_does_not(contacts):
    again = list(iter_records(generate(seed=7, contacts=N, companies=80).contacts))
    other = list(iter_records(generate(seed=8, contacts=N, companies=80).contacts))
    assert again == contacts
    assert [r["properties"]["email"] for r in other] != [r["properties"]["email"] for r in contacts]


def test_ids_are_unique_ascending_strings_and_match_hs_object_id(contacts):
    ids = [int(r["id"]) for r in contacts]
    assert ids == sorted(set(ids))
    assert all(r["properties"]["hs_object_id"] == r["id"] for r in contacts)


def test_every_property_is_a_string_or_null(contacts):
    assert all(v is None or isinstance(v, str) for r in contacts for v in r["properties"].values())


def test_every_contact_has_a_name(contacts):
    assert all(r["properties"]["firstname"].strip() and r["properties"]["lastname"].strip() for r in contacts)
    assert any(r["properties"]["firstname"] != r["properties"]["firstname"].strip() for r in contacts)


def test_emails_are_dirty_but_valid_after_trim_and_lower_and_unique(contacts):
    emails = [r["properties"]["email"] for r in contacts]
    assert all(_valid_email(e) for e in emails)
    assert any(e != e.strip() for e in emails)
    assert any(e.strip() != e.strip().lower() for e in emails)
    assert len({e.strip().lower() for e in emails}) == N


def test_bad_emails_option_breaks_exactly_that_many(dataset):
    records = list(iter_records(generate(seed=7, contacts=N, companies=80, bad_emails=5).contacts))
    invalid = [r for r in records if not _valid_email(r["properties"]["email"])]
    assert len(invalid) == 5
    # everything else is as without the option
    clean = list(iter_records(dataset.contacts))
    bad_ids = {r["id"] for r in invalid}
    assert [r for r in records if r["id"] not in bad_ids] == [r for r in clean if r["id"] not in bad_ids]


def test_countries_resolve_in_several_spellings_with_blanks(contacts):
    countries = [r["properties"]["country"] for r in contacts]
    spelled = {c for c in countries if c}
    assert all(pycountry.countries.lookup(c) for c in spelled)
    assert {"Germany", "DE", "DEU", "united states"} <= spelled
    assert None in countries and "" in countries


def test_phones_are_odd_formats_that_parse_as_valid_numbers_for_the_contacts_country(contacts):
    phones = [(r["properties"]["phone"], r["properties"]["country"]) for r in contacts]
    present = [(p, c) for p, c in phones if p]
    invalid = [(p, c) for p, c in present
               if not phonenumbers.is_valid_number(phonenumbers.parse(p, _region(c)))]
    assert invalid == []
    texts = [p for p, _ in present]
    assert any(p.startswith("00") for p in texts)
    assert any(p.startswith("(") for p in texts)
    assert any(" x" in p or "ext." in p for p in texts)
    assert any(p.count(".") == 2 and p[0].isdigit() for p in texts)  # 415.555.0199
    assert any(p is None for p, _ in phones) and any(p == "" for p, _ in phones)


def test_lifecycle_stages_are_hubspot_stages_in_mixed_case(contacts):
    stages = [r["properties"]["lifecyclestage"] for r in contacts]
    spelled = [s for s in stages if s]
    assert {s.strip().lower() for s in spelled} == set(LIFECYCLE_STAGES)
    assert any(s != s.lower() for s in spelled)
    assert None in stages and "" in stages


def test_companies_link_contacts_and_some_are_missing(dataset, contacts):
    company_ids = {str(i) for i in dataset.companies.ids}
    linked = [r["properties"]["associatedcompanyid"] for r in contacts]
    assert {c for c in linked if c} <= company_ids
    assert any(r["properties"]["company"] in (None, "") for r in contacts)


def test_timestamps_are_ordered_within_two_years_and_have_big_ties(dataset):
    table = dataset.contacts
    created, modified = list(table.created_ms), list(table.modified_ms)
    assert all(DEFAULT_ANCHOR_MS - TWO_YEARS_MS <= c <= m <= DEFAULT_ANCHOR_MS for c, m in zip(created, modified, strict=True))
    ties = Counter(modified)
    assert max(ties.values()) > 10  # the bulk import: N // 40 records in one millisecond
    assert sum(1 for count in ties.values() if count > 1) > 10  # and many small bursts


def test_iso_timestamps_have_milliseconds_and_z(contacts):
    stamp = contacts[0]["properties"]["createdate"]
    assert len(stamp) == 24 and stamp.endswith("Z") and stamp[19] == "."


def test_generate_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="bad_emails"):
        generate(seed=1, contacts=3, companies=1, bad_emails=4)


def test_iso_ms_prints_every_millisecond_as_strftime_does():
    import random
    import time

    from conduit.standin.data import iso_ms

    rng = random.Random(5)
    stamps = [rng.randrange(-10**13, 4 * 10**12) for _ in range(20_000)]
    stamps += [0, -1, 1, 999, 1000, 86_399_999, 86_400_000, -86_400_000, DEFAULT_ANCHOR_MS, DEFAULT_ANCHOR_MS - 1,
               253_402_300_799_999]
    for ms in stamps:
        assert iso_ms(ms) == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
    assert iso_ms(1_704_164_645_678) == "2024-01-02T03:04:05.678Z"


# --- junk contact details (reset(junk_phones=..., unknown_countries=...)) -------------------------


def test_junk_phones_and_unknown_countries_spoil_only_those_shares_and_never_normalise():
    import pyarrow as pa

    from conduit.standin.data import COUNTRIES, JUNK_PHONES, UNKNOWN_COUNTRIES
    from conduit.transforms.columns import countries_to_iso2, invalid_countries
    from conduit.transforms.phones import invalid_results, phones_to_e164

    clean = generate(seed=3, contacts=1000, companies=20)
    dirty = generate(seed=3, contacts=1000, companies=20, junk_phones=0.1, unknown_countries=0.03)
    changed = {name: [i for i, (a, b) in enumerate(zip(clean.contacts.columns[name], dirty.contacts.columns[name],
                                                         strict=True)) if a != b]
               for name in clean.contacts.columns}
    assert len(changed["phone"]) == 100 and len(changed["country"]) == 30
    assert {n for n, rows in changed.items() if rows} == {"phone", "country"}  # all else as in the clean set
    assert {dirty.contacts.columns["phone"][i] for i in changed["phone"]} <= set(JUNK_PHONES)
    # junk in every region the data uses (and the default): the transforms never make a value of it
    for region in [c[0] for c in COUNTRIES] + ["US"]:
        results = phones_to_e164(pa.array(JUNK_PHONES), pa.array([region] * len(JUNK_PHONES)))
        assert invalid_results(results).all(), region
    assert invalid_countries(countries_to_iso2(pa.array(UNKNOWN_COUNTRIES))).all()
    assert generate(seed=3, contacts=10, companies=2, junk_phones=0.0).contacts.columns == \
        generate(seed=3, contacts=10, companies=2).contacts.columns


@pytest.mark.parametrize("option", ["junk_phones", "unknown_countries"])
def test_junk_shares_must_be_shares(option):
    with pytest.raises(ValueError, match=f"{option} \\(1.5\\) must be a share between 0 and 1"):
        generate(seed=1, contacts=10, companies=2, **{option: 1.5})


def test_the_standin_resets_with_junk_and_keeps_it_for_later_resets():
    from conduit.standin.app import Standin, StandinConfig
    from conduit.standin.data import JUNK_PHONES

    standin = Standin(StandinConfig(contacts=200, companies=5))
    standin.reset(junk_phones=0.5)
    phones = standin.stores["contacts"].table.columns["phone"]
    assert sum(p in JUNK_PHONES for p in phones) >= 100
    standin.reset(bad_emails=1)
    assert standin.config.junk_phones == 0.5
