"""Run the real stand-in in its own process for tests, demos and benchmarks.

    with run_standin(contacts=500, seed=7) as crm:
        requests.get(f"{crm.base_url}/crm/v3/objects/contacts", headers=crm.auth_headers)
        crm.admin.modify("1001", {"phone": "+49 30 123456"}, lastmodifieddate_ms=1_800_000_000_000)

Options are the server's command-line flags with underscores (``bad_emails=3``,
``search_lag_ms=500``, ``equal_timestamps=True``); the port is always a free one.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from conduit.standin.serving import AdminSession, server_process


class AdminClient(AdminSession):
    """Thin ``requests`` wrapper over ``/_admin``. ``object_type`` defaults to contacts."""

    what = "stand-in"

    def create(self, properties: dict, *, createdate_ms: int | None = None, lastmodifieddate_ms: int | None = None,
               object_type: str = "contacts") -> dict:
        return self._call("POST", f"/{object_type}", {"properties": properties, "createdate_ms": createdate_ms,
                                                      "lastmodifieddate_ms": lastmodifieddate_ms})

    def modify(self, record_id: str | int, properties: dict, lastmodifieddate_ms: int | None = None,
               *, object_type: str = "contacts") -> dict:
        return self._call("PATCH", f"/{object_type}/{record_id}",
                          {"properties": properties, "lastmodifieddate_ms": lastmodifieddate_ms})

    def archive(self, record_id: str | int, *, object_type: str = "contacts") -> dict:
        return self._call("POST", f"/{object_type}/{record_id}/archive")

    def restore(self, record_id: str | int, *, object_type: str = "contacts") -> dict:
        return self._call("POST", f"/{object_type}/{record_id}/restore")

    def delete(self, record_id: str | int, *, object_type: str = "contacts") -> dict:
        """GDPR delete: gone for good, never listed as archived."""
        return self._call("DELETE", f"/{object_type}/{record_id}")

    def merge(self, primary_id: str | int, merged_id: str | int, *, object_type: str = "contacts") -> dict:
        """Merge ``merged_id`` into ``primary_id``: the primary survives (returned), the other is gone."""
        return self._call("POST", f"/{object_type}/{primary_id}/merge", {"merged": merged_id})

    def bulk_modify(self, count: int | None = None, *, ids: list | None = None, properties: dict | None = None,
                    lastmodifieddate_ms: int | None = None, seed: int | None = None,
                    object_type: str = "contacts") -> dict:
        """Touch ``count`` random live records (or ``ids``); returns ``{"ids", "lastmodifieddate_ms"}``."""
        return self._call("POST", f"/{object_type}/bulk_modify", {
            "count": count, "ids": ids, "properties": properties or {},
            "lastmodifieddate_ms": lastmodifieddate_ms, "seed": seed})

    def faults(self, **faults) -> dict:
        """Replace the active faults, e.g. ``faults(rate_limit={"burst": 2}, search_lag_ms=500)``."""
        return self._call("PUT", "/faults", faults)

    def clear_faults(self) -> dict:
        return self._call("DELETE", "/faults")

    def stats(self) -> dict:
        return self._call("GET", "/stats")

    def enforce_rate_limits(self, **limits) -> dict:
        """Enforce HubSpot's limits from now on, with fresh windows and nothing used today
        (``interval_max``, ``interval_ms``, ``search_per_second``, ``daily_max`` override the tier's)."""
        return self._call("PUT", "/rate_limits", {"enforce": True, **limits})

    def rate_limits(self) -> dict:
        """The limiter's state: its limits, ``daily_used`` and ``refused`` by policy."""
        return self._call("GET", "/rate_limits")

    def reset(self, **overrides) -> dict:
        """Back to the seeded data; ``seed``/``contacts``/``companies``/``bad_emails`` may change it."""
        return self._call("POST", "/reset", overrides or None)

    def clock_ms(self) -> int:
        return self._call("GET", "/clock")["now_ms"]

    def subscribe_webhooks(self, target_url: str, secret: str, **extra) -> dict:
        return self._call("PUT", "/webhooks", {"target_url": target_url, "secret": secret, **extra})

    def unsubscribe_webhooks(self) -> dict:
        return self._call("DELETE", "/webhooks")


@dataclass
class StandinHandle:
    base_url: str
    token: str
    admin: AdminClient
    process: subprocess.Popen

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextlib.contextmanager
def run_standin(*, token: str = "standin-token", contacts: int = 1000, companies: int = 50, seed: int = 1,
                startup_timeout: float = 120, **options) -> Iterator[StandinHandle]:
    """Start ``python -m conduit.standin.server`` on a free loopback port; always stop it on exit."""
    options = {"token": token, "contacts": contacts, "companies": companies, "seed": seed, **options}
    with server_process("conduit.standin.server", options, what="stand-in CRM", probe="/_admin/clock",
                        startup_timeout=startup_timeout) as (base_url, process):
        yield StandinHandle(base_url, token, AdminClient(base_url), process)
