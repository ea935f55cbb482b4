"""TrytonHook against a real trytond (party module, SQLite) over HTTP: parties with their contact
mechanisms, addresses and identifiers, deactivation, Tryton's errors, retries through an outage."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from conduit.exceptions import TrytonAuthError, TrytonRequestError, TrytonRetryableError
from conduit.hooks.tryton import TrytonHook

PARTY_FIELDS = [
    "name", "code", "active", "create_date", "write_date",
    "contact_mechanisms.type", "contact_mechanisms.value",
    "addresses.street", "addresses.postal_code", "addresses.city", "addresses.country.code",
    "identifiers.type", "identifiers.code",
]


def new_code(prefix: str = "HS-C") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def country_id(hook: TrytonHook, code: str) -> int:
    (country,) = hook.search("country.country", [["code", "=", code]], ["code"])
    return country["id"]


def party_values(hook: TrytonHook, code: str, name: str = "Alpha GmbH") -> dict:
    return {
        "name": name,
        "code": code,
        "contact_mechanisms": [["create", [{"type": "email", "value": "jane@alpha.example.org"},
                                           {"type": "phone", "value": "+49 30 1234567"}]]],
        "addresses": [["create", [{"street": "Invalidenstr. 1", "postal_code": "10115", "city": "Berlin",
                                   "country": country_id(hook, "DE")}]]],
        "identifiers": [["create", [{"type": None, "code": f"hubspot:{code}"},
                                    {"type": "eu_vat", "code": "DE123456788"}]]],
    }


def test_every_iso_country_is_there(tryton_hook):
    countries = list(tryton_hook.iter_search("country.country", None, ["code", "code3", "name"], page_size=100))
    codes = {c["code"] for c in countries}
    assert len(countries) == len(codes) >= 249
    assert {"DE", "FR", "US", "GB", "CH"} <= codes
    assert tryton_hook.requests_sent == len(countries) // 100 + 1


def test_party_round_trip_with_contact_mechanisms_addresses_and_identifiers(tryton_hook):
    hook, code = tryton_hook, new_code()
    before = datetime.now(UTC) - timedelta(seconds=5)

    created = hook.create("party.party", party_values(hook, code), PARTY_FIELDS)

    assert created["code"] == code and created["name"] == "Alpha GmbH" and created["active"]
    assert isinstance(created["create_date"], datetime) and created["create_date"].tzinfo is UTC
    assert created["create_date"] >= before
    assert sorted((m["type"], m["value"]) for m in created["contact_mechanisms"]) == [
        ("email", "jane@alpha.example.org"), ("phone", "+49 30 1234567")]
    (address,) = created["addresses"]
    assert (address["street"], address["postal_code"], address["city"]) == ("Invalidenstr. 1", "10115", "Berlin")
    assert address["country"]["code"] == "DE" and address["__name__"] == "party.address"
    assert sorted((i["type"] or "", i["code"]) for i in created["identifiers"]) == [
        ("", f"hubspot:{code}"), ("eu_vat", "DE123456788")]

    # search: by code, and by a datetime in the domain (sent in Tryton's JSON form)
    (found,) = hook.search("party.party", [["code", "=", code], ["create_date", ">=", before]], ["name", "code"])
    assert found == {"id": created["id"], "__name__": "party.party", "name": "Alpha GmbH", "code": code}

    # write: a field and one2many actions (write one, delete one, create one)
    email = next(m for m in created["contact_mechanisms"] if m["type"] == "email")
    phone = next(m for m in created["contact_mechanisms"] if m["type"] == "phone")
    written = hook.write("party.party", created["id"], {
        "name": "Alpha AG",
        "contact_mechanisms": [["write", [email["id"]], {"value": "info@alpha.example.org"}],
                               ["delete", [phone["id"]]],
                               ["create", [{"type": "mobile", "value": "+33 6 12 34 56 78"}]]],
        "addresses": [["write", [address["id"]], {"city": "Paris", "postal_code": "75001",
                                                  "country": country_id(hook, "FR")}]],
    }, PARTY_FIELDS)
    assert written["name"] == "Alpha AG"
    assert sorted((m["type"], m["value"]) for m in written["contact_mechanisms"]) == [
        ("email", "info@alpha.example.org"), ("mobile", "+33 6 12 34 56 78")]
    assert [(a["city"], a["country"]["code"]) for a in written["addresses"]] == [("Paris", "FR")]
    assert written["write_date"] >= written["create_date"]
    assert hook.read("party.party", created["id"], PARTY_FIELDS) == written

    hook.delete("party.party", created["id"])
    assert hook.search("party.party", [["code", "=", code]]) == []
    with pytest.raises(TrytonRequestError) as info:
        hook.read("party.party", created["id"], ["name"])
    assert info.value.status == 404
    assert hook.search("party.contact_mechanism", [["id", "=", email["id"]]]) == []  # deleted with the party
    assert hook.retries == 0


def test_tryton_rewrites_phones_and_emails_and_keeps_the_code(tryton_hook):
    """What a writer comparing its values with Tryton's must expect back."""
    hook, code = tryton_hook, new_code()
    party = hook.create("party.party", {
        "name": " Spaced Name ", "code": code,
        "addresses": [["create", [{"city": "Berlin", "country": country_id(hook, "DE")}]]],
        "contact_mechanisms": [["create", [{"type": "phone", "value": "+493012345678"},
                                           {"type": "mobile", "value": "0151 23456789"},  # national: the address's country
                                           {"type": "email", "value": "Jane.Doe@Example.ORG"}]]],
    }, ["name", "phone", "mobile", "email", "contact_mechanisms.type", "contact_mechanisms.value",
        "contact_mechanisms.value_compact"])
    assert party["name"] == " Spaced Name "  # not stripped
    assert sorted((m["type"], m["value"], m["value_compact"]) for m in party["contact_mechanisms"]) == [
        ("email", "Jane.Doe@example.org", "Jane.Doe@example.org"),
        ("mobile", "+49 1512 3456789", "+4915123456789"),
        ("phone", "+49 30 12345678", "+493012345678")]
    assert (party["phone"], party["mobile"], party["email"]) == (
        "+49 30 12345678", "+49 1512 3456789", "Jane.Doe@example.org")  # the first of each type

    with pytest.raises(TrytonRequestError, match='not allowed to modify the field "Code"'):
        hook.write("party.party", party["id"], {"code": new_code()})
    with pytest.raises(TrytonRequestError, match='not allowed to modify the field "Email"'):  # edit contact_mechanisms
        hook.write("party.party", party["id"], {"email": "other@example.org"})


