"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

Must not import Airflow: it is called while Airflow itself is being configured.
"""

from __future__ import annotations

# the request settings every HTTP connection of Conduit's carries in its extras
HTTP_RETRY_FIELDS = {
    "timeout": {
        "label": "Request timeout (s)",
        "schema": {"type": ["number", "null"], "default": 30},
    },
    "max_retries": {
        "label": "Retries per request",
        "description": "Retries on 429/5xx/network errors, with exponential backoff, jitter and Retry-After.",
        "schema": {"type": ["integer", "null"], "default": 6},
    },
}


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-conduit",
        "name": "Conduit",
        "description": "Scheduled, observable, safe integration pipelines: CRM to ERP sync, ETL, "
        "data-quality gates and lineage.",
        "integrations": [
            {"integration-name": "HubSpot", "external-doc-url": "https://developers.hubspot.com/docs/api/crm",
             "tags": ["service"]},
            {"integration-name": "Conduit ERP", "tags": ["software"]},
            {"integration-name": "Tryton", "external-doc-url": "https://docs.tryton.org/", "tags": ["software"]},
        ],
        "hooks": [
            {"integration-name": "HubSpot", "python-modules": ["conduit.hooks.hubspot"]},
            {"integration-name": "Conduit ERP", "python-modules": ["conduit.hooks.erp"]},
            {"integration-name": "Tryton", "python-modules": ["conduit.hooks.tryton"]},
        ],
        "operators": [
            {"integration-name": "Conduit ERP", "python-modules": ["conduit.operators.sync"]},
        ],
        "connection-types": [
            {
                "connection-type": "hubspot",
                "hook-class-name": "conduit.hooks.hubspot.HubSpotHook",
                "hook-name": "HubSpot",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "Base URL", "password": "Access token"},
                    "placeholders": {
                        "host": "https://api.hubapi.com",
                        "password": "private-app access token or service key",
                    },
                },
                "conn-fields": {
                    "api_version": {
                        "label": "API version",
                        "description": "Path segment of the CRM objects API: 'v3' (legacy, /crm/v3/objects) "
                        "or a date version such as '2026-09' (/crm/objects/2026-09).",
                        "schema": {"type": ["string", "null"], "default": "2026-09"},
                    },
                    **HTTP_RETRY_FIELDS,
                },
            },
            {
                "connection-type": "tryton",
                "hook-class-name": "conduit.hooks.tryton.TrytonHook",
                "hook-name": "Tryton",
                "ui-field-behaviour": {
                    "hidden-fields": ["port", "login"],
                    "relabeling": {"host": "Base URL", "schema": "Database", "password": "API key"},
                    "placeholders": {
                        "host": "http://127.0.0.1:8000",
                        "schema": "tryton",
                        "password": "REST API key (res.user.application, application 'rest', validated)",
                    },
                },
                "conn-fields": {
                    **HTTP_RETRY_FIELDS,
                },
            },
        ],
    }
