"""Conduit's Airflow plugin (entry point ``airflow.plugins: conduit``).

Every Airflow process imports this module, so it imports nothing heavy: the web apps are built
only when the API server asks for ``fastapi_apps``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.plugins_manager import AirflowPlugin


class ConduitPlugin(AirflowPlugin):
    name = "conduit"

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        # FastAPI and redis load only where web apps are asked for (API server, `airflow plugins`)
        from conduit.webhooks.app import webhook_app

        return [{"app": webhook_app, "url_prefix": "/conduit", "name": "Conduit webhooks"}]