def test_without_fields_a_record_is_its_id_and_rec_name(tryton_hook):
    code = new_code()
    created = tryton_hook.create("party.party", {"name": "Bare", "code": code})
    assert created == {"id": created["id"], "__name__": "party.party", "rec_name": "Bare"}
    ids = tryton_hook.search("party.party", [["code", "=", code]], ["contact_mechanisms", "addresses"])
    assert ids == [{"id": created["id"], "__name__": "party.party", "contact_mechanisms": [], "addresses": []}]


def test_deactivated_parties_need_active_test_false(tryton_hook):
    hook, code = tryton_hook, new_code()
    party = hook.create("party.party", {"name": "Gone Ltd", "code": code}, ["active"])
    assert hook.write("party.party", party["id"], {"active": False}, ["active"])["active"] in (False, 0)

    assert hook.search("party.party", [["code", "=", code]]) == []
    inactive = {"active_test": False}
    (found,) = hook.search("party.party", [["code", "=", code]], ["active"], context=inactive)
    assert not found["active"]
    assert not hook.read("party.party", party["id"], ["active"])["active"]  # read by id finds it anyway

    with pytest.raises(TrytonRequestError) as info:  # PUT/DELETE search by id with active_test
        hook.write("party.party", party["id"], {"active": True})
    assert info.value.status == 404 and "active_test" in str(info.value)
    assert hook.write("party.party", party["id"], {"active": True}, ["active"], context=inactive)["active"]
    assert len(hook.search("party.party", [["code", "=", code]])) == 1


def test_duplicate_code_is_refused_at_once(tryton_hook):
    code = new_code()
    tryton_hook.create("party.party", {"name": "First", "code": code})
    with pytest.raises(TrytonRequestError) as info:
        tryton_hook.create("party.party", {"name": "Second", "code": code})
    error = info.value
    assert error.status == 400 and error.tryton_message == "The code on party must be unique."
    assert (error.method, error.path, error.conn_id) == ("POST", "/conduit_it/rest/model/party.party", "tryton_test")
    assert "must be unique" in str(error) and "tryton_test" in str(error)
    assert tryton_hook.requests_sent == 2 and tryton_hook.retries == 0


@pytest.mark.parametrize(("values", "expected"), [
    ({"contact_mechanisms": [["create", [{"type": "email", "value": "not-an-email"}]]]},
     'The email address "not-an-email" for party'),
    ({"contact_mechanisms": [["create", [{"type": "phone", "value": "abc"}]]]}, 'The phone number "abc"'),
    ({"identifiers": [["create", [{"type": "eu_vat", "code": "DE000"}]]]}, 'The European VAT Number "DE000"'),
    ({"identifiers": [["create", [{"type": "bogus", "code": "X"}]]]}, 'The value "bogus" for field "Type"'),
], ids=["email", "phone", "vat", "identifier-type"])
def test_invalid_values_are_refused_with_trytons_message(tryton_hook, values, expected):
    with pytest.raises(TrytonRequestError) as info:
        tryton_hook.create("party.party", {"name": "Invalid", "code": new_code(), **values})
    assert info.value.status == 400 and expected in info.value.tryton_message
    assert tryton_hook.retries == 0


