"""Hooks for the services an order touches: inventory, payment, fraud scoring and shipping.

Each service has its own connection (``inventory_default``, ``payment_default``, ``fraud_default``,
``shipping_default``: host = base URL, password = an optional bearer token, extras ``timeout``,
``max_retries``, ``backoff_max``). Every mutating call carries an ``Idempotency-Key`` that the
caller derives from the saga and the step, so a retried request, a retried task or a rerun never
reserves, charges or ships twice. 429/5xx/timeouts are retried with :mod:`conduit.retries`
(full jitter, honouring ``Retry-After``); of the 5xx only 501 and 505, refusals before any work, are
not, and a 409 ``idempotency_key_in_use`` (the key's first request still being processed) is
(:func:`retryable_answer`). A business refusal (out of stock, declined, undeliverable) is a
:class:`~conduit.exceptions.BusinessRejection` and any other 4xx (or a 501/505) a
:class:`~conduit.exceptions.ServiceRequestError`, both failing at once. A call that runs out of
retries is a :class:`~conduit.exceptions.ServiceOutcomeUnknown` when any try may have been done
(:func:`may_have_been_done`), else a :class:`~conduit.exceptions.ServiceRetryableError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import Any

import requests
import urllib3
from airflow.providers.http.hooks.http import HttpHook

from conduit.exceptions import (
    BusinessRejection,
    ServiceOutcomeUnknown,
    ServiceRequestError,
    ServiceRetryableError,
    mask_secrets,
)
from conduit.retries import (
    RETRYABLE_STATUS,
    Backoff,
    RetryableResponse,
    call_with_retries,
    retry_after_seconds,
)

# HTTP statuses the order services use for "no, for a business reason" (the body names it).
BUSINESS_REFUSALS = frozenset({402, 409, 422})
# 5xx statuses that refuse the request before any work (RFC 9110 §15.6.2, §15.6.6): the method or
# the HTTP version is not supported. Nothing was done, and trying again cannot help.
REFUSED_BEFORE_WORK = frozenset({501, 505})
# the 409's error code of a request whose Idempotency-Key is that of one still being processed (the
# IETF Idempotency-Key draft's answer): no refusal, the first request may still be done
KEY_IN_USE = "idempotency_key_in_use"
_SETTINGS = ("timeout", "max_retries", "backoff_max")


class OrderServiceHook(HttpHook):
    """One order service over HTTP. Subclasses name the service and its calls."""

    service = "service"
    conn_type = "http"

    def __init__(self, conn_id: str | None = None, *, timeout: float | None = None,
                 max_retries: int | None = None) -> None:
        conn_id = conn_id or self.default_conn_name
        super().__init__(method="POST", http_conn_id=conn_id)
        self.service_conn_id = conn_id
        self._overrides = {"timeout": timeout, "max_retries": max_retries}
        self.retries = 0

    @cached_property
    def settings(self) -> dict[str, float]:
        extra = self.get_connection(self.service_conn_id).extra_dejson

        def pick(name: str, default: float) -> float:
            value = self._overrides.get(name)
            return float(value if value is not None else extra.get(name, default))

        return {"timeout": pick("timeout", 10.0), "max_retries": int(pick("max_retries", 5)),
                "backoff_max": pick("backoff_max", 10.0)}

    @cached_property
    def session(self) -> requests.Session:
        conn = self.get_connection(self.service_conn_id)
        headers = {"Accept": "application/json"}
        if conn.password:
            headers["Authorization"] = f"Bearer {conn.password}"
        session = super().get_conn(headers=headers)
        for name in _SETTINGS:  # HttpHook sends extras as headers
            session.headers.pop(name, None)
        return session

    @property
    def _secrets(self) -> tuple[str | None]:
        return (self.get_connection(self.service_conn_id).password,)

    def get_conn(self, headers=None, extra_options=None) -> requests.Session:  # noqa: ARG002
        return self.session

    def call(self, method: str, path: str, *, json: Any = None, idempotency_key: str | None = None,
             params: dict | None = None) -> Any:
        """One call, retried on 429/5xx/network errors with the same idempotency key."""
        url = self.url_from_endpoint(path)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}

        def send() -> Any:
            response = self.session.request(method, url, json=json, params=params, headers=headers,
                                            timeout=self.settings["timeout"])
            if response.status_code < 400:
                return response.json() if response.content else None
            message = _message(response, self._secrets)
            if retryable_answer(response.status_code, _error_code(response)):
                raise RetryableResponse(response.status_code, message,
                                        retry_after_seconds(response.headers.get("Retry-After")))
            where = f"{self.service} {method} {path}"
            if response.status_code in BUSINESS_REFUSALS:
                raise BusinessRejection(f"{where} refused ({response.status_code}): {message}")
            raise ServiceRequestError(f"{where} answered {response.status_code}: {message}")

        maybe_done = []  # failed tries the service may have done, or may still do

        def on_retry(attempt: int, exc: BaseException, wait: float) -> None:
            self.retries += 1
            if may_have_been_done(exc):
                maybe_done.append(exc)
            self.log.warning("%s %s %s failed (%s); retry %d in %.1fs", self.service, method, path, exc, attempt, wait)

        backoff = Backoff(max_retries=int(self.settings["max_retries"]), cap=self.settings["backoff_max"])
        try:
            return call_with_retries(send, backoff=backoff, on_retry=on_retry, retry_on=_RETRY_ON)
        except _RETRY_ON as exc:
            failed = ServiceOutcomeUnknown if maybe_done or may_have_been_done(exc) else ServiceRetryableError
            raise failed(f"{self.service} {method} {path} still failing after "
                         f"{backoff.max_retries} retries: {exc}") from exc

    def find(self, collection: str, idempotency_key: str) -> dict | None:
        """The object a create call with this key made, or None: resolves an ambiguous call."""
        results = self.call("GET", collection, params={"idempotency_key": idempotency_key})["results"]
        return results[0] if results else None

    def test_connection(self) -> tuple[bool, str]:
        """Reachable and the token accepted: any answer but 401/403/5xx (the root path may be 404)."""
        try:
            response = self.session.get(self.url_from_endpoint("/"), timeout=self.settings["timeout"])
        except requests.RequestException as exc:
            return False, f"{self.service} unreachable: {exc}"
        if response.status_code in (401, 403) or response.status_code >= 500:
            return False, f"{self.service} answered {response.status_code}: {_message(response, self._secrets)}"
        return True, f"{self.service} reachable"


def _error_code(response: requests.Response) -> str | None:
    """The ``error`` code of the service's JSON error body, or None."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None


