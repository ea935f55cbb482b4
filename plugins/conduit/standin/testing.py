"""Run the real stand-in in its own process for tests, demos and benchmarks.

    with run_standin(contacts=500, seed=7) as crm:
        requests.get(f"{crm.base_url}/crm/v3/objects/contacts", headers=crm.auth_headers)
        crm.admin.modify("1001", {"phone": "+49 30 123456"}, lastmodifieddate_ms=1_800_000_000_000)

Options are the server's command-line flags with underscores (``bad_emails=3``,
``search_lag_ms=500``, ``equal_timestamps=True``); the port is always a free one.
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


class AdminClient:
    """Thin ``requests`` wrapper over ``/_admin``. ``object_type`` defaults to contacts."""

    def __init__(self, base_url: str, timeout: float = 60):
        self.base_url = base_url
        self.timeout = timeout
        self.session = requests.Session()

    def _call(self, method: str, path: str, json: object = None) -> dict:
        reply = self.session.request(method, f"{self.base_url}/_admin{path}", json=json, timeout=self.timeout)
        if reply.status_code >= 400:
            raise RuntimeError(f"stand-in admin {method} {path} answered {reply.status_code}: {reply.text}")
        return reply.json()

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


def _argv(options: dict) -> list[str]:
    argv = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    return argv


@contextlib.contextmanager
def run_standin(*, token: str = "standin-token", contacts: int = 1000, companies: int = 50, seed: int = 1,
                startup_timeout: float = 120, **options) -> Iterator[StandinHandle]:
    """Start ``python -m conduit.standin.server`` on a free loopback port; always stop it on exit."""
    argv = [sys.executable, "-m", "conduit.standin.server", "--host", "127.0.0.1", "--port", "0",
            *_argv({"token": token, "contacts": contacts, "companies": companies, "seed": seed, **options})]
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            base_url = _wait_ready(process, stderr, startup_timeout)
            yield StandinHandle(base_url, token, AdminClient(base_url), process)
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
                    requests.get(f"{base_url}/_admin/clock", timeout=max(1.0, deadline - time.monotonic()))
                    return base_url
            if process.poll() is not None:
                break
    stderr.seek(0)
    detail = stderr.read().decode(errors="replace")[-4000:]
    state = f"exited with {process.returncode}" if process.poll() is not None else f"not ready after {timeout}s"
    raise RuntimeError(f"stand-in CRM {state}: {' '.join(process.args)}\n{detail}")
