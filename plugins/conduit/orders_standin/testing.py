"""Run the real order services in their own process for tests and demos.

    with run_order_services(ship_after_s=0.2) as services:
        requests.post(f"{services.base_url}/inventory/reservations", json={...},
                      headers={"Idempotency-Key": "order-1-reserve"})
        services.admin.faults(payment={"fail_next": 2, "mode": "429"})
        assert services.admin.ledger_count("inventory", "reserve", order_id="order-1") == 1

Options are the server's command-line flags with underscores (``ship_after_s=0.2``,
``default_stock=5``); the port is always a free one.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from conduit.standin.serving import AdminSession, server_process


class OrderServicesAdmin(AdminSession):
    """Thin ``requests`` wrapper over ``/_admin``."""

    what = "order services"

    def faults(self, **per_service: dict) -> dict:
        """Patch the faults, e.g. ``faults(payment={"decline_orders": ["o-1"]}, shipping={"fail_next": 1})``;
        keys not named keep their value."""
        return self._call("PUT", "/faults", per_service)

    def clear_faults(self) -> dict:
        return self._call("DELETE", "/faults")

    def ledger(self) -> dict[str, list[dict]]:
        return self._call("GET", "/ledger")

    def ledger_count(self, service: str, op: str, order_id: str | None = None) -> int:
        """How many times ``op`` really happened (for ``order_id``, when given)."""
        return sum(1 for entry in self.ledger()[service]
                   if entry["op"] == op and order_id in (None, entry["order_id"]))

    def requests(self) -> dict[str, dict[str, dict[str, int]]]:
        return self._call("GET", "/requests")

    def release_late(self) -> int:
        """Lets every late request held so far be done now; returns how many were waiting."""
        return self._call("POST", "/late/release")["released"]

    def late_waiting(self) -> int:
        """How many late requests are held and not done yet."""
        return self._call("GET", "/late")["waiting"]

    def reset(self) -> dict:
        return self._call("POST", "/reset")


@dataclass
class OrderServicesHandle:
    base_url: str
    admin: OrderServicesAdmin
    process: subprocess.Popen


@contextlib.contextmanager
def run_order_services(*, startup_timeout: float = 60, **options) -> Iterator[OrderServicesHandle]:
    """Start ``python -m conduit.orders_standin.server`` on a free loopback port; always stop it on exit."""
    with server_process("conduit.orders_standin.server", options, what="order services", probe="/_admin/faults",
                        startup_timeout=startup_timeout) as (base_url, process):
        yield OrderServicesHandle(base_url, OrderServicesAdmin(base_url), process)
