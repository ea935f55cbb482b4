"""The order services over real HTTP: a real server process started by ``run_order_services``."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from conduit.orders_standin.testing import run_order_services

SHIP_AFTER_S = 0.2
ITEMS = [{"sku": "SKU-1", "quantity": 2}]
ADDRESS = {"name": "Ada Lovelace", "line1": "Main St 1", "city": "Berlin", "country": "DE"}


@pytest.fixture(scope="module")
def services():
    with run_order_services(ship_after_s=SHIP_AFTER_S, default_stock=100) as handle:
        yield handle


@pytest.fixture(autouse=True)
def clean(services):
    yield
    services.admin.reset()


def post(services, path, body=None, key="auto", **kwargs):
    headers = {} if key is None else {"Idempotency-Key": uuid.uuid4().hex if key == "auto" else key}
    return requests.post(f"{services.base_url}{path}", json=body, headers=headers, timeout=kwargs.pop("timeout", 10),
                         **kwargs)


def get(services, path, **params):
    return requests.get(f"{services.base_url}{path}", params=params, timeout=10)


def reserve(services, order_id="o-1", items=ITEMS, key="auto"):
    return post(services, "/inventory/reservations", {"order_id": order_id, "items": items}, key)


def authorize(services, order_id="o-1", amount=25.5, key="auto"):
    return post(services, "/payment/authorizations", {"order_id": order_id, "amount": amount, "currency": "EUR"}, key)


def ship(services, order_id="o-1", key="auto"):
    return post(services, "/shipping/shipments", {"order_id": order_id, "address": ADDRESS}, key)


def test_inventory_reserve_get_lookup_release(services):
    created = reserve(services, key="r-1")
    assert created.status_code == 201
    reservation = created.json()
    assert reservation == {"reservation_id": reservation["reservation_id"], "order_id": "o-1", "items": ITEMS,
                           "status": "reserved", "idempotency_key": "r-1"}
    assert reservation["reservation_id"].startswith("res-")
    rid = reservation["reservation_id"]
    assert get(services, f"/inventory/reservations/{rid}").json() == reservation
    assert get(services, "/inventory/reservations", idempotency_key="r-1").json() == {"results": [reservation]}
    assert get(services, "/inventory/reservations", idempotency_key="other").json() == {"results": []}
    for _ in range(2):  # the second release has nothing left to do
        released = post(services, f"/inventory/reservations/{rid}/release")
        assert (released.status_code, released.json()["status"]) == (200, "released")
    assert services.admin.ledger_count("inventory", "release", "o-1") == 1
    missing = get(services, "/inventory/reservations/res-999")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found") and "res-999" in missing.json()["message"]


def test_out_of_stock_reserves_nothing(services):
    refused = reserve(services, "o-7", [{"sku": "SKU-1", "quantity": 1}, {"sku": "SKU-2", "quantity": 101}])
    assert (refused.status_code, refused.json()["error"]) == (409, "out_of_stock")
    assert "SKU-2" in refused.json()["message"] and "o-7" in refused.json()["message"]
    services.admin.faults(inventory={"out_of_stock_skus": ["SKU-1"]})
    assert reserve(services).status_code == 409
    assert services.admin.ledger()["inventory"] == []


def test_payment_lifecycle_and_invalid_states(services):
    created = authorize(services, key="a-1")
    assert created.status_code == 201
    auth = created.json()
    assert {k: auth[k] for k in ("order_id", "amount", "currency", "status", "idempotency_key")} == {
        "order_id": "o-1", "amount": 25.5, "currency": "EUR", "status": "authorized", "idempotency_key": "a-1"}
    aid = auth["authorization_id"]
    assert get(services, f"/payment/authorizations/{aid}").json()["status"] == "authorized"
    assert get(services, "/payment/authorizations", idempotency_key="a-1").json()["results"][0]["authorization_id"] == aid
    assert post(services, f"/payment/authorizations/{aid}/refund").status_code == 409
    assert post(services, f"/payment/authorizations/{aid}/capture").json()["status"] == "captured"
    assert post(services, f"/payment/authorizations/{aid}/capture").json()["status"] == "captured"
    void = post(services, f"/payment/authorizations/{aid}/void")
    assert (void.status_code, void.json()["error"]) == (409, "invalid_state") and "refund" in void.json()["message"]
    assert post(services, f"/payment/authorizations/{aid}/refund").json()["status"] == "refunded"
    voided = authorize(services, "o-2").json()["authorization_id"]
    assert post(services, f"/payment/authorizations/{voided}/void").json()["status"] == "voided"
    assert post(services, f"/payment/authorizations/{voided}/capture").status_code == 409
    assert [e["op"] for e in services.admin.ledger()["payment"]] == ["authorize", "capture", "refund", "authorize",
                                                                     "void"]


def test_declines(services):
    services.admin.faults(payment={"decline_orders": ["o-1"], "decline_above": 1000})
    declined = authorize(services, "o-1")
    assert (declined.status_code, declined.json()["error"]) == (402, "declined") and "o-1" in declined.json()["message"]
    assert authorize(services, "o-2", amount=1000.01).status_code == 402
    assert authorize(services, "o-2", amount=1000).status_code == 201
    services.admin.faults(payment={"decline_all": True})
    assert authorize(services, "o-3").status_code == 402
    assert services.admin.ledger_count("payment", "authorize") == 1


def test_fraud_scores(services):
    first = post(services, "/fraud/scores", {"order_id": "o-1", "amount": 10, "email": None, "country": "DE"}, key=None)
    assert first.status_code == 200 and 0 <= first.json()["score"] < 0.25
    assert post(services, "/fraud/scores", {"order_id": "o-1", "amount": 10}, key=None).json() == first.json()
    services.admin.faults(fraud={"scores": {"o-1": 0.9}, "default_score": 0.4})
    scores = [post(services, "/fraud/scores", {"order_id": order, "amount": 10}).json()["score"] for order in ("o-1", "o-2")]
    assert scores == [0.9, 0.4]
    assert services.admin.ledger_count("fraud", "score") == 4


def test_shipping_ships_after_the_delay_unless_held_and_cancels(services):
    services.admin.faults(shipping={"never_ship_orders": ["o-2"]})
    created = ship(services, key="s-1")
    assert created.status_code == 201
    shipment = created.json()
    assert (shipment["status"], shipment["idempotency_key"]) == ("created", "s-1")
    held = ship(services, "o-2").json()["shipment_id"]
    sid = shipment["shipment_id"]
    assert get(services, f"/shipping/shipments/{sid}").json()["status"] == "created"
    time.sleep(SHIP_AFTER_S + 0.05)
    assert get(services, f"/shipping/shipments/{sid}").json()["status"] == "shipped"
    assert get(services, "/shipping/shipments", idempotency_key="s-1").json()["results"][0]["status"] == "shipped"
    assert get(services, f"/shipping/shipments/{held}").json()["status"] == "created"
    assert post(services, f"/shipping/shipments/{sid}/cancel").status_code == 409
    for _ in range(2):
        assert post(services, f"/shipping/shipments/{held}/cancel").json()["status"] == "cancelled"
    assert services.admin.ledger_count("shipping", "cancel") == 1


def test_undeliverable_and_slow_status(services):
    services.admin.faults(shipping={"fail_create_orders": ["o-1"], "status_delay_s": 0.4})
    refused = ship(services, key="s-1")
    assert (refused.status_code, refused.json()["error"]) == (422, "undeliverable")
    assert get(services, "/shipping/shipments", idempotency_key="s-1").json() == {"results": []}
    sid = ship(services, "o-2").json()["shipment_id"]
    started = time.monotonic()
    assert get(services, f"/shipping/shipments/{sid}").status_code == 200
    assert time.monotonic() - started >= 0.4


def test_a_repeat_is_answered_from_memory(services):
    first = reserve(services, key="same")
    again = post(services, "/inventory/reservations", {"items": ITEMS, "order_id": "o-1"}, "same")  # key order
    assert (again.status_code, again.json()) == (201, first.json())
    assert services.admin.ledger_count("inventory", "reserve") == 1
    assert services.admin.requests()["inventory"]["reserve"] == {"received": 2, "faulted": 0, "replayed": 1}
    reused = reserve(services, "o-2", key="same")
    assert (reused.status_code, reused.json()["error"]) == (422, "idempotency_key_reused")
    assert "same" in reused.json()["message"]


@pytest.mark.parametrize("path", ["/inventory/reservations", "/payment/authorizations", "/shipping/shipments",
                                  "/payment/authorizations/auth-1/capture"])
def test_mutations_need_a_key_and_bad_bodies_name_the_field(services, path):
    missing = post(services, path, {"order_id": "o-1"}, key=None)
    assert (missing.status_code, missing.json()["error"]) == (400, "missing_idempotency_key")
    if not path.endswith("capture"):
        bad = post(services, path, {"items": [], "amount": -1})
        assert (bad.status_code, bad.json()["error"]) == (400, "bad_request") and "order_id" in bad.json()["message"]
    assert services.admin.ledger() == {"inventory": [], "payment": [], "fraud": [], "shipping": []}


@pytest.mark.parametrize(("mode", "status", "error"), [("5xx", 503, "unavailable"), ("429", 429, "rate_limited")])
def test_an_outage_is_not_remembered_so_the_retry_runs(services, mode, status, error):
    services.admin.faults(payment={"fail_next": 2, "mode": mode, "retry_after_s": 3, "operation": "authorize"})
    assert get(services, "/payment/authorizations", idempotency_key="x").status_code == 200  # not targeted
    for _ in range(2):
        failed = authorize(services, key="a-1")
        assert (failed.status_code, failed.json()["error"]) == (status, error)
        assert failed.headers.get("Retry-After") == ("3" if mode == "429" else None)
    assert authorize(services, key="a-1").status_code == 201
    assert services.admin.ledger_count("payment", "authorize") == 1
    assert services.admin.requests()["payment"]["authorize"] == {"received": 3, "faulted": 2, "replayed": 0}


def test_a_timeout_happened_and_the_retry_gets_the_stored_answer(services):
    services.admin.faults(shipping={"fail_next": 1, "mode": "timeout", "delay_s": 1.0})
    with pytest.raises(requests.Timeout):
        post(services, "/shipping/shipments", {"order_id": "o-1", "address": ADDRESS}, "s-1", timeout=0.3)
    found = get(services, "/shipping/shipments", idempotency_key="s-1").json()["results"]
    assert len(found) == 1  # the compensation can see it happened
    retry = ship(services, key="s-1")
    assert (retry.status_code, retry.json()["shipment_id"]) == (201, found[0]["shipment_id"])
    assert services.admin.ledger_count("shipping", "create") == 1


def test_admin_faults_validate_merge_clear_and_reset(services):
    unknown = requests.put(f"{services.base_url}/_admin/faults", json={"payment": {"declne_all": True}, "bank": {}},
                           timeout=10)
    assert (unknown.status_code, unknown.json()["error"]) == (400, "bad_request")
    assert "declne_all" in unknown.json()["message"] and "bank" in unknown.json()["message"]
    services.admin.faults(payment={"decline_orders": ["o-1"]})
    merged = services.admin.faults(payment={"decline_all": True})["payment"]
    assert merged["decline_orders"] == ["o-1"] and merged["decline_all"] is True
    assert services.admin.clear_faults()["payment"]["decline_orders"] == []
    reserve(services, key="r-1")
    services.admin.faults(inventory={"fail_next": 5})
    services.admin.reset()
    assert services.admin.ledger()["inventory"] == [] and services.admin.requests() == {}
    assert get(services, "/inventory/reservations", idempotency_key="r-1").json() == {"results": []}
    assert reserve(services, key="r-1").status_code == 201  # faults gone, key forgotten
