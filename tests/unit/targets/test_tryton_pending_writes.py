"""Settling the writes a killed Tryton load announced (pure): a write counts as made only when
Tryton holds the party active with exactly the announced values; the hash a row is announced with
equals the hash of the party Tryton holds once the row is written (and only then)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from conduit.specs.model import load_spec
from conduit.targets import ledger
from conduit.targets.tryton import held_hashes, settled_entries

SPEC = load_spec(Path(__file__).parents[3] / "include" / "syncs" / "crm_to_tryton_customer_sync.yaml")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROW = {"customer_number": "C-1", "crm_id": 7, "full_name": "Ada", "email": "ada@example.com",
       "phone": "+493012345678", "country_code": "DE", "source_modified_at": T0, "row_hash": "from the transform"}


def party(name: str = "Ada", *, active: bool = True) -> dict:
    """A party as Tryton answers the load's read (PARTY_FIELDS) holding ROW (with ``name``)."""
    return {"id": 1, "code": "C-1", "name": name, "active": active,
            "contact_mechanisms": [{"type": "email", "value": "ada@example.com"},
                                   {"type": "phone", "value": "+49 30 12345678", "value_compact": "+493012345678"}],
            "addresses": [{"country": {"code": "DE"}}], "identifiers": [{"type": None, "code": "7"}]}


def test_a_row_and_the_party_holding_it_hash_alike_and_other_values_do_not():
    from conduit.targets.tryton import party_row

    (announced,) = held_hashes([ROW], SPEC)
    assert held_hashes([party_row(party(), SPEC)], SPEC) == [announced]
    assert held_hashes([party_row(party("Ada Old"), SPEC)], SPEC) != [announced]
    assert held_hashes([{**ROW, "crm_id": 8}], SPEC) != [announced]
    assert held_hashes([], SPEC) == []


def test_only_a_write_tryton_holds_active_with_the_announced_values_settles():
    (announced,) = held_hashes([ROW], SPEC)
    pending = {code: ledger.PendingWrite(code, T0, announced) for code in ("held", "old", "inactive", "gone")}
    parties = {"held": party(), "old": party("Ada Old"), "inactive": party(active=False)}
    held = {"held": announced, "old": "another hash", "inactive": announced}
    assert settled_entries(pending, parties, held) == [ledger.LedgerEntry("held", T0, True, None)]
    assert settled_entries({}, parties, held) == []
