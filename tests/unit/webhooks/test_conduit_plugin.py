"""The Airflow plugin: found through its entry point, mounted by the API server, cheap to import."""

from __future__ import annotations

import subprocess
import sys

from fastapi import FastAPI
from fastapi.testclient import TestClient


def test_airflow_mounts_the_webhook_app_under_conduit(monkeypatch):
    from airflow import plugins_manager
    from airflow.api_fastapi.app import init_plugins

    monkeypatch.delenv("CONDUIT_HUBSPOT_WEBHOOK_SECRET", raising=False)
    apps, _ = plugins_manager.get_fastapi_plugins()
    assert [app["url_prefix"] for app in apps if app["name"] == "Conduit webhooks"] == ["/conduit"]

    api = FastAPI()
    init_plugins(api)
    response = TestClient(api).post("/conduit/webhooks/hubspot/customers", content=b"[]")
    assert response.status_code == 503  # reached the receiver, which refuses without a secret


def test_importing_the_plugin_loads_neither_fastapi_nor_redis():
    probe = "import sys, conduit.plugin; print(sorted({'fastapi', 'redis'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
