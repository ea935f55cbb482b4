"""HubSpot CRM objects API: paging generators, search, retries that honour Retry-After.

Builds on the HTTP provider's ``HttpHook`` for base-URL handling, proxies, TLS and keep-alive, but
keeps ONE session per hook: ``HttpHook.run`` looks the connection up again for every request,
which a 10,000-page extract cannot afford. For the same reason the environment's proxy and CA
settings are resolved once per session, not on every request, and bodies are encoded and decoded
with ``msgspec``. The extract's calls (:meth:`HubSpotHook.search_page`,
:meth:`HubSpotHook.iter_list_record_pages`, :meth:`HubSpotHook.batch_read_page`) decode a page
straight into columns (:mod:`conduit.sources.hubspot.pages`); ``search``, ``iter_list_pages`` and
``batch_read`` return the plain JSON.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from typing import Any

import msgspec
import requests
from airflow.providers.http.hooks.http import HttpHook

from conduit.exceptions import (
    CrmAuthError,
    CrmConfigError,
    CrmDailyLimitReached,
    CrmRequestError,
    CrmRetryableError,
    mask_secrets,
)
from conduit.pipeline.pages import RecordPage
from conduit.retries import (
    RETRYABLE_STATUS,
    Backoff,
    RetryableResponse,
    call_with_retries,
    retry_after_seconds,
)
from conduit.sources.hubspot.address import api_version_of, objects_path  # noqa: F401 - objects_path: the hook's API
from conduit.sources.hubspot.budget import EXTRA_FIELDS as _BUDGET_EXTRAS
from conduit.sources.hubspot.budget import Budget
from conduit.sources.hubspot.pages import page_decoder

# HubSpot's other "try again" answers (contract §1.9): 423 Locked (wait at least 2 s), 477 migration
# in progress (with Retry-After), 524 origin timeout; without them one such answer failed the task.
HUBSPOT_RETRYABLE_STATUS = RETRYABLE_STATUS | {423, 477, 524}
LOCKED_MIN_WAIT_S = 2.0
# A 429 without Retry-After (HubSpot does not promise one, contract §1.8) waits for its window to
# pass: the search "secondly" window, else the rolling interval (HubSpot's 10 s without a budget).
SECONDLY_WAIT_S = 1.0
HUBSPOT_INTERVAL_S = 10.0

# Connection extras that configure this hook; HttpHook would otherwise send them as HTTP headers.
_HOOK_EXTRAS = ("api_version", "max_retries", "backoff_max", *_BUDGET_EXTRAS)
_JSON_BODY = {"Content-Type": "application/json"}
# What a request retries: 429/5xx answers and network failures (refused, reset, timed out).
# ChunkedEncodingError: a body cut off mid-transfer, as the session raises it.
_RETRY_ON = (RetryableResponse, requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def error_message(response: requests.Response, secrets: Iterable[str | None] = ()) -> tuple[str, str | None]:
    """HubSpot error bodies carry ``message``, ``category`` and ``correlationId``. ``secrets`` (the
    token) are masked, before the text is cut short: an error page may echo the request's headers."""
    try:
        body = response.json()
    except ValueError:
        return mask_secrets(response.text, secrets)[:500] or response.reason, None
    if not isinstance(body, dict):
        return mask_secrets(str(body), secrets)[:500], None
    message = str(body.get("message") or response.reason)
    if body.get("policyName"):
        message += f" (policy {body['policyName']})"
    if body.get("correlationId"):
        message += f" [correlationId {body['correlationId']}]"
    category = body.get("category")
    return mask_secrets(message, secrets), None if category is None else mask_secrets(str(category), secrets)


