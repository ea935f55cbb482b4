"""TrytonHook's connection handling and provider metadata, without a server."""

from __future__ import annotations

import json

import pytest

from conduit.exceptions import TargetConfigError
from conduit.hooks.tryton import TrytonHook
from conduit.provider_info import get_provider_info


def set_conn(monkeypatch, conn_id: str, **conn) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "tryton", **conn}))


def test_constructing_the_hook_does_no_io():
    hook = TrytonHook("no_such_connection_anywhere", timeout=1)
    assert hook.tryton_conn_id == "no_such_connection_anywhere" and hook.requests_sent == 0


def test_settings_from_the_connection_and_overrides(monkeypatch):
    set_conn(monkeypatch, "tryton_unit", host="http://erp:8000/", schema="prod", password="k3y",
             extra={"timeout": 7, "max_retries": 2})
    hook = TrytonHook("tryton_unit", backoff_max=0.5)
    assert hook.settings == {"base_url": "http://erp:8000", "database": "prod", "timeout": 7.0,
                             "max_retries": 2, "backoff_max": 0.5}
    assert hook.model_path("party.party") == "/prod/rest/model/party.party"
    assert hook.model_path("party.party", 12) == "/prod/rest/model/party.party/12"
    assert hook.session.headers["Authorization"] == "Bearer k3y"
    assert TrytonHook("tryton_unit", max_retries=0).backoff.max_retries == 0


def test_defaults(monkeypatch):
    set_conn(monkeypatch, "tryton_unit", host="127.0.0.1", port=8000, schema="tryton", password="k")
    assert TrytonHook("tryton_unit").settings == {"base_url": "http://127.0.0.1:8000", "database": "tryton",
                                                  "timeout": 30.0, "max_retries": 6, "backoff_max": 30.0}


@pytest.mark.parametrize(("conn", "missing"), [
    ({"host": "http://erp:8000", "password": "k"}, "database name (schema)"),
    ({"schema": "db", "password": "k"}, "base URL (host)"),
    ({"host": "http://erp:8000", "schema": "db"}, "no REST API key (password)"),
])
def test_an_incomplete_connection_fails_naming_what_is_missing(monkeypatch, conn, missing):
    set_conn(monkeypatch, "tryton_unit", **conn)
    hook = TrytonHook("tryton_unit")
    with pytest.raises(TargetConfigError, match="tryton_unit") as info:
        hook.search("party.party")
    assert missing in str(info.value) and hook.requests_sent == 0
    ok, message = hook.test_connection()
    assert not ok and missing in message


def test_provider_info_declares_the_connection_type():
    info = get_provider_info()
    (conn_type,) = [c for c in info["connection-types"] if c["connection-type"] == TrytonHook.conn_type]
    assert conn_type["hook-class-name"] == f"{TrytonHook.__module__}.{TrytonHook.__name__}"
    assert conn_type["hook-name"] == TrytonHook.hook_name
    assert conn_type["ui-field-behaviour"]["relabeling"] == {"host": "Base URL", "schema": "Database",
                                                             "password": "API key"}
    assert set(conn_type["conn-fields"]) == {"timeout", "max_retries"}
    assert {"integration-name": "Tryton", "python-modules": ["conduit.hooks.tryton"]} in info["hooks"]
