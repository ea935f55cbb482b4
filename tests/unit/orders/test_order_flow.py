"""The nightly order flow (conduit.orders.flow): which steps each routing outcome reaches, and a
shipment wait whose deadline survives the task's retries."""

from __future__ import annotations

import pytest
import sqlalchemy
from airflow.sdk.exceptions import AirflowFailException

import conduit.hooks.order_services as services
from conduit.orders import flow
from conduit.saga import StepContext
from conduit.saga.log import SagaLog


class ScriptedSaga:
    """The flow's saga handle with the routing decision given: records the steps it reaches."""

    def __init__(self, outcome: str):
        self.decision = {"outcome": outcome, "rule": "some_rule", "reason": "because"}
        self.ran: list[str] = []
        self.context = {"params": {}}

    def step(self, name, action, *, compensable=False):
        self.ran.append(name)
        return self.decision if name == "route" else {}

    def abort(self, cause):
        raise RuntimeError(cause)

    def commit(self):
        self.ran.append("commit")


def test_approve_goes_on_to_payment_shipping_and_capture():
    saga = ScriptedSaga("approve")
    flow.process_order(saga)
    assert saga.ran[-5:] == ["payment", "shipping", "wait_for_shipment", "capture", "commit"]


@pytest.mark.parametrize(("outcome", "cause"), [
    ("reject", "reject by rule some_rule: because"),
    ("review", "needs a person's review (rule some_rule: because)"),
    ("hold", "needs a person's review (rule some_rule chose 'hold', which this flow does not know"),
])
def test_any_other_outcome_ends_the_saga_before_the_customer_is_charged(outcome, cause):
    saga = ScriptedSaga(outcome)
    with pytest.raises(RuntimeError) as aborted:
        flow.process_order(saga)
    assert str(aborted.value).startswith(cause)
    assert "payment" not in saga.ran


@pytest.fixture
def saga_log(tmp_path, clock):
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'saga.db'}")
    log = SagaLog(engine, clock=clock)
    log.ensure_schema()
    yield log
    engine.dispose()


def test_the_shipment_wait_counts_from_the_steps_first_attempt_across_retries(saga_log, clock, monkeypatch):
    """Try 1 polls at t=0 and t=40, then the status service fails (the task is retried at t=80).
    Try 2 must give up at the first attempt's deadline (t=100), not wait 100 s more."""
    polls: list[float] = []

    class ShippingHook:
        def shipment(self, _id):
            polls.append(clock.now - 1_000)
            if len(polls) == 3:
                raise services.ServiceRetryableError("shipping 503")
            return {"status": "created"}

    monkeypatch.setattr(services, "ShippingHook", ShippingHook)
    log = saga_log
    log.start("order-X", dag_id="d", run_id="r", payload={})
    log.begin_step("order-X", "wait_for_shipment", seq=1, compensable=False)
    wait = flow.wait_until_shipped(within_s=100, poll_s=40, sleep=clock.tick, clock=clock)

    def attempt():
        row = log.action_started("order-X", "wait_for_shipment")
        return wait(StepContext("order-X", "wait_for_shipment", "k", {}, {"shipping": {"shipment_id": "S1"}},
                                started_at=row["started_at"]))

    with pytest.raises(services.ServiceRetryableError):
        attempt()
    log.action_failed("order-X", "wait_for_shipment", "shipping 503", final=False)
    with pytest.raises(AirflowFailException, match="did not ship in time"):
        attempt()
    assert polls == [0, 40, 80, 80, 120]  # try 2 gave up at its first poll past t=100 (once: t=180)
