"""The order services' rules without HTTP: idempotency, the ledger, faults and each business rule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conduit.orders_standin.faults import Faults, merge_faults
from conduit.orders_standin.state import Call, OrderServices, OrderServicesConfig, ServiceError, stable_score

ITEMS = [{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1}]
ADDRESS = {"name": "Ada", "line1": "Main St 1", "city": "Berlin", "country": "DE"}


class Clock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def svc(clock):
    return OrderServices(OrderServicesConfig(ship_after_s=5.0, default_stock=10), clock=clock)


def reserve_call(svc, key, body='{"order_id":"o-1"}', items=ITEMS):
    call = Call("inventory", "reserve", "POST", "/inventory/reservations", body, key, True, 201)
    return svc.call(call, lambda k: svc.reserve("o-1", items, k))


def ops(svc, service):
    return [entry["op"] for entry in svc.ledger()[service]]


def test_a_repeat_gets_the_first_answer_and_does_nothing_again(svc):
    first = reserve_call(svc, "k1").reply
    again = reserve_call(svc, "k1").reply
    assert first.status == again.status == 201 and again.body == first.body
    assert ops(svc, "inventory") == ["reserve"]
    assert svc.available("A") == 8
    assert svc.request_counts()["inventory"]["reserve"] == {"received": 2, "faulted": 0, "replayed": 1}


def test_the_same_key_with_another_body_is_refused(svc):
    reserve_call(svc, "k1")
    reply = reserve_call(svc, "k1", body='{"order_id":"o-2"}').reply
    assert (reply.status, reply.body["error"]) == (422, "idempotency_key_reused")
    assert "k1" in reply.body["message"]
    assert len(ops(svc, "inventory")) == 1


@pytest.mark.parametrize("key", [None, "", "   "])
def test_a_missing_or_blank_key_is_a_400_and_nothing_happens(svc, key):
    reply = reserve_call(svc, key).reply
    assert (reply.status, reply.body["error"]) == (400, "missing_idempotency_key")
    assert ops(svc, "inventory") == []


def test_business_refusals_are_remembered_but_bad_requests_are_not(svc):
    svc.set_faults({"payment": {"decline_all": True}})
    call = Call("payment", "authorize", "POST", "/payment/authorizations", "{}", "p1", True, 201)
    assert svc.call(call, lambda k: svc.authorize("o-1", 10.0, "EUR", k)).reply.status == 402
    svc.clear_faults()
    assert svc.call(call, lambda k: svc.authorize("o-1", 10.0, "EUR", k)).reply.status == 402  # replayed

    def invalid(key):
        raise ServiceError(400, "bad_request", "body.amount: missing")

    bad = Call("payment", "authorize", "POST", "/payment/authorizations", "{}", "p2", True, 201)
    assert svc.call(bad, invalid).reply.status == 400
    assert svc.call(bad, lambda k: svc.authorize("o-1", 10.0, "EUR", k)).reply.status == 201
    assert ops(svc, "payment") == ["authorize"]


@pytest.mark.parametrize(("mode", "status"), [("5xx", 503), ("429", 429)])
def test_an_outage_does_nothing_and_is_not_remembered(svc, mode, status):
    svc.set_faults({"inventory": {"fail_next": 1, "mode": mode, "retry_after_s": 7}})
    reply = reserve_call(svc, "k1").reply
    assert reply.status == status and ops(svc, "inventory") == []
    assert reply.headers == ({"Retry-After": "7"} if mode == "429" else {})
    assert reserve_call(svc, "k1").reply.status == 201  # the retry really runs
    assert ops(svc, "inventory") == ["reserve"]
    assert svc.request_counts()["inventory"]["reserve"] == {"received": 2, "faulted": 1, "replayed": 0}


def test_a_timeout_does_the_work_remembers_it_and_answers_late(svc):
    svc.set_faults({"inventory": {"fail_next": 1, "mode": "timeout", "delay_s": 2.5}})
    late = reserve_call(svc, "k1")
    assert (late.reply.status, late.delay_s) == (201, 2.5)
    retry = reserve_call(svc, "k1")
    assert retry.reply.body == late.reply.body and retry.delay_s == 0
    assert ops(svc, "inventory") == ["reserve"]
    assert svc.lookup("reservations", "k1")["results"][0]["reservation_id"] == late.reply.body["reservation_id"]


def test_a_5xx_after_the_effect_does_the_work_remembers_it_and_still_answers_503(svc):
    svc.set_faults({"inventory": {"fail_next": 2, "mode": "5xx_after_effect"}})
    assert [reserve_call(svc, "k1").reply.status for _ in range(2)] == [503, 503]
    assert ops(svc, "inventory") == ["reserve"]  # done by the first, the second a replay behind the 503
    assert svc.lookup("reservations", "k1")["results"][0]["status"] == "reserved"
    retry = reserve_call(svc, "k1").reply
    assert retry.status == 201 and retry.body["reservation_id"] == "res-1"
    assert svc.request_counts()["inventory"]["reserve"] == {"received": 3, "faulted": 2, "replayed": 2}


def test_a_5xx_then_late_answers_503_now_and_leaves_the_request_to_be_done_later(svc):
    svc.set_faults({"inventory": {"fail_next": 1, "mode": "5xx_then_late", "delay_s": 4.0}})
    call = Call("inventory", "reserve", "POST", "/inventory/reservations", '{"order_id":"o-1"}', "k1", True, 201)
    answer = svc.call(call, lambda k: svc.reserve("o-1", ITEMS, k))
    assert (answer.reply.status, answer.late_s) == (503, 4.0)
    assert ops(svc, "inventory") == [] and svc.lookup("reservations", "k1") == {"results": []}
    assert svc.perform(call, lambda k: svc.reserve("o-1", ITEMS, k)).reply.status == 201  # the wait is over
    assert ops(svc, "inventory") == ["reserve"]


@pytest.mark.parametrize("conflict", [False, True])
def test_a_repeat_while_the_first_request_is_held_is_done_now_or_a_409_key_in_use(svc, conflict):
    """Off (the default): the repeat is done now and the held request, done later, is its replay.
    On: the repeat is answered 409 idempotency_key_in_use, not remembered, until the held one is done."""
    svc.set_faults({"inventory": {"fail_next": 1, "mode": "5xx_then_late", "key_in_use_conflict": conflict}})
    call = Call("inventory", "reserve", "POST", "/inventory/reservations", '{"order_id":"o-1"}', "k1", True, 201)
    assert svc.call(call, lambda k: svc.reserve("o-1", ITEMS, k)).reply.status == 503
    repeat = svc.call(call, lambda k: svc.reserve("o-1", ITEMS, k)).reply
    if conflict:
        assert (repeat.status, repeat.body["error"]) == (409, "idempotency_key_in_use")
        assert ops(svc, "inventory") == []
        assert svc.perform(call, lambda k: svc.reserve("o-1", ITEMS, k)).reply.status == 201  # the held one
        assert svc.call(call, lambda k: svc.reserve("o-1", ITEMS, k)).reply.status == 201  # now a replay
    else:
        assert repeat.status == 201
        assert svc.perform(call, lambda k: svc.reserve("o-1", ITEMS, k)).reply.status == 201  # a replay
    assert ops(svc, "inventory") == ["reserve"]


def test_a_5xx_fault_answers_with_its_status(svc):
    svc.set_faults({"inventory": {"fail_next": 1, "mode": "5xx", "status": 507}})
    reply = reserve_call(svc, "k1").reply
    assert (reply.status, reply.body["error"]) == (507, "insufficient_storage")
    assert ops(svc, "inventory") == []


def test_faults_count_down_and_can_target_one_operation(svc):
    svc.set_faults({"inventory": {"fail_next": 2, "operation": "release"}})
    assert reserve_call(svc, "k1").reply.status == 201  # not a release: untouched
    release = Call("inventory", "release", "POST", "/inventory/reservations/res-1/release", "", None)
    statuses = [svc.call(release, lambda k: svc.release("res-1", k)).reply.status for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert svc.fault_settings()["inventory"]["fail_next"] == 0


def test_merging_faults_keeps_what_is_not_named_and_names_unknown_keys():
    current = merge_faults(Faults(), {"payment": {"decline_orders": ["o-1"]}})
    merged = merge_faults(current, {"payment": {"decline_all": True}})
    assert merged.payment.decline_orders == ["o-1"] and merged.payment.decline_all
    for patch, named in [({"payment": {"declin_all": True}}, "declin_all"), ({"billing": {}}, "billing"),
                         ({"shipping": {"operation": "reserve"}}, "operation")]:
        with pytest.raises(ValidationError, match=named):
            merge_faults(current, patch)


def test_reservations_are_all_or_nothing_and_release_returns_stock(svc):
    with pytest.raises(ServiceError) as refused:
        svc.reserve("o-9", [{"sku": "A", "quantity": 4}, {"sku": "B", "quantity": 11}], "k0")
    assert (refused.value.status, refused.value.code) == (409, "out_of_stock")
    assert "B" in refused.value.message and "o-9" in refused.value.message
    assert svc.available("A") == 10 and ops(svc, "inventory") == []
    reservation = svc.reserve("o-1", ITEMS, "k1")
    assert (reservation["reservation_id"], reservation["status"]) == ("res-1", "reserved")
    assert svc.release("res-1", "r1")["status"] == "released"
    assert svc.release("res-1", "r2")["status"] == "released"  # nothing left to release
    assert svc.available("A") == 10 and ops(svc, "inventory") == ["reserve", "release"]
    svc.set_faults({"inventory": {"out_of_stock_skus": ["A"]}})
    with pytest.raises(ServiceError, match="SKU A"):
        svc.reserve("o-2", [{"sku": "A", "quantity": 1}], "k2")


@pytest.mark.parametrize(("faults", "others_pass"), [
    ({"decline_all": True}, False), ({"decline_orders": ["o-1"]}, True), ({"decline_above": 99.5}, True)])
def test_declines(svc, faults, others_pass):
    svc.set_faults({"payment": faults})
    with pytest.raises(ServiceError) as declined:
        svc.authorize("o-1", 100.0, "EUR", "p1")
    assert (declined.value.status, declined.value.code) == (402, "declined") and "o-1" in declined.value.message
    if others_pass:
        assert svc.authorize("o-2", 50.0, "EUR", "p2")["status"] == "authorized"
    assert ops(svc, "payment") == (["authorize"] if others_pass else [])


@pytest.mark.parametrize(("path", "final", "ledger"), [
    (["capture", "capture"], "captured", ["capture"]),
    (["void", "void"], "voided", ["void"]),
    (["capture", "refund", "refund"], "refunded", ["capture", "refund"]),
])
def test_payment_moves_and_their_repeats(svc, path, final, ledger):
    svc.authorize("o-1", 10.0, "EUR", "p1")
    for op in path:
        result = svc.settle(op, "auth-1", None)
    assert result["status"] == final and ops(svc, "payment") == ["authorize", *ledger]


@pytest.mark.parametrize(("path", "refused", "hint"), [
    (["void"], "capture", "capture needs authorized"),
    (["capture"], "void", "refund it instead"),
    ([], "refund", "void it instead"),
])
def test_payment_moves_from_the_wrong_state(svc, path, refused, hint):
    svc.authorize("o-1", 10.0, "EUR", "p1")
    for op in path:
        svc.settle(op, "auth-1", None)
    with pytest.raises(ServiceError, match=hint) as error:
        svc.settle(refused, "auth-1", None)
    assert (error.value.status, error.value.code) == (409, "invalid_state")
    with pytest.raises(ServiceError, match="auth-9") as missing:
        svc.settle(refused, "auth-9", None)
    assert missing.value.code == "not_found"


def test_fraud_scores_are_stable_unless_a_fault_says_otherwise(svc):
    assert 0 <= stable_score("o-1") < 0.25 and stable_score("o-1") == stable_score("o-1")
    assert stable_score("o-1") != stable_score("o-2")
    assert svc.score("o-1", 10.0, None)["score"] == stable_score("o-1")
    svc.set_faults({"fraud": {"scores": {"o-1": 0.97}, "default_score": 0.5}})
    assert [svc.score(order, 10.0, None)["score"] for order in ("o-1", "o-2")] == [0.97, 0.5]
    assert [entry["score"] for entry in svc.ledger()["fraud"]] == [stable_score("o-1"), 0.97, 0.5]


def test_shipments_ship_after_the_delay_unless_held(svc, clock):
    svc.set_faults({"shipping": {"never_ship_orders": ["o-2"]}})
    shipped, held = (svc.create_shipment(order, ADDRESS, f"s-{order}")["shipment_id"] for order in ("o-1", "o-2"))
    clock.now += 4.9
    assert svc.get("shipments", shipped)["status"] == "created"
    clock.now += 0.1
    assert [svc.get("shipments", sid)["status"] for sid in (shipped, held)] == ["shipped", "created"]
    with pytest.raises(ServiceError, match="shipped; cancel needs created"):
        svc.cancel_shipment(shipped, None)
    assert svc.cancel_shipment(held, "c1")["status"] == svc.cancel_shipment(held, "c2")["status"] == "cancelled"
    assert ops(svc, "shipping") == ["create", "create", "cancel"]


def test_refused_shipments_and_the_ship_after_fault(svc, clock):
    svc.set_faults({"shipping": {"fail_create_orders": ["o-1"], "ship_after_s": 0}})
    with pytest.raises(ServiceError, match="o-1") as refused:
        svc.create_shipment("o-1", ADDRESS, "s1")
    assert (refused.value.status, refused.value.code) == (422, "undeliverable")
    assert svc.lookup("shipments", "s1") == {"results": []}
    created = svc.create_shipment("o-2", ADDRESS, "s2")
    assert svc.lookup("shipments", "s2")["results"][0]["shipment_id"] == created["shipment_id"]
    assert svc.lookup("shipments", "s2")["results"][0]["status"] == "shipped"


def test_reset_forgets_everything(svc):
    svc.set_faults({"payment": {"decline_all": True}})
    reserve_call(svc, "k1")
    svc.reset()
    assert svc.ledger() == {"inventory": [], "payment": [], "fraud": [], "shipping": []}
    assert svc.request_counts() == {} and svc.fault_settings() == Faults().model_dump()
    assert svc.lookup("reservations", "k1") == {"results": []} and svc.available("A") == 10
    assert reserve_call(svc, "k1").reply.body["reservation_id"] == "res-1"
    assert ops(svc, "inventory") == ["reserve"]
