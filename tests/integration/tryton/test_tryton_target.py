"""The Tryton target on a real trytond, below the DAG: hard deletes, a create that races another
writer, a plan that moved before its load, a reactivated party. Each test uses its own codes on the
session's server and its own SQLite state store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from conduit.exceptions import StalePlanError, TrytonRequestError
from conduit.specs.model import load_spec, parse_spec
from conduit.targets.base import Watermark
from conduit.targets.sql import SqliteErpTarget
from conduit.targets.tryton import PARTY, TrytonTarget

SPEC_FILE = Path(__file__).resolve().parents[3] / "include" / "syncs" / "crm_to_tryton_customer_sync.yaml"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def setup(tryton_hook, tmp_path):
    def make(**target):
        data = load_spec(SPEC_FILE).model_dump(by_alias=True, exclude_none=True)
        data["name"] = f"t_{uuid.uuid4().hex[:8]}"
        data["target"].update(target)
        spec = parse_spec(data, "test.yaml")
        store = SqliteErpTarget(tmp_path / f"{spec.name}.sqlite")
        target = TrytonTarget(tryton_hook, store)
        target.ensure_ready(spec)
        return spec, target

    return make


def rows(prefix: str, n: int, *, at: datetime = T0, name: str = "Name") -> pd.DataFrame:
    frame = pd.DataFrame({
        "customer_number": [f"{prefix}-{i}" for i in range(n)],
        "crm_id": pd.array(range(1, n + 1), dtype="Int64"),
        "full_name": [f"{name} {i}" for i in range(n)],
        "email": [f"p{i}@example.com" for i in range(n)],
        "phone": ["+493012345678"] * n,
        "country_code": ["DE"] * n,
        "source_modified_at": pd.Series([at] * n, dtype="datetime64[us, UTC]"),
    })
    from conduit.targets.tryton import rows_frame

    frame["row_hash"] = rows_frame(frame.to_dict("records"), load_spec(SPEC_FILE))["row_hash"]
    return frame


def parties(hook, prefix: str) -> dict[str, dict]:
    found = hook.search(PARTY, [["code", "like", f"{prefix}-%"]], ["code", "name", "active"],
                        context={"active_test": False})
    return {p["code"]: p for p in found}


def test_hard_deletes_remove_the_party_and_soft_ones_deactivate(setup, tryton_hook):
    prefix = uuid.uuid4().hex[:6]
    spec, target = setup(delete_mode="hard")
    assert target.load(spec, [rows(prefix, 4)], run_id="r1").inserted == 4
    result = target.load(spec, [], run_id="r2", deleted_keys=[f"{prefix}-0", (f"{prefix}-1", T0 + timedelta(days=1))])
    assert result.deleted == 2
    assert sorted(parties(tryton_hook, prefix)) == [f"{prefix}-2", f"{prefix}-3"]
    assert target.count(spec) == 2

    soft_prefix = uuid.uuid4().hex[:6]
    spec, target = setup(delete_mode="soft")
    target.load(spec, [rows(soft_prefix, 2)], run_id="r1")
    # an archived version older than what Tryton holds spares the party
    assert target.load(spec, [], run_id="r2", deleted_keys=[(f"{soft_prefix}-0", T0 - timedelta(days=1)),
                                                           f"{soft_prefix}-1"]).deleted == 1
    held = parties(tryton_hook, soft_prefix)
    assert bool(held[f"{soft_prefix}-0"]["active"]) and not held[f"{soft_prefix}-1"]["active"]
    # the deactivated party comes back with newer data: reactivated, counted as an update
    back = rows(soft_prefix, 2, at=T0 + timedelta(days=2))
    result = target.load(spec, [back], run_id="r3")
    assert (result.updated, result.unchanged) == (1, 1)
    assert all(bool(p["active"]) for p in parties(tryton_hook, soft_prefix).values())


def test_a_create_that_races_another_writer_updates_instead(setup, tryton_hook):
    prefix = uuid.uuid4().hex[:6]
    spec, target = setup()
    incoming = rows(prefix, 3, name="Fresh")
    changes, countries = target._changes(spec, [incoming], (), False, ())
    assert len(changes.creates) == 3
    # another writer creates one of the codes after the load read Tryton and before it creates
    tryton_hook.create(PARTY, {"code": f"{prefix}-1", "name": "Someone else"}, ["id"])
    target._create(spec, changes.creates, countries)
    held = parties(tryton_hook, prefix)
    assert sorted(held) == [f"{prefix}-0", f"{prefix}-1", f"{prefix}-2"]
    assert held[f"{prefix}-1"]["name"] == "Fresh 1"
    # and the load of the same rows now finds everything in place
    assert target.load(spec, [incoming], run_id="r2").inserted == 0


def test_a_plan_whose_parties_moved_is_not_applied(setup, tryton_hook):
    prefix = uuid.uuid4().hex[:6]
    spec, target = setup()
    target.load(spec, [rows(prefix, 3)], run_id="r1")
    changed = rows(prefix, 3, at=T0 + timedelta(days=1), name="Changed")
    plan = target.plan(spec, [changed], run_id="r2")
    assert (plan.result.updated, plan.active_before, plan.changed_columns) == (3, 3, {"full_name": 3})
    assert plan.samples["update"][0]["after"] == {"full_name": "Changed 0"}
    assert all(p["name"].startswith("Name") for p in parties(tryton_hook, prefix).values())  # nothing written
    party = parties(tryton_hook, prefix)[f"{prefix}-0"]
    tryton_hook.write(PARTY, party["id"], {"name": "Behind the sync's back"})
    with pytest.raises(StalePlanError):
        target.load(spec, [changed], run_id="r2", expected=plan)
    assert parties(tryton_hook, prefix)[f"{prefix}-1"]["name"] == "Name 1"
    assert target.read_watermark(spec) is None


def test_a_retry_of_an_approved_load_that_committed_changes_nothing_and_another_run_is_refused(setup, tryton_hook):
    """A try killed after its commit is retried with the same approved plan: the watermark names
    this run, so the moved parties are its own work, and the retry finds nothing left to change."""
    prefix = uuid.uuid4().hex[:6]
    spec, target = setup()
    target.load(spec, [rows(prefix, 3)], run_id="r1", watermark=Watermark(1, 0))
    changed = rows(prefix, 3, at=T0 + timedelta(days=1), name="Changed")
    plan = target.plan(spec, [changed], run_id="r2")
    assert target.load(spec, [changed], run_id="r2", expected=plan, watermark=Watermark(2, 0)).updated == 3
    again = target.load(spec, [changed], run_id="r2", expected=plan, watermark=Watermark(2, 0))
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)
    with pytest.raises(StalePlanError):  # the same plan for another run: the parties moved under it
        target.load(spec, [changed], run_id="r3", expected=plan, watermark=Watermark(3, 0))


def test_a_party_tryton_refuses_is_quarantined_and_the_others_load(setup, tryton_hook):
    """The gate let an address through that Tryton's own check refuses (a spec without the e-mail
    transform): that party goes to the quarantine with Tryton's message, the others load, the
    watermark moves; a refused update does the same. Every party of a batch refused: the load fails."""
    prefix = uuid.uuid4().hex[:6]
    spec, target = setup()
    incoming = rows(prefix, 5)
    incoming.loc[2, "email"] = "not-an-email"
    mark = Watermark(ts_ms=1_767_225_600_000, id=9)
    result = target.load(spec, [incoming], run_id="r1", watermark=mark)
    assert (result.inserted, result.refused) == (4, 1)
    assert sorted(parties(tryton_hook, prefix)) == [f"{prefix}-{i}" for i in (0, 1, 3, 4)]
    assert target.read_watermark(spec) == mark
    (entry,) = target.open_quarantine(spec)
    assert (entry["record_key"], entry["crm_id"], entry["expectation"]) == (f"{prefix}-2", "3", "tryton_accepts_party")
    assert 'The email address "not-an-email"' in entry["reason"]

    # an update Tryton refuses: that party keeps what it had, the other is updated
    later = rows(prefix, 5, at=T0 + timedelta(days=1), name="Later").iloc[[0, 1]].reset_index(drop=True)
    later.loc[0, "email"] = "still not an email"
    result = target.load(spec, [later], run_id="r2")
    assert (result.updated, result.refused) == (1, 1)
    held = parties(tryton_hook, prefix)
    assert (held[f"{prefix}-0"]["name"], held[f"{prefix}-1"]["name"]) == ("Name 0", "Later 1")
    assert sorted(e["record_key"] for e in target.open_quarantine(spec)) == [f"{prefix}-0", f"{prefix}-2"]

    # nothing Tryton accepts in a whole batch: not about one party, the load fails loudly
    bad_prefix = uuid.uuid4().hex[:6]
    spec, target = setup()
    bad = rows(bad_prefix, 3)
    bad["email"] = "nope"
    with pytest.raises(TrytonRequestError, match='The email address "nope"'):
        target.load(spec, [bad], run_id="r1", watermark=mark)
    assert parties(tryton_hook, bad_prefix) == {} and target.open_quarantine(spec) == []
    assert target.read_watermark(spec) is None
