"""The health view reads a sync's state store only: a Tryton sync's watermark and quarantine come
from its SQL state store, with no Tryton connection defined (the API server needs none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conduit.exceptions import TargetConfigError
from conduit.hooks.erp import ErpHook
from conduit.specs.model import load_spec
from conduit.targets.base import Watermark
from conduit.targets.registry import state_store_for
from conduit.targets.sql import SqliteErpTarget
from conduit.ui import data

REPO = Path(__file__).resolve().parents[3]
TRYTON = load_spec(REPO / "include" / "syncs" / "crm_to_tryton_customer_sync.yaml")
SQL = load_spec(REPO / "include" / "syncs" / "crm_to_erp_customer_sync.yaml")


def connection(conn_id: str, conn_type: str, **fields):
    from airflow.sdk import Connection

    return Connection(conn_id=conn_id, conn_type=conn_type, **fields)


def test_the_state_store_is_built_without_reading_the_sink_connection(tmp_path):
    asked: list[str] = []
    conns = {"conduit_state_default": connection("conduit_state_default", "sqlite", host=str(tmp_path / "s.db")),
             "erp_default": connection("erp_default", "sqlite", host=str(tmp_path / "erp.db")),
             "tryton_default": connection("tryton_default", "tryton", host="http://erp:8000")}

    def get_connection(conn_id: str):
        asked.append(conn_id)
        return conns[conn_id]

    store = state_store_for(TRYTON.target.conn_id, get_connection, state_conn_id=TRYTON.target.state_conn_id)
    assert isinstance(store, SqliteErpTarget) and store.describe()["path"] == str((tmp_path / "s.db").resolve())
    assert asked == ["conduit_state_default"]  # never tryton_default
    # a SQL target keeps its state beside its rows: the target's own database
    sql = state_store_for(SQL.target.conn_id, get_connection, state_conn_id=SQL.target.state_conn_id)
    assert isinstance(sql, SqliteErpTarget) and sql.describe()["path"] == str((tmp_path / "erp.db").resolve())
    with pytest.raises(TargetConfigError, match="keeps no state of its own"):
        state_store_for("tryton_default", get_connection)


def test_a_tryton_syncs_state_is_read_with_no_tryton_connection(tmp_path, monkeypatch):
    db = tmp_path / "state.db"
    monkeypatch.setenv("AIRFLOW_CONN_CONDUIT_STATE_DEFAULT", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    monkeypatch.delenv("AIRFLOW_CONN_TRYTON_DEFAULT", raising=False)
    store = SqliteErpTarget(str(db))
    store.ensure_state(TRYTON)
    store.commit_load(TRYTON, run_id="r1", watermark=Watermark(1_780_000_000_000, 42))
    store.quarantine(TRYTON, [{"record_key": "HS-C-7", "crm_id": "7", "expectation": "expect_column_values_to_not_be_null",
                               "column_name": "full_name", "reason": "no name",
                               "raw_record": {"firstname": "", "lastname": ""}}], run_id="r1")

    hook = ErpHook(erp_conn_id=TRYTON.target.conn_id, state_conn_id=TRYTON.target.state_conn_id)
    assert isinstance(hook.get_state_store(), SqliteErpTarget)
    state = data.read_state(TRYTON)
    assert state.error is None and state.watermark_ms == 1_780_000_000_000
    assert [(e["record_key"], e["reason"], e["raw_record"]) for e in state.quarantine] == \
        [("HS-C-7", "no name", {"firstname": "", "lastname": ""})]