def test_iter_search_pages_by_id_or_by_order(tryton_hook):
    prefix = new_code("IT")
    ids = [tryton_hook.create("party.party", {"name": f"P{i}", "code": f"{prefix}-{i}"})["id"] for i in range(7)]
    domain = [["code", "like", f"{prefix}-%"]]

    sent = tryton_hook.requests_sent
    by_id = list(tryton_hook.iter_search("party.party", domain, ["code"], page_size=3))
    assert [p["id"] for p in by_id] == ids and tryton_hook.requests_sent - sent == 3

    by_name = list(tryton_hook.iter_search("party.party", domain, ["name"], page_size=3, order=[("name", "desc")]))
    assert [p["name"] for p in by_name] == [f"P{i}" for i in reversed(range(7))]
    assert [p["code"] for p in tryton_hook.search("party.party", domain, ["code"], offset=2, limit=2,
                                                  order=["code"])] == [f"{prefix}-2", f"{prefix}-3"]


def test_a_bad_api_key_fails_at_once_naming_the_connection(make_tryton_hook, tryton_server, capsys):
    hook = make_tryton_hook("tryton_bad_key", api_key="not-the-key")
    with pytest.raises(TrytonAuthError) as info:
        hook.search("party.party", [], ["name"])
    assert info.value.status == 401
    assert "API key of connection 'tryton_bad_key' was refused" in str(info.value)
    assert "not-the-key" not in str(info.value)
    assert hook.requests_sent == 1 and hook.retries == 0

    ok, message = hook.test_connection()
    assert not ok and "tryton_bad_key" in message and "not-the-key" not in message
    logged = capsys.readouterr()
    assert "not-the-key" not in logged.out + logged.err


def test_connection_test(tryton_hook, make_tryton_hook):
    assert tryton_hook.test_connection() == (
        True, f"Tryton database 'conduit_it' at {tryton_hook.settings['base_url']} accepted the API key")
    ok, message = make_tryton_hook("tryton_no_db", database="no_such_db").test_connection()
    assert not ok and "answered 404" in message and "no database 'no_such_db'" in message


def test_an_outage_is_retried_then_fails_and_the_hook_works_again_after_restart(
        tryton_server, make_tryton_hook, capsys):
    hook = make_tryton_hook(max_retries=2, backoff_max=0.05)
    assert hook.search("party.party", [], ["name"], limit=1) is not None
    sent = hook.requests_sent
    tryton_server.stop()
    try:
        with pytest.raises(TrytonRetryableError) as info:
            hook.search("party.party", [], ["name"], limit=1)
        message = str(info.value)
        assert "still failing after 2 retries" in message and "tryton_test" in message
        assert "Connection refused" in message or "ConnectionError" in message
        assert hook.requests_sent - sent == 3 and hook.retries == 2
        logged = capsys.readouterr()
        assert (logged.out + logged.err).count("Tryton GET /conduit_it/rest/model/party.party failed") == 2
        assert tryton_server.api_key not in logged.out + logged.err + message

        ok, why = hook.test_connection()
        assert not ok and "unreachable" in why
    finally:
        tryton_server.start()
    assert hook.test_connection()[0]
    assert isinstance(hook.search("party.party", [], ["name"], limit=1), list)


def test_the_connection_uri_works_as_an_airflow_connection(tryton_server, monkeypatch):
    from airflow.models.connection import Connection

    uri = tryton_server.connection_uri(timeout=5, max_retries=1)
    conn = Connection(conn_id="tryton_uri", uri=uri)
    assert (conn.conn_type, conn.schema, conn.password) == ("tryton", "conduit_it", tryton_server.api_key)
    assert conn.extra_dejson == {"timeout": 5, "max_retries": 1}
    monkeypatch.setenv("AIRFLOW_CONN_TRYTON_URI", uri)
    hook = TrytonHook("tryton_uri")
    assert hook.settings["base_url"] == tryton_server.base_url
    assert hook.settings["max_retries"] == 1 and hook.test_connection()[0]


def test_create_takes_one_record(tryton_hook):
    with pytest.raises(TypeError, match="one record per call"):
        tryton_hook.create("party.party", [{"name": "A", "code": new_code()}])
    assert tryton_hook.requests_sent == 0
