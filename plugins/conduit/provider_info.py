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

# the HubSpot account's request budget (conduit.sources.hubspot.budget); names as in budget.EXTRA_FIELDS
HUBSPOT_BUDGET_FIELDS = {
    "rate_limit_tier": {
        "label": "HubSpot tier (rate limits)",
        "description": "Paces every call to the account's limits: free/starter 100 per 10 s and 250k a day, "
        "professional 190 and 650k, enterprise 190 and 1M, limit_pack 250 and 1.65M; search 5 per second. "
        "Empty: starter for api.hubapi.com, no pacing for other hosts; 'unlimited': no pacing.",
        "schema": {"type": ["string", "null"],
                   "enum": [None, "free", "starter", "professional", "enterprise", "limit_pack", "unlimited"]},
    },
    "rate_limit_interval_max": {
        "label": "Requests per 10 s (overrides the tier)",
        "schema": {"type": ["integer", "null"], "minimum": 1},
    },
    "rate_limit_search_per_second": {
        "label": "Searches per second (overrides the tier)",
        "schema": {"type": ["integer", "null"], "minimum": 1},
    },
    "rate_limit_daily_max": {
        "label": "Requests per day (overrides the tier)",
        "schema": {"type": ["integer", "null"], "minimum": 1},
    },
    "rate_limit_timezone": {
        "label": "Account time zone",
        "description": "HubSpot resets the daily limit at midnight in the account's time zone.",
        "schema": {"type": ["string", "null"], "default": "UTC"},
    },
    "budget_redis_conn_id": {
        "label": "Budget Redis connection id",
        "description": "A Redis connection all workers share the account's budget in (e.g. the Celery broker's "
        "Redis). Empty: each task process paces itself alone, correct only for one process at a time.",
        "schema": {"type": ["string", "null"]},
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
                    **HUBSPOT_BUDGET_FIELDS,
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
