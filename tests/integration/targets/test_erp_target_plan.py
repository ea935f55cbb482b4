"""The plan (a load run and rolled back) on a real SQLite file and a real PostgreSQL schema: exact
counts, samples, nothing changed; a load given the plan refuses when the ERP moved since."""

from __future__ import annotations

import pandas as pd
import pytest
from erp_target_helpers import batch

from conduit.exceptions import StalePlanError
from conduit.targets import LoadPlan

T1, T2 = "2024-03-01T10:00:00.000Z", "2024-03-02T10:00:00.000Z"


def seeded(erp):
    erp.target.load(erp.spec, [batch(*[(i, T1, f"c{i}@x.io") for i in range(1, 11)])], run_id="seed")
    return erp


def incoming():
    """2 updates (email of 1, vip of 2), 1 insert (11), 7 unchanged; ids 9 and 10 archived."""
    rows = [(1, T2, "new1@x.io"), (2, T2, "c2@x.io", True), (11, T2, "c11@x.io")]
    rows += [(i, T1, f"c{i}@x.io") for i in range(3, 9)]
    return batch(*rows), [("HS-C-9", None), ("HS-C-10", None)]


def test_the_plan_is_exactly_what_the_load_then_does_and_changes_nothing(ready):
    erp = seeded(ready)
    rows, archived = incoming()
    before = erp.target.fetch_rows(erp.spec)

    plan = erp.target.plan(erp.spec, [rows], run_id="r2", deleted_keys=archived, sample_rows=5)

    pd.testing.assert_frame_equal(erp.target.fetch_rows(erp.spec), before)  # nothing changed
    assert (plan.result.inserted, plan.result.updated, plan.result.unchanged, plan.result.deleted) == (1, 2, 6, 2)
    assert plan.active_before == 10 and plan.erp_checksum == erp.target.key_checksum(erp.spec)
    assert plan.changed_columns == {"email": 1, "vip": 1}
    assert [r["customer_number"] for r in plan.samples["insert"]] == ["HS-C-11"]
    assert sorted((u["key"], tuple(u["changed"])) for u in plan.samples["update"]) == [
        ("HS-C-1", ("email",)), ("HS-C-2", ("vip",))]
    first = next(u for u in plan.samples["update"] if u["key"] == "HS-C-1")
    assert (first["before"], first["after"]) == ({"email": "c1@x.io"}, {"email": "new1@x.io"})
    assert sorted(r["customer_number"] for r in plan.samples["delete"]) == ["HS-C-10", "HS-C-9"]
    assert all(r["active"] for r in plan.samples["delete"])  # the rows as they are before the load

    again = LoadPlan.from_dict(plan.to_dict())  # through XCom and back
    assert again == plan
    result = erp.target.load(erp.spec, [rows], run_id="r2", deleted_keys=archived, expected=again)
    assert result == plan.result
    assert erp.target.count(erp.spec) == 9


def test_a_load_refuses_a_plan_the_erp_moved_away_from(ready):
    erp = seeded(ready)
    rows, archived = incoming()
    plan = erp.target.plan(erp.spec, [rows], run_id="r2", deleted_keys=archived)
    erp.target.load(erp.spec, [batch((5, T2, "someone-else@x.io"))], run_id="other")  # another writer
    moved = erp.target.fetch_rows(erp.spec)

    with pytest.raises(StalePlanError, match="changed since the plan"):
        erp.target.load(erp.spec, [rows], run_id="r2", deleted_keys=archived, expected=plan)

    pd.testing.assert_frame_equal(erp.target.fetch_rows(erp.spec), moved)


def test_a_load_refuses_other_rows_than_planned(ready):
    erp = seeded(ready)
    rows, archived = incoming()
    plan = erp.target.plan(erp.spec, [rows], run_id="r2", deleted_keys=archived)
    before = erp.target.fetch_rows(erp.spec)

    with pytest.raises(StalePlanError, match="approved plan said"):
        erp.target.load(erp.spec, [rows], run_id="r2", deleted_keys=[], expected=plan)  # the deletes went missing

    pd.testing.assert_frame_equal(erp.target.fetch_rows(erp.spec), before)


def test_a_full_refresh_plan_samples_the_rows_it_would_delete(ready):
    erp = seeded(ready)
    plan = erp.target.plan(erp.spec, [batch(*[(i, T1, f"c{i}@x.io") for i in range(1, 5)])], run_id="r2",
                           full_refresh=True, kept_keys=["HS-C-5"], sample_rows=3)
    assert (plan.result.deleted, plan.result.unchanged) == (5, 4)
    assert [r["customer_number"] for r in plan.samples["delete"]] == ["HS-C-10", "HS-C-6", "HS-C-7"]
    assert erp.target.count(erp.spec) == 10


def test_a_first_load_is_planned_as_inserts(ready):
    plan = ready.target.plan(ready.spec, [batch((1, T1, "a@x.io"), (2, T1, "b@x.io"))], run_id="r1")
    assert (plan.result.inserted, plan.active_before, plan.samples["update"]) == (2, 0, [])
    assert ready.target.count(ready.spec, active_only=False) == 0
