"""The order services' hooks against the real stand-in over HTTP: idempotency keys, retries with
backoff that honour Retry-After, business refusals and bad requests failing at once."""

from __future__ import annotations

import json
import time

import pytest

from conduit.exceptions import (
    BusinessRejection,
    ServiceOutcomeUnknown,
    ServiceRequestError,
    ServiceRetryableError,
)
from conduit.hooks.order_services import InventoryHook, PaymentHook, ShippingHook
from conduit.hooks.saga_log import SagaLogHook

ITEMS = [{"sku": "SKU-1", "quantity": 1}]


@pytest.fixture
def services(services, airflow_db, monkeypatch):
    services.admin.reset()
    for name in ("inventory", "payment", "shipping"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}_DEFAULT", json.dumps({
            "conn_type": "http", "host": services.base_url,
            "extra": {"timeout": 1, "max_retries": 3, "backoff_max": 0.05}}))
    return services


def test_a_retried_call_with_the_same_key_acts_once(services):
    hook = InventoryHook()
    first = hook.reserve("O-1", ITEMS, "order-O-1:inventory")
    again = hook.reserve("O-1", ITEMS, "order-O-1:inventory")
    assert again == first and services.admin.ledger_count("inventory", "reserve", "O-1") == 1
    assert hook.find_reservation("order-O-1:inventory") == first
    assert hook.find_reservation("order-O-1:never") is None


def test_a_lost_answer_is_retried_with_the_same_key_and_gets_the_first_answer(services):
    services.admin.faults(payment={"fail_next": 1, "mode": "timeout", "delay_s": 3, "operation": "authorize"})
    hook = PaymentHook()
    authorization = hook.authorize("O-2", 50.0, "EUR", "order-O-2:payment")  # times out after 1 s, retried
    assert hook.retries == 1 and authorization["status"] == "authorized"
    assert services.admin.ledger_count("payment", "authorize", "O-2") == 1


def test_429_waits_at_least_retry_after(services):
    services.admin.faults(inventory={"fail_next": 1, "mode": "429", "retry_after_s": 1})
    started = time.monotonic()
    InventoryHook().reserve("O-3", ITEMS, "order-O-3:inventory")
    assert time.monotonic() - started >= 1.0  # the backoff alone would be at most 0.05 s


def test_5xx_storm_runs_out_of_retries_with_an_outcome_unknown(services):
    """A 503 is no proof nothing was done: the call's outcome is unknown (a saga repeats it before
    undoing it), though still retryable."""
    services.admin.faults(shipping={"fail_next": 10, "mode": "5xx"})
    with pytest.raises(ServiceOutcomeUnknown, match="still failing after 3 retries: 503"):
        ShippingHook().create_shipment("O-4", {"name": "A", "line1": "B", "city": "C", "country": "DE"},
                                       "order-O-4:shipping")
    assert services.admin.requests()["shipping"]["create"]["received"] == 4


def test_a_5xx_after_the_effect_is_an_outcome_unknown_and_the_repeat_replays_it(services):
    services.admin.faults(payment={"fail_next": 4, "mode": "5xx_after_effect", "operation": "authorize"})
    hook = PaymentHook()
    with pytest.raises(ServiceOutcomeUnknown, match="503"):
        hook.authorize("O-7", 10.0, "EUR", "order-O-7:payment")
    assert services.admin.ledger_count("payment", "authorize", "O-7") == 1  # done by the first try
    repeat = hook.authorize("O-7", 10.0, "EUR", "order-O-7:payment")
    assert repeat == hook.find_authorization("order-O-7:payment")
    assert services.admin.ledger_count("payment", "authorize", "O-7") == 1


def test_a_service_never_reached_is_a_plain_retryable_error(services, monkeypatch):
    """No try was sent (connection refused): nothing was done, and a saga does not repeat it."""
    monkeypatch.setenv("AIRFLOW_CONN_PAYMENT_DEFAULT", json.dumps({
        "conn_type": "http", "host": "http://127.0.0.1:9", "extra": {"timeout": 1, "max_retries": 1,
                                                                     "backoff_max": 0.01}}))
    with pytest.raises(ServiceRetryableError, match="still failing after 1 retries") as failed:
        PaymentHook().authorize("O-8", 10.0, "EUR", "order-O-8:payment")
    assert type(failed.value) is ServiceRetryableError


def test_business_refusal_and_bad_request_fail_at_once(services):
    services.admin.faults(payment={"decline_orders": ["O-5"]})
    with pytest.raises(BusinessRejection, match="402.*declined"):
        PaymentHook().authorize("O-5", 10.0, "EUR", "order-O-5:payment")
    with pytest.raises(ServiceRequestError, match="400"):
        InventoryHook().reserve("O-6", [{"sku": "SKU-1", "quantity": 0}], "order-O-6:inventory")
    assert services.admin.requests()["payment"]["authorize"]["received"] == 1


def test_connection_checks(services, monkeypatch):
    assert InventoryHook().test_connection() == (True, "inventory reachable")
    monkeypatch.setenv("AIRFLOW_CONN_PAYMENT_DEFAULT", json.dumps({"conn_type": "http", "host": "http://127.0.0.1:9"}))
    ok, message = PaymentHook().test_connection()
    assert not ok and message.startswith("payment unreachable")


def test_saga_log_hook_on_sqlite(tmp_path, monkeypatch, airflow_db):
    monkeypatch.setenv("AIRFLOW_CONN_CONDUIT_SAGA_DEFAULT", json.dumps({"conn_type": "sqlite",
                                                                        "host": str(tmp_path / "saga.db")}))
    hook = SagaLogHook()
    assert hook.test_connection() == (True, "saga log database reachable")
    log = hook.get_conn()
    log.start("order-1", dag_id="d", run_id="r", payload={"order_id": "1"})
    assert log.saga("order-1")["payload"] == {"order_id": "1"}
