"""Seeded, deterministic CRM data: dirty the way real CRM data is dirty, yet fixable.

Records are kept column-wise (one list per property, timestamps and ids in ``array('q')``) so
a million contacts stay at a few hundred MB. The same seed gives byte-identical data: every
draw comes from one ``numpy`` PCG64 generator in a fixed order.
"""

from __future__ import annotations

import time
import unicodedata
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

# Seeded timestamps end here (2026-11-01T00:00:00Z), so they never depend on the wall clock.
DEFAULT_ANCHOR_MS = 1_793_491_200_000
TWO_YEARS_MS = 2 * 365 * 24 * 3600 * 1000

CONTACT_ID_START = 1000
COMPANY_ID_START = 9_000_000

LIFECYCLE_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity",
                    "customer", "evangelist", "other")

# (region, weight, spellings); every spelling resolves with pycountry.countries.lookup.
COUNTRIES = (
    ("US", 34, ("United States", "united states", "US", "USA", "us")),
    ("DE", 20, ("Germany", "germany", "DE", "DEU", "de")),
    ("GB", 10, ("United Kingdom", "united kingdom", "GB", "GBR")),
    ("FR", 7, ("France", "FRANCE", "FR", "FRA")),
    ("NL", 5, ("Netherlands", "NL", "NLD", "netherlands")),
    ("AT", 5, ("Austria", "AT", "AUT")),
    ("CH", 4, ("Switzerland", "CH", "CHE")),
    ("CA", 8, ("Canada", "CA", "CAN", "canada")),
    ("ES", 7, ("Spain", "ES", "ESP", "spain")),
)

FIRST_NAMES = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
    "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen",
    "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Betty", "Mark", "Sandra", "Steven", "Ashley",
    "Paul", "Emily", "Andrew", "Michelle", "Joshua", "Amanda", "Kevin", "Melissa", "Brian", "Stephanie",
    "Lukas", "Anna", "Leon", "Sophie", "Jonas", "Marie", "Felix", "Lena", "Maximilian", "Hannah",
    "Jürgen", "Jörg", "Björn", "Zoë", "Renée", "José", "María", "François", "Hélène", "Søren",
    "Oliver", "Amelia", "Harry", "Isla", "George", "Ava", "Noah", "Mia", "Jack", "Grace",
    "Lucas", "Emma", "Hugo", "Léa", "Louis", "Chloé", "Daan", "Julia", "Sem", "Tess",
    "Pablo", "Lucía", "Alejandro", "Carmen", "Javier", "Elena", "Liam", "Olivia", "Ethan", "Charlotte",
    "Mohammed", "Fatima", "Ali", "Aisha", "Wei", "Mei", "Hiroshi", "Yuki", "Arjun", "Priya",
    "Anne-Marie", "Jean-Luc", "Mary Ann", "Kai", "Nils", "Ida", "Finn", "Greta", "Elias", "Clara",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
    "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Zimmermann",
    "Dubois", "Durand", "Lefèvre", "Moreau", "Laurent", "Bernard", "Petit", "Roux", "Fournier", "Girard",
    "de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Visser", "Smit", "Meijer", "Mulder",
    "O'Brien", "O'Connor", "McDonald", "MacLeod", "Murphy", "Kelly", "Walsh", "Byrne", "Ryan", "Evans",
    "Gruber", "Huber", "Pichler", "Steiner", "Moser", "Keller", "Brunner", "Baumann", "Frei", "Gerber",
    "García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez", "Pérez", "Gómez", "Díaz",
    "Nguyen", "Kim", "Patel", "Singh", "Chen", "Wang", "Tanaka", "Sato", "Khan", "Ali",
    "Tremblay", "Gagnon", "Roy", "Côté", "Bouchard", "Gauthier", "Morin", "Lavoie", "Fortin", "Gagné",
)
COMPANY_WORDS = (
    "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Soylent", "Tyrell",
    "Nordwind", "Alpenblick", "Rheinland", "Hanse", "Bergmann", "Sonnenschein", "Blauwal", "Eichenhof",
    "Atlas", "Zenith", "Pioneer", "Summit", "Harbor", "Cascade", "Evergreen", "Northstar", "Redwood",
    "Lumière", "Étoile", "Sierra", "Costa", "Delta", "Orbit", "Quantum", "Vertex", "Nimbus", "Polar",
)
COMPANY_TRADES = (
    "Logistics", "Logistik", "Software", "Systems", "Consulting", "Foods", "Maschinenbau", "Energy",
    "Analytics", "Textiles", "Pharma", "Robotics", "Media", "Bau", "Handel", "Industries", "Labs",
)
COMPANY_FORMS = ("GmbH", "AG", "Inc.", "LLC", "Ltd", "SA", "B.V.", "SARL", "S.L.", "Corp.", "")
INDUSTRIES = ("COMPUTER_SOFTWARE", "LOGISTICS_AND_SUPPLY_CHAIN", "MACHINERY", "FOOD_PRODUCTION",
              "PHARMACEUTICALS", "RETAIL", "CONSTRUCTION", "RENEWABLES_ENVIRONMENT", None)
