"""The Tryton target on a real trytond (SQLite), below the DAG: a soft-deleted party that comes
back. The SQL target's rules are the reference (tests/integration/targets): a deactivated
customer comes back only with strictly newer data, and then with that data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from conduit.hooks.tryton import TrytonHook
from conduit.specs.model import load_spec, parse_spec
from conduit.targets.sql import SqliteErpTarget
from conduit.targets.tryton import PARTY, TrytonTarget, rows_frame

SPEC_FILE = Path(__file__).resolve().parents[3] / "include" / "syncs" / "crm_to_tryton_customer_sync.yaml"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def hook(tryton_hook) -> TrytonHook:
    return tryton_hook


@pytest.fixture
def soft(hook, tmp_path):
    """(spec, target): soft deletes, a fresh state store, codes of its own."""
    data = load_spec(SPEC_FILE).model_dump(by_alias=True, exclude_none=True)
    data["name"] = f"t_{uuid.uuid4().hex[:8]}"
    data["target"]["delete_mode"] = "soft"
    spec = parse_spec(data, "test.yaml")
    target = TrytonTarget(hook, SqliteErpTarget(tmp_path / "state.sqlite"))
    target.ensure_ready(spec)
    return spec, target


def party_rows(code: str, at: datetime, name: str, email: str = "p@example.com") -> pd.DataFrame:
    """One mapped row of ``code``, modified ``at``, with its row hash."""
    frame = pd.DataFrame({
        "customer_number": [code], "crm_id": pd.array([1], dtype="Int64"), "full_name": [name],
        "email": [email], "phone": ["+493012345678"], "country_code": ["DE"],
        "source_modified_at": pd.Series([at], dtype="datetime64[us, UTC]"),
    })
    frame["row_hash"] = rows_frame(frame.to_dict("records"), load_spec(SPEC_FILE))["row_hash"]
    return frame


def held(hook: TrytonHook, code: str) -> tuple[str, bool]:
    (party,) = hook.search(PARTY, [["code", "=", code]], ["name", "active"], context={"active_test": False})
    return party["name"], bool(party["active"])


def deactivated(spec, target, code: str, at: datetime, name: str) -> None:
    """``code`` loaded in its version ``at``, then archived in the CRM: deactivated in Tryton."""
    target.load(spec, [party_rows(code, at, name)], run_id="r1")
    assert target.load(spec, [], run_id="r2", deleted_keys=[code]).deleted == 1


def test_a_deactivated_party_that_comes_back_with_changed_data_is_reactivated_with_it(soft, hook):
    """The record is restored in the CRM and edited: the plan says one update, and the load makes
    it. Before, Tryton refused the write (an inactive party's fields are read-only in Tryton), the
    customer was quarantined as 'refused' and stayed deactivated."""
    spec, target = soft
    code = f"{uuid.uuid4().hex[:6]}-back"
    deactivated(spec, target, code, T0, "Old Name")
    back = party_rows(code, T0 + timedelta(days=2), "New Name")

    plan = target.plan(spec, [back], run_id="r3")
    result = target.load(spec, [back], run_id="r3", expected=plan)

    assert (plan.result.updated, plan.result.refused) == (1, 0)
    assert result == plan.result
    assert held(hook, code) == ("New Name", True)
    assert target.open_quarantine(spec) == []


def test_a_deactivated_party_whose_new_data_tryton_refuses_stays_deactivated_as_it_was(soft, hook):
    """Re-activating takes two writes (see above); when Tryton refuses the second, the party is
    quarantined and stays as it was: deactivated, with its old values."""
    spec, target = soft
    code = f"{uuid.uuid4().hex[:6]}-bad"
    deactivated(spec, target, code, T0, "Old Name")

    result = target.load(spec, [party_rows(code, T0 + timedelta(days=2), "New Name", "not-an-email")], run_id="r3")

    assert (result.updated, result.refused) == (0, 1)
    assert held(hook, code) == ("Old Name", False)
    (entry,) = target.open_quarantine(spec)
    assert entry["record_key"] == code and 'The email address "not-an-email"' in entry["reason"]


def test_a_deactivated_party_comes_back_only_with_newer_data_as_in_the_sql_target(soft, hook):
    """A soft delete keeps the record's version: data older than what Tryton held (a retried
    older load) or as old (the version that was archived) is stale, and the party stays
    deactivated with its values. Before, the ledger forgot the version on deactivation, and
    any version re-activated the party."""
    spec, target = soft
    code = f"{uuid.uuid4().hex[:6]}-old"
    deactivated(spec, target, code, T0 + timedelta(days=2), "Newest Name")

    stored = target.fetch_rows(spec, [code])
    assert stored["source_modified_at"].tolist() == [pd.Timestamp(T0 + timedelta(days=2))]
    for at, name in ((T0, "Older Name"), (T0 + timedelta(days=2), "Newest Name")):
        rows = party_rows(code, at, name)
        plan = target.plan(spec, [rows], run_id="r3")
        result = target.load(spec, [rows], run_id="r3")
        assert (plan.result.stale_skipped, plan.result.updated) == (1, 0), name
        assert result == plan.result, name
        assert held(hook, code) == ("Newest Name", False), name


def test_a_key_archived_twice_is_deleted_when_either_version_allows_it_as_in_the_sql_target(soft, hook, tmp_path):
    """Two archived CRM records with one ERP key, in versions older and newer than what the ERP
    holds: the newer archive deletes it, whichever comes first. Before, Tryton went by the last
    one listed (here the older: the party stayed active), where the SQL target deletes."""
    spec, target = soft
    code = f"{uuid.uuid4().hex[:6]}-twice"
    archived = [(code, T0 + timedelta(days=3)), (code, T0)]
    target.load(spec, [party_rows(code, T0 + timedelta(days=2), "Name")], run_id="r1")
    sql_spec = parse_spec({**spec.model_dump(by_alias=True, exclude_none=True), "target": {
        "type": "sql", "table": "erp_customers", "schema": "main", "key": "customer_number",
        "delete_mode": "soft"}}, "sql.yaml")
    sql = SqliteErpTarget(tmp_path / "erp.sqlite")
    sql.ensure_ready(sql_spec)
    sql.load(sql_spec, [party_rows(code, T0 + timedelta(days=2), "Name")], run_id="r1")

    plan = target.plan(spec, [], run_id="r2", deleted_keys=archived)
    result = target.load(spec, [], run_id="r2", deleted_keys=archived)

    assert result == plan.result == sql.load(sql_spec, [], run_id="r2", deleted_keys=archived)
    assert result.deleted == 1
    assert held(hook, code) == ("Name", False)
