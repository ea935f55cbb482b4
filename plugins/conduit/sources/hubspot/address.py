"""Where a HubSpot connection points, without the HTTP stack: the API root, the API version and
the objects path. Lineage needs them in tasks that never call HubSpot (a load reports the CRM as
its source); importing the hook there would import Airflow's HTTP provider (aiohttp and all)
inside every OpenLineage event's forked process, ~0.3-0.8 s each time."""

from __future__ import annotations

from typing import Any

DEFAULT_API_VERSION = "2026-09"


def objects_path(api_version: str, object_type: str) -> str:
    """``v3`` -> the legacy ``crm/v3/objects/...``; a date version -> ``crm/objects/2026-09/...``."""
    version = api_version.strip("/")
    if version.startswith("v"):
        return f"crm/{version}/objects/{object_type}"
    return f"crm/objects/{version}/{object_type}"


def api_version_of(extra: dict[str, Any], override: str | None = None) -> str:
    return override or extra.get("api_version") or DEFAULT_API_VERSION


def base_url_of(connection: Any) -> str:
    """The API root as ``HttpHook._set_base_url`` builds it from the connection (host with or
    without a scheme, the schema field as the scheme, the port); a test holds the two equal."""
    host = connection.host or ""
    schema = connection.schema or "http"
    url = host if "://" in host else (f"{schema}://{host}" if host else f"{schema}://")
    return f"{url}:{connection.port}" if connection.port else url