CITIES = {
    "US": ("San Francisco", "New York", "Austin", "Chicago"), "DE": ("Berlin", "München", "Hamburg", "Köln"),
    "GB": ("London", "Manchester", "Leeds"), "FR": ("Paris", "Lyon", "Toulouse"), "NL": ("Amsterdam", "Utrecht"),
    "AT": ("Wien", "Graz"), "CH": ("Zürich", "Genève", "Basel"), "CA": ("Toronto", "Montréal", "Vancouver"),
    "ES": ("Madrid", "Barcelona", "Valencia"),
}
FREE_MAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
# What CRM users type where a phone number or a country belongs; none of it is a valid number in
# any region, or a country (tests/unit/standin/test_data.py checks them with the transforms).
JUNK_PHONES = ("n/a", "N/A", "-", "tbd", "000", "123", "call me", "see notes", "+49", "0", "none", "?")
UNKNOWN_COUNTRIES = ("Atlantis", "n/a", "Europe", "EU", "Earth", "unknown", "-", "Narnia", "XX", "intl")

CONTACT_COLUMNS = ("email", "firstname", "lastname", "phone", "company", "country", "lifecyclestage",
                   "associatedcompanyid")
COMPANY_COLUMNS = ("name", "domain", "phone", "city", "country", "industry")

_PHONE_POOL_SIZE = 48
_NANPA = ("US", "CA")


@dataclass
class ObjectTable:
    """One object type's records, column-wise; position ``i`` is the i-th record in id order."""

    object_type: str
    ids: array
    created_ms: array
    modified_ms: array
    columns: dict[str, list[str | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Dataset:
    contacts: ObjectTable
    companies: ObjectTable


_DAYS: dict[int, str] = {}  # "YYYY-MM-DDT" by day since the epoch
_HOURS_MINUTES = [f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440)]
_SECONDS = [f"{s:02d}" for s in range(60)]
_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]


