"""Which failed tries of an order service call may have been done (or may still be): everything but
a proof that nothing was done. A call that runs out of retries with any such try is a
``ServiceOutcomeUnknown``, and a saga's compensation repeats that action with its key before it
undoes it; a call none of whose tries reached the service stays a ``ServiceRetryableError``."""

from __future__ import annotations

import json
import socket
import threading

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from conduit.exceptions import ServiceOutcomeUnknown, ServiceRetryableError
from conduit.hooks.order_services import PaymentHook, may_have_been_done
from conduit.retries import RetryableResponse

BASE = "http://payment.test"
AUTHORIZE = f"{BASE}/payment/authorizations"


def refused() -> requests.ConnectionError:
    """What requests raises when nothing listens on the port (the request was never sent)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        requests.post(f"http://127.0.0.1:{port}/x", json={}, timeout=2)
    except requests.ConnectionError as exc:
        return exc
    raise AssertionError("a closed port answered")


def after_sending(reply: bytes) -> requests.RequestException:
    """What requests raises when the service read the request, then sent ``reply`` (maybe nothing)
    and closed the connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        requests.post(f"http://127.0.0.1:{server.getsockname()[1]}/x", json={}, timeout=2)
    except requests.RequestException as exc:
        return exc
    finally:
        thread.join(5)
        server.close()
    raise AssertionError("the cut reply was read as whole")


@pytest.mark.parametrize(("make", "maybe"), [
    pytest.param(lambda: RetryableResponse(503, "unavailable"), True, id="503: done, then failed, or still queued"),
    pytest.param(lambda: RetryableResponse(500, "internal error"), True, id="500"),
    pytest.param(lambda: RetryableResponse(502, "bad gateway"), True, id="502: a gateway gave up"),
    pytest.param(lambda: RetryableResponse(504, "gateway timeout"), True, id="504"),
    pytest.param(lambda: RetryableResponse(429, "rate limited", 1.0), True, id="429: no proof either"),
    pytest.param(lambda: requests.ReadTimeout("read timed out"), True, id="read timeout"),
    pytest.param(lambda: after_sending(b""), True, id="connection closed with no answer"),
    pytest.param(lambda: after_sending(b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{\"a\":"), True,
                 id="reply cut off"),
    pytest.param(refused, False, id="connection refused: never sent"),
    pytest.param(lambda: requests.ConnectionError(MaxRetryError(None, "/x", NewConnectionError(None, "refused"))),
                 False, id="no connection (built)"),
    pytest.param(lambda: requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError())),
                 True, id="connection reset after sending (built)"),
    pytest.param(lambda: requests.ConnectTimeout("connect timed out"), False, id="connect timeout: never sent"),
    pytest.param(lambda: ValueError("not a request failure"), False, id="not a service failure"),
])
def test_may_have_been_done(make, maybe):
    assert may_have_been_done(make()) is maybe


class Tries:
    """A session that answers each request with the next of ``outcomes`` (a status, or an
    exception to raise) and keeps the Idempotency-Key each request carried."""

    def __init__(self, *outcomes):
        self.outcomes, self.keys = list(outcomes), []

    def request(self, method, url, *, headers, **_):
        self.keys.append(headers.get("Idempotency-Key"))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        response = requests.Response()
        response.status_code, response.url = outcome, url
        body = {"authorization_id": "auth-1", "status": "authorized"} if outcome < 400 else \
            {"error": "unavailable", "message": "try later"}
        response._content = json.dumps(body).encode()
        return response


@pytest.fixture
def payment(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PAYMENT_DEFAULT", json.dumps({
        "conn_type": "http", "host": BASE, "extra": {"timeout": 1, "max_retries": 1, "backoff_max": 0}}))
    return PaymentHook()


def with_tries(hook: PaymentHook, *outcomes) -> Tries:
    hook.__dict__["session"] = tries = Tries(*outcomes)
    return tries


def no_connection() -> requests.ConnectionError:
    return requests.ConnectionError(MaxRetryError(None, AUTHORIZE, NewConnectionError(None, "refused")))


@pytest.mark.parametrize(("outcomes", "raised"), [
    pytest.param([503, 503], ServiceOutcomeUnknown, id="5xx every try"),
    pytest.param([429, 502], ServiceOutcomeUnknown, id="429 then 502"),
    pytest.param([503, no_connection()], ServiceOutcomeUnknown, id="a 503, then the service gone"),
    pytest.param([no_connection(), 503], ServiceOutcomeUnknown, id="the final try's 503"),
    pytest.param([requests.ReadTimeout("slow"), no_connection()], ServiceOutcomeUnknown, id="a read timeout first"),
    pytest.param([no_connection(), no_connection()], ServiceRetryableError, id="never reached"),
])
def test_a_call_out_of_retries_is_an_outcome_unknown_unless_no_try_reached_the_service(payment, outcomes, raised):
    tries = with_tries(payment, *outcomes)
    with pytest.raises(ServiceRetryableError, match="still failing after 1 retries") as failed:
        payment.authorize("O-1", 10.0, "EUR", "order-O-1:payment")
    assert type(failed.value) is raised
    assert tries.keys == ["order-O-1:payment"] * 2


def test_a_reply_cut_off_is_retried_with_the_same_key(payment):
    tries = with_tries(payment, requests.exceptions.ChunkedEncodingError("Connection broken"), 201)
    assert payment.authorize("O-1", 10.0, "EUR", "order-O-1:payment")["authorization_id"] == "auth-1"
    assert tries.keys == ["order-O-1:payment"] * 2 and payment.retries == 1


@pytest.mark.parametrize(("status", "retried"), [
    (429, True), (500, True), (502, True), (503, True), (504, True),
    (507, True),  # Insufficient Storage: temporary, and may come after part of the work
    (508, True), (524, True),  # any other 5xx: the server failed, which proves nothing was not done
    (501, False), (505, False),  # refused before any work: method / HTTP version not supported
    (400, False), (402, False), (404, False), (409, False), (422, False), (200, False), (600, False),
])
def test_which_statuses_are_retried_and_may_have_been_done(status, retried):
    from conduit.hooks.order_services import retryable_answer

    assert retryable_answer(status) is retried


@pytest.mark.parametrize(("status", "error", "retried"), [
    (409, "idempotency_key_in_use", True),  # the key's first request is still being processed
    (409, "out_of_stock", False), (409, "invalid_state", False), (409, None, False),  # refusals
    (422, "idempotency_key_in_use", False),
])
def test_a_409_key_in_use_is_tried_again_other_409s_are_refusals(status, error, retried):
    from conduit.hooks.order_services import retryable_answer

    assert retryable_answer(status, error) is retried
