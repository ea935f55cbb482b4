"""ErpHook resolves real Airflow connections (from AIRFLOW_CONN_* env vars) to working targets."""

from __future__ import annotations

import json

import pytest

from conduit.exceptions import TargetConfigError
from conduit.hooks.erp import ErpHook
from conduit.targets import PostgresErpTarget, SqliteErpTarget


@pytest.mark.postgres
def test_postgres_connection_gives_a_working_postgres_target(monkeypatch, pg_server_dsn):
    monkeypatch.setenv("AIRFLOW_CONN_ERP_TEST", pg_server_dsn)  # postgresql://postgres@127.0.0.1:5432/test
    hook = ErpHook("erp_test")

    target = hook.get_target()

    assert isinstance(target, PostgresErpTarget) and hook.get_target() is target
    assert hook.test_connection() == (True, "connected to postgres")
    assert hook.describe() == {"kind": "postgres", "host": "127.0.0.1", "port": 5432, "database": "test",
                               "path": None}


@pytest.mark.parametrize(
    "uri",
    ["sqlite:///{path}", "sqlite://{quoted}", json.dumps({"conn_type": "sqlite", "host": "{path}"})],
    ids=["absolute-path-uri", "host-uri", "json"],
)
def test_sqlite_connection_forms_give_a_sqlite_target(monkeypatch, tmp_path, uri):
    path = tmp_path / "erp.db"
    value = uri.replace("{path}", str(path)).replace("{quoted}", str(path).replace("/", "%2F"))
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DEFAULT", value)
    hook = ErpHook()

    assert isinstance(hook.get_target(), SqliteErpTarget)
    assert hook.test_connection() == (True, "connected to sqlite")
    assert hook.describe()["path"] == str(path) and path.exists()


def test_constructing_the_hook_does_no_io_and_bad_connections_fail_clearly(monkeypatch):
    hook = ErpHook("erp_nowhere")  # no such connection: fine until used
    ok, message = hook.test_connection()
    assert not ok and "erp_nowhere" in message

    monkeypatch.setenv("AIRFLOW_CONN_ERP_HTTP", "https://erp.example.com")
    with pytest.raises(TargetConfigError, match="has type 'https'.*postgres or sqlite"):
        ErpHook("erp_http").get_target()


def test_hook_identity():
    assert (ErpHook.conn_name_attr, ErpHook.default_conn_name, ErpHook.hook_name) == (
        "erp_conn_id", "erp_default", "Conduit ERP"
    )
    assert ErpHook().erp_conn_id == "erp_default"