def _day_prefix(day: int) -> str:
    prefix = _DAYS[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86_400))
    return prefix


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as HubSpot prints them: ``2026-01-31T12:00:00.123Z``. Two per record on
    every page, so no strftime: the date part is cached per day, the rest are small-table lookups."""
    day, rest = divmod(ms, 86_400_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return (_DAYS.get(day) or _day_prefix(day)) + _HOURS_MINUTES[minutes] + _SECONDS[seconds] + _MILLIS[millis]


def modified_property(object_type: str) -> str:
    return "lastmodifieddate" if object_type == "contacts" else "hs_lastmodifieddate"


def full_properties(table: ObjectTable, pos: int) -> dict[str, str | None]:
    """Every property of the record at ``pos``, as the API returns them (all strings or null)."""
    props = {name: column[pos] for name, column in table.columns.items()}
    props["hs_object_id"] = str(table.ids[pos])
    props["createdate"] = iso_ms(table.created_ms[pos])
    props[modified_property(table.object_type)] = iso_ms(table.modified_ms[pos])
    return props


def iter_records(table: ObjectTable) -> Iterator[dict]:
    """``{"id", "properties"}`` per record in id order: what a full listing of every property returns."""
    for pos in range(len(table)):
        yield {"id": str(table.ids[pos]), "properties": full_properties(table, pos)}


def generate(seed: int = 1, contacts: int = 1000, companies: int = 50, bad_emails: int = 0,
             anchor_ms: int = DEFAULT_ANCHOR_MS, *, junk_phones: float = 0.0,
             unknown_countries: float = 0.0) -> Dataset:
    """The seeded CRM content; timestamps spread over the two years before ``anchor_ms``.
    ``bad_emails`` contacts get an invalid address; the ``junk_phones`` and ``unknown_countries``
    shares of them a phone or a country that means nothing (see :data:`JUNK_PHONES`,
    :data:`UNKNOWN_COUNTRIES`). All of these are drawn last: everything else stays as in the
    clean data set of the same seed."""
    if contacts < 0 or companies < 0:
        raise ValueError(f"contacts ({contacts}) and companies ({companies}) must be >= 0")
    if not 0 <= bad_emails <= contacts:
        raise ValueError(f"bad_emails ({bad_emails}) must be between 0 and contacts ({contacts})")
    for name, ratio in (("junk_phones", junk_phones), ("unknown_countries", unknown_countries)):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"{name} ({ratio}) must be a share between 0 and 1")
    rng = np.random.default_rng(seed)
    phones = _phone_pools(rng)
    company_table = _companies(rng, companies, phones, anchor_ms)
    contact_table = _contacts(rng, contacts, company_table, phones, bad_emails, anchor_ms)
    _spoil(rng, contact_table.columns["phone"], junk_phones, JUNK_PHONES)
    _spoil(rng, contact_table.columns["country"], unknown_countries, UNKNOWN_COUNTRIES)
    return Dataset(contacts=contact_table, companies=company_table)


def _spoil(rng: np.random.Generator, column: list, share: float, junk: tuple[str, ...]) -> None:
    """Overwrite ``round(share * len(column))`` random values with ``junk`` (no draws for none)."""
    count = round(share * len(column))
    if not count:
        return
    for k, pos in enumerate(rng.choice(len(column), count, replace=False).tolist()):
        column[pos] = junk[k % len(junk)]


# --- phones -------------------------------------------------------------------------------------


def _phone_pools(rng: np.random.Generator) -> dict[str, list[str]]:
    """Per region, phone strings in odd but parseable formats, each checked with ``is_valid_number``
    against that region; ``"*"`` holds numbers valid without a known country (US or ``+``-prefixed)."""
    pools: dict[str, list[str]] = {}
    international: list[str] = []
    for region, _, _ in COUNTRIES:
        pool: list[str] = []
        examples = [phonenumbers.example_number_for_type(region, kind)
                    for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE)]
        attempts = 0
        while len(pool) < _PHONE_POOL_SIZE and attempts < 50 * _PHONE_POOL_SIZE:
            attempts += 1
            example = examples[attempts % 2]
            digits = phonenumbers.national_significant_number(example)
            tail = "".join(str(d) for d in rng.integers(0, 10, 4))
            number = phonenumbers.parse("+" + str(example.country_code) + digits[:-4] + tail)
            if not phonenumbers.is_valid_number(number):
                continue
            for text in _odd_formats(number, region, rng):
                if phonenumbers.is_valid_number(phonenumbers.parse(text, region)):
                    pool.append(text)
                    if text.startswith("+"):
                        international.append(text)
        pools[region] = pool
    pools["*"] = pools["US"] + international
    return pools


def _odd_formats(number: phonenumbers.PhoneNumber, region: str, rng: np.random.Generator) -> list[str]:
    national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
    intl = phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    nsn = phonenumbers.national_significant_number(number)
    formats = [national, intl, e164, f"{intl} x{int(rng.integers(1, 999))}"]
    if region in _NANPA:
        formats += [f"{nsn[:3]}.{nsn[3:6]}.{nsn[6:]}", f"1-{nsn[:3]}-{nsn[3:6]}-{nsn[6:]}",
                    f"{national} ext. {int(rng.integers(1, 99))}"]
    else:
        area, _, rest = national.partition(" ")
        formats += [f"({area}) {rest.replace(' ', '')}", "00" + intl[1:], national.replace(" ", "-"),
                    f"{national.replace(' ', '')} x{int(rng.integers(1, 99))}"]
    return formats


# --- companies ----------------------------------------------------------------------------------


def _timestamps(rng: np.random.Generator, n: int, anchor_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """createdate ascending with the id order (ids are handed out at creation), lastmodifieddate
    between createdate and the anchor, with groups of records sharing one millisecond."""
    created = np.sort(anchor_ms - rng.integers(0, TWO_YEARS_MS, n, dtype=np.int64))
    span = anchor_ms - created
    modified = created + (span * rng.random(n) ** 0.5).astype(np.int64)
    never_modified = rng.random(n) < 0.1
    modified[never_modified] = created[never_modified]
    order = rng.permutation(n)
    start = 0
    # one bulk import (bigger than a search page at any size) and many small workflow bursts
    group_sizes = [min(n // 40, 12_000)] + list(rng.integers(2, 60, n // 200))
    for size in group_sizes:
        members = order[start:start + size]
        start += size
        if len(members) < 2:
            continue
        latest_created = int(created[members].max())
        modified[members] = latest_created + int(rng.integers(0, anchor_ms - latest_created + 1))
    return created, modified


def _to_array(values: np.ndarray) -> array:
    out = array("q")
    out.frombytes(values.astype("<i8").tobytes())
    return out


def _ids(rng: np.random.Generator, n: int, start: int) -> array:
    # gaps, as ids of records deleted long ago leave them
    return _to_array(start + np.cumsum(rng.integers(1, 4, n, dtype=np.int64)))


def _ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _companies(rng: np.random.Generator, n: int, phones: dict[str, list[str]], anchor_ms: int) -> ObjectTable:
    ids = _ids(rng, n, COMPANY_ID_START)
    created, modified = _timestamps(rng, n, anchor_ms)
    regions = [c[0] for c in COUNTRIES]
    weights = np.array([c[1] for c in COUNTRIES], dtype=float)
    region_idx = rng.choice(len(regions), n, p=weights / weights.sum()).tolist()
    word_idx = rng.integers(0, len(COMPANY_WORDS), n).tolist()
    trade_idx = rng.integers(0, len(COMPANY_TRADES), n).tolist()
    form_idx = rng.integers(0, len(COMPANY_FORMS), n).tolist()
    industry_idx = rng.integers(0, len(INDUSTRIES), n).tolist()
    draws = rng.integers(0, 1 << 30, (n, 3)).tolist()
    blanks = rng.random((n, 2)).tolist()
    columns: dict[str, list] = {name: [] for name in COMPANY_COLUMNS}
    for i in range(n):
        region = regions[region_idx[i]]
        word, trade = COMPANY_WORDS[word_idx[i]], COMPANY_TRADES[trade_idx[i]]
        columns["name"].append(" ".join(filter(None, (word, trade, COMPANY_FORMS[form_idx[i]]))))
        columns["domain"].append(f"{_ascii_slug(word)}-{_ascii_slug(trade)}-{i + 1}.example")
        pool = phones[region]
        columns["phone"].append(None if blanks[i][0] < 0.15 else pool[draws[i][0] % len(pool)])
        cities = CITIES[region]
        columns["city"].append(cities[draws[i][1] % len(cities)])
        spellings = COUNTRIES[region_idx[i]][2]
        columns["country"].append(None if blanks[i][1] < 0.05 else spellings[draws[i][2] % len(spellings)])
        columns["industry"].append(INDUSTRIES[industry_idx[i]])
    return ObjectTable("companies", ids, _to_array(created), _to_array(modified), columns)


# --- contacts -----------------------------------------------------------------------------------


def _bad_email(first: str, last: str, kind: int) -> str:
    """An address no trimming or lower-casing can save (``first``/``last``: ASCII name slugs)."""
    local = f"{first}.{last}"
    return (f"{local}@@example.com", f"{local}@example", f"{first} {last}@example.com",
            f"{local}.example.com", f"{local}@exa mple.com")[kind % 5]


def _email(first: str, last: str, number: int, domain: str, style: int) -> str:
    """A valid, unique address in mixed case, sometimes padded (``first``/``last``: ASCII name slugs)."""
    local = (f"{first}.{last}{number}", f"{first[0]}{last}{number}", f"{first}_{last}.{number}",
             f"{last}.{first}{number}")[style % 4]
    case = style // 4 % 4
    address = f"{local}@{domain}"
    if case == 1:  # Jane.Doe42@Example.com
        address = (f"{first.title()}.{last.title()}{number}@{domain.title()}" if style % 4 == 0
                   else address.title())
    elif case == 2:
        address = address.upper()
    if style // 16 % 5 == 0:  # some padded with spaces or a tab
        address = (" ", "  ", "\t", " ", "")[style // 80 % 5] + address + " "
    return address


def _contacts(rng: np.random.Generator, n: int, companies: ObjectTable, phones: dict[str, list[str]],
              bad_emails: int, anchor_ms: int) -> ObjectTable:
    ids = _ids(rng, n, CONTACT_ID_START)
    created, modified = _timestamps(rng, n, anchor_ms)
    pick = _ContactPicker(companies, phones)
    columns: dict[str, list] = {name: [] for name in CONTACT_COLUMNS}
    # drawn chunk by chunk: a million rows of Python ints at once would cost more than the data
    for start in range(0, n, _CHUNK):
        for name, values in pick.chunk(rng, start, min(n, start + _CHUNK)).items():
            columns[name] += values
    # drawn last, so the bad records are otherwise identical to the clean data set of the same seed
    for pos in rng.choice(n, bad_emails, replace=False).tolist() if bad_emails else ():
        columns["email"][pos] = _bad_email(_ascii_slug(columns["firstname"][pos]),
                                           _ascii_slug(columns["lastname"][pos]), pos)
    return ObjectTable("contacts", ids, _to_array(created), _to_array(modified), columns)


_CHUNK = 50_000


class _ContactPicker:
    """Draws contact columns a chunk at a time. Most values are picked from small tables of
    shared strings with numpy fancy indexing (fast, and a million rows share a few hundred
    string objects); only the unique emails are formatted one by one."""

    def __init__(self, companies: ObjectTable, phones: dict[str, list[str]]):
        n_names = len(FIRST_NAMES), len(LAST_NAMES)
        self.first = np.array(FIRST_NAMES + tuple(f" {n} " for n in FIRST_NAMES), dtype=object)
        self.last = np.array(LAST_NAMES + tuple(f"{n}  " for n in LAST_NAMES), dtype=object)
        self.first_slugs = [_ascii_slug(n) for n in FIRST_NAMES]
        self.last_slugs = [_ascii_slug(n) for n in LAST_NAMES]
        self.n_names = n_names
        weights = np.array([c[1] for c in COUNTRIES], dtype=float)
        self.region_p = weights / weights.sum()
        # countries: every spelling of every region, then "" and None
        spellings = [s for c in COUNTRIES for s in c[2]]
        self.countries = np.array(spellings + ["", None], dtype=object)
        self.country_offset = np.cumsum([0] + [len(c[2]) for c in COUNTRIES[:-1]])
        self.country_count = np.array([len(c[2]) for c in COUNTRIES])
        # phones: the pool of each region, then the pool for contacts without a country, then None and ""
        keys = [c[0] for c in COUNTRIES] + ["*"]
        self.phones = np.array([p for k in keys for p in phones[k]] + [None, ""], dtype=object)
        self.phone_offset = np.cumsum([0] + [len(phones[k]) for k in keys[:-1]])
        self.phone_count = np.array([len(phones[k]) for k in keys])
        self.n_companies = len(companies)
        self.company_names = np.array(companies.columns["name"] + [None, ""], dtype=object)
        self.company_ids = np.array([str(i) for i in companies.ids] + [None, None], dtype=object)
        self.company_domains = companies.columns["domain"]
        self.stages = np.array([s for stage in LIFECYCLE_STAGES
                                for s in (stage, stage.upper(), stage.title(), f" {stage}")] + [None, ""],
                               dtype=object)

    def chunk(self, rng: np.random.Generator, start: int, stop: int) -> dict[str, list]:
        n = stop - start
        region = rng.choice(len(COUNTRIES), n, p=self.region_p)
        first_idx = rng.integers(0, self.n_names[0], n)
        last_idx = rng.integers(0, self.n_names[1], n)
        d = rng.integers(0, 1 << 30, (6, n))
        c = rng.random((5, n))
        padded = c[1] > 0.98  # a few names with stray whitespace around them
        country_blank = c[2] < 0.07
        country_idx = np.where(country_blank, len(self.countries) - 2 + d[3] % 2,
                               self.country_offset[region] + d[3] % self.country_count[region])
        phone_key = np.where(country_blank, len(COUNTRIES), region)
        phone_idx = np.where(c[3] < 0.12, len(self.phones) - 2, np.where(
            c[3] < 0.15, len(self.phones) - 1, self.phone_offset[phone_key] + d[4] % self.phone_count[phone_key]))
        has_company = (c[0] >= 0.12) & (self.n_companies > 0)
        company_idx = np.where(has_company, d[0] % max(self.n_companies, 1), self.n_companies + d[0] % 2)
        stage_idx = np.where(c[4] < 0.06, len(self.stages) - 2, np.where(
            c[4] < 0.08, len(self.stages) - 1, d[5] % (len(self.stages) - 2)))
        work_mail = (has_company & (c[1] < 0.5)).tolist()
        emails = []
        rows = zip(first_idx.tolist(), last_idx.tolist(), company_idx.tolist(), d[1].tolist(), d[2].tolist(),
                   work_mail, strict=True)
        for k, (fi, li, ci, d1, d2, work) in enumerate(rows):
            domain = self.company_domains[ci] if work else FREE_MAIL_DOMAINS[d1 % 4]
            emails.append(_email(self.first_slugs[fi], self.last_slugs[li], start + k + 1, domain, d2))
        return {
            "email": emails,
            "firstname": self.first[first_idx + padded * self.n_names[0]].tolist(),
            "lastname": self.last[last_idx + padded * self.n_names[1]].tolist(),
            "phone": self.phones[phone_idx].tolist(),
            "company": self.company_names[company_idx].tolist(),
            "country": self.countries[country_idx].tolist(),
            "lifecyclestage": self.stages[stage_idx].tolist(),
            "associatedcompanyid": self.company_ids[company_idx].tolist(),
        }