def _message(response: requests.Response, secrets: Iterable[str | None] = ()) -> str:
    """The service's error text; ``secrets`` (the token) masked before it is cut short: an error
    page may echo the request's headers."""
    try:
        body = response.json()
    except ValueError:
        return mask_secrets(response.text, secrets)[:300] or response.reason
    if isinstance(body, dict):
        return mask_secrets(f"{body.get('error', '')}: {body.get('message', '')}", secrets).strip(": ")
    return mask_secrets(str(body), secrets)[:300]


class InventoryHook(OrderServiceHook):
    conn_name_attr = "inventory_conn_id"
    default_conn_name = "inventory_default"
    hook_name = "Conduit inventory service"
    service = "inventory"

    def reserve(self, order_id: str, items: list[dict], key: str) -> dict:
        return self.call("POST", "/inventory/reservations", json={"order_id": order_id, "items": items},
                         idempotency_key=key)

    def find_reservation(self, key: str) -> dict | None:
        return self.find("/inventory/reservations", key)

    def release(self, reservation_id: str, key: str) -> dict:
        return self.call("POST", f"/inventory/reservations/{reservation_id}/release", idempotency_key=key)


class PaymentHook(OrderServiceHook):
    conn_name_attr = "payment_conn_id"
    default_conn_name = "payment_default"
    hook_name = "Conduit payment service"
    service = "payment"

    def authorize(self, order_id: str, amount: float, currency: str, key: str) -> dict:
        return self.call("POST", "/payment/authorizations",
                         json={"order_id": order_id, "amount": amount, "currency": currency}, idempotency_key=key)

    def find_authorization(self, key: str) -> dict | None:
        return self.find("/payment/authorizations", key)

    def capture(self, authorization_id: str, key: str) -> dict:
        return self.call("POST", f"/payment/authorizations/{authorization_id}/capture", idempotency_key=key)

    def void(self, authorization_id: str, key: str) -> dict:
        return self.call("POST", f"/payment/authorizations/{authorization_id}/void", idempotency_key=key)

    def refund(self, authorization_id: str, key: str) -> dict:
        return self.call("POST", f"/payment/authorizations/{authorization_id}/refund", idempotency_key=key)


