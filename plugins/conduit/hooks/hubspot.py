"""HubSpot CRM objects API: paging generators, search, retries that honour Retry-After.

Builds on the HTTP provider's ``HttpHook`` for base-URL handling, proxies, TLS and keep-alive, but
keeps ONE session per hook: ``HttpHook.run`` looks the connection up again for every request,
which a 10,000-page extract cannot afford.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from functools import cached_property
from typing import Any

import requests
import tenacity
from airflow.providers.http.hooks.http import HttpHook

from conduit.exceptions import CrmAuthError, CrmRequestError, CrmRetryableError

# Connection extras that configure this hook; HttpHook would otherwise send them as HTTP headers.
_HOOK_EXTRAS = ("api_version", "max_retries", "backoff_max")
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class _RetryableResponse(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None):
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{status}: {message}")


def objects_path(api_version: str, object_type: str) -> str:
    """``v3`` -> the legacy ``crm/v3/objects/...``; a date version -> ``crm/objects/2026-09/...``."""
    version = api_version.strip("/")
    if version.startswith("v"):
        return f"crm/{version}/objects/{object_type}"
    return f"crm/objects/{version}/{object_type}"


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def error_message(response: requests.Response) -> tuple[str, str | None]:
    """HubSpot error bodies carry ``message``, ``category`` and ``correlationId``."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason, None
    if not isinstance(body, dict):
        return str(body)[:500], None
    message = str(body.get("message") or response.reason)
    if body.get("policyName"):
        message += f" (policy {body['policyName']})"
    if body.get("correlationId"):
        message += f" [correlationId {body['correlationId']}]"
    return message, body.get("category")


class HubSpotHook(HttpHook):
    """Talks to HubSpot's CRM objects API (or the stand-in) with a private-app token / service key.

    Connection: host = base URL (``https://api.hubapi.com``), password = access token, extras
    ``api_version`` (``2026-09`` or ``v3``), ``timeout``, ``max_retries``, ``backoff_max``.
    """

    conn_name_attr = "hubspot_conn_id"
    default_conn_name = "hubspot_default"
    conn_type = "hubspot"
    hook_name = "HubSpot"

    def __init__(
        self,
        hubspot_conn_id: str = default_conn_name,
        *,
        api_version: str | None = None,
        max_retries: int | None = None,
        backoff_max: float | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(method="GET", http_conn_id=hubspot_conn_id)
        self.hubspot_conn_id = hubspot_conn_id
        self._api_version = api_version
        self._max_retries = max_retries
        self._backoff_max = backoff_max
        self._timeout = timeout
        self.requests_sent = 0
        self.retries = 0

    # --- connection ----------------------------------------------------------------------------

    @cached_property
    def connection(self):
        return self.get_connection(self.hubspot_conn_id)

    @cached_property
    def settings(self) -> dict[str, Any]:
        extra = self.connection.extra_dejson
        return {
            "api_version": self._api_version or extra.get("api_version") or "2026-09",
            "max_retries": int(self._max_retries if self._max_retries is not None else extra.get("max_retries", 6)),
            "backoff_max": float(self._backoff_max or extra.get("backoff_max", 30)),
            "timeout": float(self._timeout or extra.get("timeout", 30)),
        }

    @cached_property
    def session(self) -> requests.Session:
        token = self.connection.password
        if not token:
            raise CrmAuthError(401, "GET", self.hubspot_conn_id, "the connection has no access token (password)")
        session = super().get_conn(headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
        for key in _HOOK_EXTRAS:
            session.headers.pop(key, None)
        return session

    def get_conn(self, headers=None, extra_options=None) -> requests.Session:  # noqa: ARG002
        return self.session

    def objects_path(self, object_type: str) -> str:
        return objects_path(self.settings["api_version"], object_type)

    # --- requests ------------------------------------------------------------------------------

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Exponential backoff with full jitter, but never shorter than the server's Retry-After."""
        backoff = min(self.settings["backoff_max"], 0.25 * 2 ** (state.attempt_number - 1))
        wait = random.uniform(0, backoff)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _RetryableResponse) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        return wait

    def _send(self, method: str, path: str, params: Any, json: Any) -> Any:
        url = self.url_from_endpoint(path)
        self.requests_sent += 1
        response = self.session.request(method, url, params=params, json=json, timeout=self.settings["timeout"])
        if response.status_code < 400:
            return response.json() if response.content else None
        message, category = error_message(response)
        if response.status_code in RETRYABLE_STATUS:
            raise _RetryableResponse(response.status_code, message, retry_after_seconds(response))
        error = CrmAuthError if response.status_code in (401, 403) else CrmRequestError
        raise error(response.status_code, method, url, message, category)

    def request(self, method: str, path: str, *, params: Any = None, json: Any = None) -> Any:
        """One API call. 429/5xx/network errors are retried; other 4xx fail at once."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            self.retries += 1
            self.log.warning(
                "HubSpot %s %s failed (%s); retry %d/%d in %.1fs",
                method, path, state.outcome.exception(), state.attempt_number, self.settings["max_retries"],
                state.next_action.sleep if state.next_action else 0,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(
                (_RetryableResponse, requests.ConnectionError, requests.Timeout)
            ),
            stop=tenacity.stop_after_attempt(self.settings["max_retries"] + 1),
            wait=self._wait,
            before_sleep=before_sleep,
            reraise=True,
            sleep=time.sleep,
        )
        try:
            return retrying(self._send, method, path, params, json)
        except (_RetryableResponse, requests.ConnectionError, requests.Timeout) as exc:
            raise CrmRetryableError(
                f"HubSpot {method} {path} still failing after {self.settings['max_retries']} retries: {exc}"
            ) from exc

    # --- API -----------------------------------------------------------------------------------

    def iter_list_pages(
        self, object_type: str, properties: list[str], *, archived: bool = False, limit: int = 100
    ) -> Iterator[list[dict]]:
        """Every record of an object type, page by page (the list endpoint has no 10k cap)."""
        params: dict[str, Any] = {"limit": limit, "properties": ",".join(properties), "archived": str(archived).lower()}
        while True:
            body = self.request("GET", self.objects_path(object_type), params=params)
            yield body.get("results", [])
            after = ((body.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return
            params["after"] = after

    def search(self, object_type: str, body: dict) -> dict:
        return self.request("POST", f"{self.objects_path(object_type)}/search", json=body)

    def batch_read(self, object_type: str, ids: list[str], properties: list[str]) -> list[dict]:
        body = {"inputs": [{"id": i} for i in ids], "properties": properties}
        return self.request("POST", f"{self.objects_path(object_type)}/batch/read", json=body).get("results", [])

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.request("GET", self.objects_path("contacts"), params={"limit": 1})
        except Exception as exc:  # the UI shows the message
            return False, str(exc)
        return True, f"HubSpot API reachable ({self.settings['api_version']})"
