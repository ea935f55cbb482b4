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
import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import requests

_READY = re.compile(r"ready at (http://\S+)")


class OrderServicesAdmin:
    """Thin ``requests`` wrapper over ``/_admin``."""

    def __init__(self, base_url: str, timeout: float = 30):
        self.base_url = base_url
        self.timeout = timeout
        self.session = requests.Session()

    def _call(self, method: str, path: str, json: object = None) -> dict:
        reply = self.session.request(method, f"{self.base_url}/_admin{path}", json=json, timeout=self.timeout)
        if reply.status_code >= 400:
            raise RuntimeError(f"order services admin {method} {path} answered {reply.status_code}: {reply.text}")
        return reply.json()

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

    def reset(self) -> dict:
        return self._call("POST", "/reset")


@dataclass
class OrderServicesHandle:
    base_url: str
    admin: OrderServicesAdmin
    process: subprocess.Popen


def _argv(options: dict) -> list[str]:
    argv = []
    for name, value in options.items():
        if value is not None:
            argv += ["--" + name.replace("_", "-"), str(value)]
    return argv


@contextlib.contextmanager
def run_order_services(*, startup_timeout: float = 60, **options) -> Iterator[OrderServicesHandle]:
    """Start ``python -m conduit.orders_standin.server`` on a free loopback port; always stop it on exit."""
    argv = [sys.executable, "-m", "conduit.orders_standin.server", "--host", "127.0.0.1", "--port", "0",
            *_argv(options)]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            base_url = _wait_ready(process, stderr, startup_timeout)
            yield OrderServicesHandle(base_url, OrderServicesAdmin(base_url), process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()


def _wait_ready(process: subprocess.Popen, stderr, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.2):
                line = process.stdout.readline()
                match = _READY.search(line)
                if match:
                    base_url = match.group(1)
                    requests.get(f"{base_url}/_admin/faults", timeout=max(1.0, deadline - time.monotonic()))
                    return base_url
            if process.poll() is not None:
                break
    stderr.seek(0)
    detail = stderr.read().decode(errors="replace")[-4000:]
    state = f"exited with {process.returncode}" if process.poll() is not None else f"not ready after {timeout}s"
    raise RuntimeError(f"order services {state}: {' '.join(process.args)}\n{detail}")