class FraudHook(OrderServiceHook):
    conn_name_attr = "fraud_conn_id"
    default_conn_name = "fraud_default"
    hook_name = "Conduit fraud scoring"
    service = "fraud"

    def score(self, order: dict, key: str) -> float:
        body = {"order_id": order["order_id"], "amount": order["amount"], "email": order.get("email"),
                "country": order.get("country")}
        return float(self.call("POST", "/fraud/scores", json=body, idempotency_key=key)["score"])


class ShippingHook(OrderServiceHook):
    conn_name_attr = "shipping_conn_id"
    default_conn_name = "shipping_default"
    hook_name = "Conduit shipping service"
    service = "shipping"

    def create_shipment(self, order_id: str, address: dict, key: str) -> dict:
        return self.call("POST", "/shipping/shipments", json={"order_id": order_id, "address": address},
                         idempotency_key=key)

    def find_shipment(self, key: str) -> dict | None:
        return self.find("/shipping/shipments", key)

    def shipment(self, shipment_id: str) -> dict:
        return self.call("GET", f"/shipping/shipments/{shipment_id}")

    def cancel_shipment(self, shipment_id: str, key: str) -> dict:
        return self.call("POST", f"/shipping/shipments/{shipment_id}/cancel", idempotency_key=key)


def retryable_answer(status: int, error: str | None = None) -> bool:
    """Whether an answer (its status and the body's ``error`` code) is tried again with its key,
    and counts as a try that may have been done. A 429 or 5xx of
    :data:`~conduit.retries.RETRYABLE_STATUS`, and any other 5xx but the refusals of
    :data:`REFUSED_BEFORE_WORK`: a 5xx says the server failed, not that it did nothing (507
    Insufficient Storage, temporary by RFC 4918 §11.5, may come after part of the work, as may a
    gateway's own 5xx after it passed the request on). And a 409 :data:`KEY_IN_USE`: the key's
    first request is still being processed, so there is no answer for the key yet, only a later one."""
    if status in RETRYABLE_STATUS or (500 <= status < 600 and status not in REFUSED_BEFORE_WORK):
        return True
    return status == 409 and error == KEY_IN_USE


def may_have_been_done(exc: BaseException) -> bool:
    """Whether a failed try may have been done by the service, or may still be: anything but a
    proof that nothing was done. A 429/5xx answer is no such proof (the service may have done the
    work and failed after it, a gateway may have given up on a service still working), nor is a
    request sent and never answered (a read timeout, a reply cut off, the connection dropped after
    the request went out). Only a try that never reached the service (no connection made) is one;
    a 4xx refusal is another, but it is not retried and never gets here."""
    if isinstance(exc, RetryableResponse):
        return True
    if isinstance(exc, requests.ConnectTimeout):
        return False  # no connection made: the request was never sent
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return not isinstance(reason, urllib3.exceptions.NewConnectionError)  # else: refused, or no such host
    return isinstance(exc, requests.RequestException)  # ReadTimeout, ChunkedEncodingError (a reply cut off)


# what a try may fail with and still be tried again with its key
_RETRY_ON = (RetryableResponse, requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
