"""Conduit's Airflow plugin (entry point ``airflow.plugins: conduit``).

Every Airflow process imports this module, so it imports nothing heavy: the web apps are built
only when the API server asks for ``fastapi_apps``.

* ``/conduit``: the HubSpot webhook receiver (``conduit.webhooks.app``; HubSpot's signature is its gate).
* ``/conduit-ui``: the sync health view (``conduit.ui.app``; every route needs an Airflow login and
  DAG read permission), shown in the UI as the "Conduit" nav entry and a "Sync health" tab on
  every DAG page (a DAG that is no sync says so).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.plugins_manager import AirflowPlugin

UI_PREFIX = "/conduit-ui"


class ConduitPlugin(AirflowPlugin):
    name = "conduit"
    # hrefs without a leading slash: they resolve against the UI's <base href>, so an Airflow
    # served below a path ([api] base_url) still finds them
    external_views = [
        {"name": "Conduit", "href": "conduit-ui/", "destination": "nav", "url_route": "conduit",
         "icon": "conduit-ui/static/conduit.svg", "nav_top_level": True},
        {"name": "Sync health", "href": "conduit-ui/syncs/{DAG_ID}", "destination": "dag",
         "url_route": "conduit-sync-health", "icon": "conduit-ui/static/conduit.svg"},
    ]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        # FastAPI and redis load only where web apps are asked for (API server, `airflow plugins`)
        from conduit.ui.app import ui_app
        from conduit.webhooks.app import webhook_app

        return [{"app": webhook_app, "url_prefix": "/conduit", "name": "Conduit webhooks"},
                {"app": ui_app, "url_prefix": UI_PREFIX, "name": "Conduit sync health"}]
