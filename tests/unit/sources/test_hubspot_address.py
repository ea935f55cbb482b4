"""The CRM's lineage dataset without the HTTP stack: the same namespace and name as the hook's,
for the connection shapes users write, and no import of Airflow's HTTP provider on the way (a
subprocess: this test session may have imported it already)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.sdk import Connection

from conduit.sources.hubspot.address import base_url_of
from conduit.sources.hubspot.hook import HubSpotHook
from conduit.sources.hubspot.source import HubSpotSource
from conduit.specs.model import load_spec

SPEC_PATH = Path(__file__).resolve().parents[3] / "include" / "syncs" / "crm_to_erp_customer_sync.yaml"
SPEC = load_spec(SPEC_PATH)

CONNECTIONS = [
    {"host": "https://api.hubapi.com"},
    {"host": "api.hubapi.com", "schema": "https"},
    {"host": "127.0.0.1", "port": 8765},
    {"host": "http://127.0.0.1:8765/hubspot/"},
    {"host": "http://[::1]", "port": 8765, "extra": json.dumps({"api_version": "v3"})},
    {"host": "proxy.internal", "schema": "https", "port": 8443, "extra": json.dumps({"api_version": "2026-03"})},
]


@pytest.mark.parametrize("fields", CONNECTIONS, ids=lambda f: f["host"])
def test_the_api_root_is_the_one_the_hook_builds(fields):
    connection = Connection(conn_id="hubspot_default", conn_type="hubspot", **fields)
    hook = HubSpotHook()
    hook._set_base_url(connection)
    assert base_url_of(connection) == hook.base_url


@pytest.mark.parametrize("fields", CONNECTIONS, ids=lambda f: f["host"])
def test_the_dataset_is_the_same_with_or_without_the_hook(fields, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_DEFAULT", json.dumps({"conn_type": "hubspot", "password": "t0ken-x",
                                                                   **fields}))
    light = HubSpotSource(SPEC.source).dataset()
    with_hook = HubSpotSource(SPEC.source)
    with_hook.hook.connection  # noqa: B018 - the task built its hook for its work
    assert light == with_hook.dataset()


def test_the_dataset_imports_no_http_stack():
    probe = ("import json, os, sys; import airflow.sdk\n"
             "from pathlib import Path\n"
             "from conduit.specs.model import load_spec\n"
             "from conduit.sources.hubspot.source import HubSpotSource\n"
             f"spec = load_spec(Path({str(SPEC_PATH)!r}))\n"
             "ref = HubSpotSource(spec.source).dataset()\n"
             "print(json.dumps([ref.namespace, ref.name, 'airflow.providers.http.hooks.http' in sys.modules]))")
    env = {"AIRFLOW_CONN_HUBSPOT_DEFAULT": json.dumps({"conn_type": "hubspot", "host": "https://api.hubapi.com",
                                                       "password": "t0ken-x"})}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}, **env})
    namespace, name, http_imported = json.loads(out.stdout.strip().splitlines()[-1])
    assert (namespace, name) == ("https://api.hubapi.com", "crm/objects/2026-09/contacts")
    assert http_imported is False