def _policy_name(response: requests.Response) -> str | None:
    """The ``policyName`` of a 429's body (``DAILY``, ``TEN_SECONDLY_ROLLING``, ``SECONDLY``)."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("policyName") if isinstance(body, dict) else None


def _cut_short(exc: Exception) -> bool:
    """A body that was valid JSON until it stopped (msgspec says so only in its message): what a
    proxy or server that dies mid-reply sends, unlike a page that is not JSON or has the wrong shape."""
    return (isinstance(exc, msgspec.DecodeError) and not isinstance(exc, msgspec.ValidationError)
            and str(exc).startswith("Input data was truncated"))


class HubSpotHook(HttpHook):
    """Talks to HubSpot's CRM objects API (or the stand-in) with a private-app token / service key.

    Connection: host = base URL (``https://api.hubapi.com``), password = access token, extras
    ``api_version`` (``2026-09`` or ``v3``), ``timeout``, ``max_retries``, ``backoff_max``, and the
    account's request budget (:mod:`conduit.sources.hubspot.budget`): ``rate_limit_tier`` or
    explicit ``rate_limit_*`` numbers, and ``budget_redis_conn_id`` (a Redis connection that every
    task calling the account shares; without it each process paces itself alone).

    Calls may come from several threads at once (a search item's concurrent streams): the session's
    connection pool is thread-safe, and the counters are kept under a lock.
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
        self._round_trips: deque[float] = deque(maxlen=15)
        self._counting = threading.Lock()

    # --- connection ----------------------------------------------------------------------------

    @cached_property
    def connection(self):
        return self.get_connection(self.hubspot_conn_id)

    @cached_property
    def settings(self) -> dict[str, Any]:
        extra = self.connection.extra_dejson
        return {
            "api_version": api_version_of(extra, self._api_version),
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
        if session.trust_env:
            # requests would re-read the proxy and CA-bundle variables (and ~/.netrc) on every call;
            # every call goes to the one base URL, so resolve them once. Proxies from the environment
            # still win over the connection's, as in requests. No netrc: the token is the credential.
            env = session.merge_environment_settings(self.url_from_endpoint(""), {}, None, None, None)
            session.proxies, session.verify, session.cert = env["proxies"], env["verify"], env["cert"]
            session.trust_env = False
        return session

    @cached_property
    def backoff(self) -> Backoff:
        """Waits between the retries of one request (full jitter, Retry-After as the floor)."""
        return Backoff(max_retries=self.settings["max_retries"], cap=self.settings["backoff_max"])

    @cached_property
    def budget(self) -> Budget | None:
        """The account's request budget (None: the connection sets no limits, so no pacing)."""
        from conduit.sources.hubspot.budget import LocalBudget, RedisBudget, account_key, limits_from_extras

        connection = self.connection
        extra = connection.extra_dejson
        self._set_base_url(connection)
        try:
            limits = limits_from_extras(extra, self.base_url)
        except ValueError as exc:
            raise CrmConfigError(f"connection {self.hubspot_conn_id!r}: {exc}") from None
        if limits is None:
            return None
        redis_conn_id = extra.get("budget_redis_conn_id")
        if not redis_conn_id:
            self.log.info("HubSpot request budget %s, kept in this process only (no budget_redis_conn_id)", limits)
            return LocalBudget(limits)
        self.log.info("HubSpot request budget %s, shared in Redis (%s)", limits, redis_conn_id)
        return RedisBudget(limits, _redis_client(self.get_connection(redis_conn_id)),
                           account_key(self.base_url, connection.password or ""))

    def get_conn(self, headers=None, extra_options=None) -> requests.Session:  # noqa: ARG002
        return self.session

    def objects_path(self, object_type: str) -> str:
        return objects_path(self.settings["api_version"], object_type)

    # --- requests ------------------------------------------------------------------------------

    def _send(self, method: str, path: str, params: Any, json: Any, decode: Callable[[bytes], Any] | None) -> Any:
        url = self.url_from_endpoint(path)
        data = None if json is None else msgspec.json.encode(json)
        headers = _JSON_BODY if data is not None else None
        budget = self.budget
        search = path.endswith("/search")
        sent_ms = None
        if budget is not None:  # pace: wait for a slot in the account's windows (every try counts)
            sent_ms = budget.acquire(search=search)
        with self._counting:
            self.requests_sent += 1
        started = time.monotonic()
        response = self.session.request(method, url, params=params, data=data, headers=headers,
                                        timeout=self.settings["timeout"])
        self._observe(response, time.monotonic() - started, search, sent_ms)
        if response.status_code < 400:
            content = response.content
            if not content:
                return None
            try:
                return decode(content) if decode is not None else msgspec.json.decode(content)
            except (msgspec.DecodeError, ValueError) as exc:  # not JSON, or not the shape the API promises
                if _cut_short(exc):  # the transport's fault, not the request's: retried like a dropped connection
                    raise RetryableResponse(response.status_code, f"response body cut short: {exc}") from None
                raise CrmRequestError(response.status_code, method, url, f"unreadable response body: {exc}") from None
        message, category = error_message(response, secrets=(self.connection.password,))
        if response.status_code == 429 and _policy_name(response) == "DAILY":  # waiting hours is no retry
            raise self._daily_limit_reached(response)
        if response.status_code in HUBSPOT_RETRYABLE_STATUS:
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            if response.status_code == 423:
                wait = max(wait or 0.0, LOCKED_MIN_WAIT_S)
            elif response.status_code == 429 and wait is None:
                wait = self._rate_limit_window_s(_policy_name(response), search)
            raise RetryableResponse(response.status_code, message, wait)
        error = CrmAuthError if response.status_code in (401, 403) else CrmRequestError
        raise error(response.status_code, method, url, message, category)

    @property
    def latency_s(self) -> float:
        """The median round trip of the last calls (seconds; 0 before any): how many calls a reader
        must keep in flight. The median, so that the first call's connection set-up does not count."""
        with self._counting:
            return statistics.median(self._round_trips) if self._round_trips else 0.0

    def _observe(self, response: requests.Response, elapsed_s: float, search: bool, sent_ms: int | None) -> None:
        """The round trip into :attr:`latency_s`, the rate-limit headers into the budget."""
        with self._counting:
            self._round_trips.append(elapsed_s)
        if self.budget is not None:
            self.budget.observe(response.headers, search=search, sent_ms=sent_ms)

    def _rate_limit_window_s(self, policy: str | None, search: bool) -> float:
        """How long a 429 without Retry-After waits at least: until its window has passed (the
        jittered backoff alone gives up after seconds, before a full 10 s window frees a slot)."""
        if policy == "SECONDLY" or (policy is None and search):
            return SECONDLY_WAIT_S
        if self.budget is None:
            return HUBSPOT_INTERVAL_S
        limits = self.budget.limits
        return (limits.interval_ms + limits.margin_ms) / 1000

    def _daily_limit_reached(self, response: requests.Response) -> CrmDailyLimitReached:
        budget = self.budget
        limit = budget.limits.daily_max if budget is not None else None
        try:
            limit = int(response.headers["X-HubSpot-RateLimit-Daily"])
        except (KeyError, ValueError):
            pass
        if budget is not None:
            return CrmDailyLimitReached(limit, 0, budget.resets_at())
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        resets = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + wait)) if wait is not None
                  else "midnight in the HubSpot account's time zone")
        return CrmDailyLimitReached(limit, 0, resets)

    def request(self, method: str, path: str, *, params: Any = None, json: Any = None,
                decode: Callable[[bytes], Any] | None = None) -> Any:
        """One API call. 429/5xx/network errors and bodies cut short are retried; other 4xx fail at
        once. The body of a success is parsed JSON, or ``decode(body bytes)``; any other unreadable
        body (not JSON, or JSON of another shape) is a ``CrmRequestError``."""

        def log_retry(attempt: int, exc: BaseException, wait: float) -> None:
            with self._counting:
                self.retries += 1
            self.log.warning("HubSpot %s %s failed (%s); retry %d/%d in %.1fs",
                             method, path, exc, attempt, self.backoff.max_retries, wait)

        try:
            return call_with_retries(lambda: self._send(method, path, params, json, decode),
                                     backoff=self.backoff, retry_on=_RETRY_ON, on_retry=log_retry)
        except _RETRY_ON as exc:
            raise CrmRetryableError(
                f"HubSpot {method} {path} still failing after {self.backoff.max_retries} retries: {exc}"
            ) from exc

    # --- API -----------------------------------------------------------------------------------

    def iter_list_pages(
        self, object_type: str, properties: list[str], *, archived: bool = False, limit: int = 100
    ) -> Iterator[list[dict]]:
        """Every record of an object type, page by page (the list endpoint has no 10k cap)."""
        for body in self._list_bodies(object_type, properties, archived, limit, decode=None):
            yield body.get("results", [])

    def _list_bodies(self, object_type: str, properties: list[str], archived: bool, limit: int,
                     decode: Callable[[bytes], Any] | None) -> Iterator[Any]:
        """The list endpoint's response bodies, following ``paging.next.after``."""
        params: dict[str, Any] = {"limit": limit, "properties": ",".join(properties), "archived": str(archived).lower()}
        while True:
            body = self.request("GET", self.objects_path(object_type), params=params, decode=decode)
            yield body
            after = (body.after if isinstance(body, RecordPage)
                     else ((body.get("paging") or {}).get("next") or {}).get("after"))
            if not after:
                return
            params["after"] = after

    def search(self, object_type: str, body: dict) -> dict:
        return self.request("POST", f"{self.objects_path(object_type)}/search", json=body)

    def batch_read(self, object_type: str, ids: list[str], properties: list[str]) -> list[dict]:
        body = {"inputs": [{"id": i} for i in ids], "properties": properties}
        return self.request("POST", f"{self.objects_path(object_type)}/batch/read", json=body).get("results", [])

    # --- API, column-wise (the extract) ---------------------------------------------------------

    def search_page(self, object_type: str, body: dict) -> RecordPage:
        """One search call as a :class:`RecordPage` of the body's ``properties`` (with ``total``
        and the ``after`` of the next page)."""
        decoder = page_decoder(tuple(body.get("properties") or ()))
        return self.request("POST", f"{self.objects_path(object_type)}/search", json=body, decode=decoder.decode)

    def iter_list_record_pages(
        self, object_type: str, properties: list[str], *, archived: bool = False, limit: int = 100
    ) -> Iterator[RecordPage]:
        """:meth:`iter_list_pages` as :class:`RecordPage` s."""
        yield from self._list_bodies(object_type, properties, archived, limit, decode=page_decoder(tuple(properties)).decode)

    def batch_read_page(self, object_type: str, ids: list[str], properties: list[str]) -> RecordPage:
        """:meth:`batch_read` as a :class:`RecordPage` (ids the CRM does not have are left out)."""
        body = {"inputs": [{"id": i} for i in ids], "properties": properties}
        return self.request("POST", f"{self.objects_path(object_type)}/batch/read", json=body,
                            decode=page_decoder(tuple(properties)).decode)

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.request("GET", self.objects_path("contacts"), params={"limit": 1})
        except Exception as exc:  # the UI shows the message
            return False, str(exc)
        return True, f"HubSpot API reachable ({self.settings['api_version']})"


def _redis_client(connection: Any) -> Any:
    """A Redis client for an Airflow connection (``redis://host:port/db``; the db also from the
    ``db`` extra)."""
    import redis

    db = connection.extra_dejson.get("db", connection.schema or 0)
    return redis.Redis(host=connection.host or "127.0.0.1", port=connection.port or 6379, db=int(db or 0),
                       username=connection.login or None, password=connection.password or None,
                       socket_timeout=10, socket_connect_timeout=10)
