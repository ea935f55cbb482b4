"""The Tryton target on a real trytond (SQLite), below the DAG: a spec switched from soft to hard
deletes. The SQL target is the reference (``sql_render.delete_rows``): in hard mode a full refresh
deletes every row the load did not bring and does not keep, the ones an earlier soft delete
deactivated included; an archived key deletes its row whether it is active or not."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from conduit.hooks.tryton import TrytonHook
from conduit.specs.model import load_spec, parse_spec
from conduit.targets import ledger
from conduit.targets.sql import SqliteErpTarget
from conduit.targets.tryton import PARTY, TrytonTarget, rows_frame

SPEC_FILE = Path(__file__).resolve().parents[3] / "include" / "syncs" / "crm_to_tryton_customer_sync.yaml"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rows(codes: list[str], at: datetime = T0) -> pd.DataFrame:
    frame = pd.DataFrame({
        "customer_number": codes, "crm_id": pd.array(range(1, len(codes) + 1), dtype="Int64"),
        "full_name": [f"Name {c}" for c in codes], "email": [f"p{i}@example.com" for i in range(len(codes))],
        "phone": ["+493012345678"] * len(codes), "country_code": ["DE"] * len(codes),
        "source_modified_at": pd.Series([at] * len(codes), dtype="datetime64[us, UTC]"),
    })
    frame["row_hash"] = rows_frame(frame.to_dict("records"), load_spec(SPEC_FILE))["row_hash"]
    return frame


def with_delete_mode(spec, mode: str):
    data = spec.model_dump(by_alias=True, exclude_none=True)
    data["target"]["delete_mode"] = mode
    return parse_spec(data, f"{mode}.yaml")


@pytest.fixture
def pair(tryton_hook: TrytonHook, tmp_path):
    """(Tryton spec, Tryton target, SQL spec, SQL target), both soft, with codes of their own;
    ``load(mode, ...)`` loads both the same way under ``delete_mode=mode``."""
    data = load_spec(SPEC_FILE).model_dump(by_alias=True, exclude_none=True)
    data["name"] = f"t_{uuid.uuid4().hex[:8]}"
    data["target"]["delete_mode"] = "soft"
    spec = parse_spec(data, "tryton.yaml")
    tryton = TrytonTarget(tryton_hook, SqliteErpTarget(tmp_path / "state.sqlite"))
    tryton.ensure_ready(spec)
    sql_spec = parse_spec({**data, "target": {"type": "sql", "table": "erp_customers", "schema": "main",
                                              "key": "customer_number", "delete_mode": "soft"}}, "sql.yaml")
    sql = SqliteErpTarget(tmp_path / "erp.sqlite")
    sql.ensure_ready(sql_spec)

    def load(mode: str, batches, **kwargs):
        tryton_spec, erp_spec = with_delete_mode(spec, mode), with_delete_mode(sql_spec, mode)
        plan = tryton.plan(tryton_spec, batches, run_id=kwargs.get("run_id", "r"),
                           **{k: v for k, v in kwargs.items() if k != "run_id"})
        return plan.result, tryton.load(tryton_spec, batches, **kwargs), sql.load(erp_spec, batches, **kwargs)

    return spec, tryton, sql_spec, sql, load


def held(hook: TrytonHook, codes: list[str]) -> dict[str, bool]:
    """Code -> active, for the parties Tryton holds (deactivated ones too)."""
    return {p["code"]: bool(p["active"]) for p in hook.search(PARTY, [["code", "in", codes]], ["code", "active"],
                                                             context={"active_test": False})}


def sql_held(sql: SqliteErpTarget, sql_spec, codes: list[str]) -> dict[str, bool]:
    stored = sql.fetch_rows(sql_spec, codes)
    return {str(k): bool(a) for k, a in zip(stored["customer_number"], stored["active"], strict=True)}


def test_a_hard_full_refresh_deletes_parties_an_earlier_soft_delete_deactivated_as_the_sql_target_does(
        pair, tryton_hook):
    """Loaded soft, one customer archived (deactivated), the spec switched to hard, then a full
    refresh without it: the SQL target deletes its row, so Tryton deletes the party and the ledger
    forgets it. Before, the full refresh went by the ledger's active entries only, and the
    deactivated party stayed in Tryton."""
    spec, tryton, sql_spec, sql, load = pair
    prefix = uuid.uuid4().hex[:6]
    kept, gone = f"{prefix}-kept", f"{prefix}-gone"
    load("soft", [rows([kept, gone])], run_id="r1")
    _, soft, _ = load("soft", [], run_id="r2", deleted_keys=[gone])
    assert soft.deleted == 1
    assert held(tryton_hook, [kept, gone]) == sql_held(sql, sql_spec, [kept, gone]) == {kept: True, gone: False}

    planned, result, sql_result = load("hard", [rows([kept])], run_id="r3", full_refresh=True)

    assert sql_result.deleted == 1 and sql_held(sql, sql_spec, [kept, gone]) == {kept: True}
    assert result == planned == sql_result
    assert held(tryton_hook, [kept, gone]) == {kept: True}
    assert set(ledger.read(tryton.state, spec.target.state_schema, spec.name)) == {kept}


def test_a_hard_delete_of_an_archived_key_removes_its_deactivated_party_as_the_sql_target_does(pair, tryton_hook):
    """The same switch, incremental: the key archived again (a newer archived version) deletes
    the deactivated party and its row."""
    spec, tryton, sql_spec, sql, load = pair
    prefix = uuid.uuid4().hex[:6]
    kept, gone = f"{prefix}-kept", f"{prefix}-gone"
    load("soft", [rows([kept, gone])], run_id="r1")
    load("soft", [], run_id="r2", deleted_keys=[(gone, T0 + timedelta(days=1))])

    planned, result, sql_result = load("hard", [], run_id="r3", deleted_keys=[(gone, T0 + timedelta(days=1))])

    assert sql_result.deleted == 1 and sql_held(sql, sql_spec, [kept, gone]) == {kept: True}
    assert result == planned == sql_result
    assert held(tryton_hook, [kept, gone]) == {kept: True}


def test_a_soft_full_refresh_leaves_a_deactivated_party_as_it_is(pair, tryton_hook):
    """Soft mode stays as it was: a deactivated party a full refresh does not bring is not
    deactivated again (nothing counted, nothing written), as the SQL target's ``active AND``."""
    spec, tryton, sql_spec, sql, load = pair
    prefix = uuid.uuid4().hex[:6]
    kept, gone = f"{prefix}-kept", f"{prefix}-gone"
    load("soft", [rows([kept, gone])], run_id="r1")
    load("soft", [], run_id="r2", deleted_keys=[gone])

    planned, result, sql_result = load("soft", [rows([kept])], run_id="r3", full_refresh=True)

    assert result == planned == sql_result and result.deleted == 0
    assert held(tryton_hook, [kept, gone]) == sql_held(sql, sql_spec, [kept, gone]) == {kept: True, gone: False}
