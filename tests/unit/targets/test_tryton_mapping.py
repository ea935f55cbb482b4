"""Mapped rows <-> Tryton parties, without Tryton: what is created, what is written, what is read back."""

from pathlib import Path

import pytest

from conduit.exceptions import SpecError
from conduit.specs.model import load_spec, parse_spec
from conduit.targets.tryton import party_changes, party_row, party_values, rows_frame

SPEC_FILE = Path(__file__).parents[3] / "include" / "syncs" / "crm_to_tryton_customer_sync.yaml"
COUNTRIES = {"DE": 60, "US": 233}


@pytest.fixture(scope="module")
def spec():
    return load_spec(SPEC_FILE)


def row(**overrides):
    return {"customer_number": "HS-C-7", "crm_id": 7, "full_name": "Ada Lovelace", "email": "ada@example.com",
            "phone": "+493012345678", "country_code": "DE", **overrides}


def party(**overrides):
    return {"id": 11, "code": "HS-C-7", "name": "Ada Lovelace", "active": True,
            "contact_mechanisms": [{"id": 21, "type": "email", "value": "ada@example.com",
                                    "value_compact": "ada@example.com"},
                                   {"id": 22, "type": "phone", "value": "+49 30 12345678",
                                    "value_compact": "+493012345678"}],
            "addresses": [{"id": 31, "country": {"id": 60, "code": "DE"}}],
            "identifiers": [{"id": 41, "type": None, "code": "7"}], **overrides}


def test_a_party_reads_back_as_the_row_it_was_made_from(spec):
    assert party_row(party(), spec) == row()


def test_a_new_party_carries_every_part(spec):
    values = party_values(row(), spec, COUNTRIES)
    assert values["code"] == "HS-C-7" and values["name"] == "Ada Lovelace" and values["active"] is True
    assert values["contact_mechanisms"] == [["create", [{"type": "email", "value": "ada@example.com"},
                                                        {"type": "phone", "value": "+493012345678"}]]]
    assert values["addresses"] == [["create", [{"country": 60}]]]
    assert values["identifiers"] == [["create", [{"code": "7"}]]]


def test_empty_values_create_no_parts(spec):
    values = party_values(row(email=None, phone=None, country_code=None), spec, COUNTRIES)
    assert "contact_mechanisms" not in values and "addresses" not in values


def test_an_unchanged_party_needs_no_write(spec):
    assert party_changes(party(), row(), spec, COUNTRIES) == {}


def test_only_what_differs_is_written(spec):
    changes = party_changes(party(), row(email="ada@lovelace.org", country_code="US"), spec, COUNTRIES)
    assert changes == {"contact_mechanisms": [["write", [21], {"value": "ada@lovelace.org"}]],
                       "addresses": [["write", [31], {"country": 233}]]}


def test_a_cleared_value_deletes_its_mechanism_and_a_new_one_is_created(spec):
    no_phone = party(contact_mechanisms=[party()["contact_mechanisms"][0]])
    assert party_changes(no_phone, row(), spec, COUNTRIES) == {
        "contact_mechanisms": [["create", [{"type": "phone", "value": "+493012345678"}]]]}
    assert party_changes(party(), row(phone=None), spec, COUNTRIES) == {
        "contact_mechanisms": [["delete", [22]]]}


def test_a_deactivated_party_that_comes_back_is_reactivated(spec):
    assert party_changes(party(active=False), row(), spec, COUNTRIES) == {"active": True}


def test_row_hashes_of_parties_equal_the_transforms(spec):
    """Reconcile compares hashes of what Tryton holds with those of the mapped rows."""
    import pandas as pd

    from conduit.transforms.mapping import map_frame

    raw = pd.DataFrame([{"id": "7", "hs_object_id": "7", "email": "ADA@example.com ", "firstname": "Ada",
                         "lastname": "Lovelace", "phone": "030 12345678", "country": "Germany",
                         "createdate": "2024-01-01T00:00:00Z", "lastmodifieddate": "2024-02-01T00:00:00Z"}])
    mapped = map_frame(raw, spec)
    assert mapped.loc[0, "phone"] == "+493012345678"
    assert rows_frame([party_row(party(), spec)], spec)["row_hash"].tolist() == mapped["row_hash"].tolist()


def test_a_tryton_spec_maps_every_column_somewhere():
    data = load_spec(SPEC_FILE).model_dump(by_alias=True, exclude_none=True)
    data["mapping"]["lifecycle"] = {"source": "email"}
    with pytest.raises(SpecError) as err:
        parse_spec(data, "tryton.yaml")
    assert "mapping.lifecycle" in str(err.value) and "no place" in str(err.value)
    data = load_spec(SPEC_FILE).model_dump(by_alias=True, exclude_none=True)
    data["target"]["fields"]["email"] = "mail"
    with pytest.raises(SpecError) as err:
        parse_spec(data, "tryton.yaml")
    assert "target.fields.email" in str(err.value)
