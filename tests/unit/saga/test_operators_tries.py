"""When a saga task's failure is its last (a compensation left ``compensation_failed``, a forward
step's failure made the saga's cause), decided as Airflow decides it, and what a timeout leaves in
the saga log. The operators' ``execute`` runs on a saga log in a SQLite file; the task instance is
the few fields the operators read."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import sqlalchemy
from airflow.sdk.exceptions import AirflowSkipException, AirflowTaskTimeout

from conduit.exceptions import SagaCompensationFailed
from conduit.saga.inline import InlineSaga, compensate
from conduit.saga.log import SagaLog
from conduit.saga.operators import (
    InlineCompensationOperator,
    SagaActionOperator,
    SagaCompensationOperator,
    SagaFinalizeOperator,
    is_last_try,
)

SAGA = "order-T1"
RETRIES = 8


@pytest.fixture
def log(tmp_path):
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'saga.db'}")
    log = SagaLog(engine)
    log.ensure_schema()
    log.start(SAGA, dag_id="order_fulfilment", run_id="r1", payload={"order_id": "T1"})
    yield log
    engine.dispose()


@pytest.fixture
def failed_payment(log) -> SagaLog:
    """A payment step whose action failed for good: its compensation is owed."""
    log.begin_step(SAGA, "payment", seq=1, compensable=True)
    log.action_started(SAGA, "payment")
    log.action_failed(SAGA, "payment", "declined", final=True)
    return log


def operator(cls, log: SagaLog, **kwargs):
    op = cls(task_id="t", saga_id=SAGA, log_conn_id="unused", retries=RETRIES, **kwargs)
    op.__dict__["saga_log"] = log  # the cached_property, without a connection
    return op


def ti(try_number: int, max_tries: int | None = RETRIES) -> dict:
    return {"ti": SimpleNamespace(try_number=try_number, max_tries=max_tries)}


def raises(exc: BaseException):
    def action(_ctx):
        raise exc
    return action


@pytest.mark.parametrize(("try_number", "max_tries", "last"), [
    (1, 8, False), (8, 8, False), (9, 8, True),  # as deployed: retries=8
    (10, 17, False), (17, 17, False), (18, 17, True),  # cleared after its 9th try: 8 more
    (1, 0, True),  # retries=0
])
def test_the_last_try_is_the_one_airflow_will_not_retry(try_number, max_tries, last):
    assert is_last_try(SimpleNamespace(try_number=try_number, max_tries=max_tries), RETRIES) is last


def test_without_max_tries_the_operators_own_retries_count():
    assert [is_last_try(SimpleNamespace(try_number=n), 2) for n in (1, 2, 3)] == [False, False, True]


def test_a_cleared_compensation_that_fails_once_is_retried_not_left_compensation_failed(failed_payment):
    """The README's way to resume a compensation_failed saga is to clear the task: its first try
    after that (try 10 of max_tries 17) must not count as the last."""
    comp = operator(SagaCompensationOperator, failed_payment, step="payment",
                    compensation=raises(RuntimeError("payment service 503")))
    with pytest.raises(RuntimeError):
        comp.execute(ti(10, max_tries=17))
    assert failed_payment.saga(SAGA)["status"] == "compensating"
    with pytest.raises(RuntimeError):
        comp.execute(ti(18, max_tries=17))
    assert failed_payment.saga(SAGA)["status"] == "compensation_failed"


def test_a_cleared_action_that_fails_once_does_not_make_the_failure_the_sagas_cause(log):
    log.begin_step(SAGA, "payment", seq=1, compensable=True)
    action = operator(SagaActionOperator, log, step="payment", seq=1, compensable=True,
                      action=raises(RuntimeError("payment service 503")))
    with pytest.raises(RuntimeError):
        action.execute(ti(10, max_tries=17))
    assert log.saga(SAGA)["cause"] is None and log.saga(SAGA)["status"] == "running"


def test_a_compensation_timing_out_on_its_last_try_leaves_the_saga_compensation_failed(failed_payment):
    """``execution_timeout`` raises AirflowTaskTimeout, a BaseException: caught like any failure, or
    the saga stayed 'compensating' and finalize reported a plain abort while money was held."""
    comp = operator(SagaCompensationOperator, failed_payment, step="payment",
                    compensation=raises(AirflowTaskTimeout("Timeout, PID: 1")))
    with pytest.raises(AirflowTaskTimeout):
        comp.execute(ti(RETRIES + 1))
    (step,) = failed_payment.steps(SAGA)
    assert (step["compensation_status"], failed_payment.saga(SAGA)["status"]) == ("failed", "compensation_failed")
    with pytest.raises(SagaCompensationFailed):
        operator(SagaFinalizeOperator, failed_payment).execute(ti(1))


def test_an_inline_step_timing_out_on_its_last_try_becomes_the_sagas_cause(log):
    saga = InlineSaga(log, SAGA, final=lambda exc: True)
    with pytest.raises(AirflowTaskTimeout):
        saga.step("payment", raises(AirflowTaskTimeout("Timeout, PID: 1")), compensable=True)
    assert "AirflowTaskTimeout" in (log.saga(SAGA)["cause"] or "")


def test_an_inline_compensation_timing_out_is_logged_and_stops_the_rest_for_the_next_try(log):
    for seq, step in enumerate(("inventory", "payment"), start=1):
        log.begin_step(SAGA, step, seq=seq, compensable=True)
        log.action_started(SAGA, step)
        log.action_succeeded(SAGA, step, {"id": step})
    log.set_cause(SAGA, "shipping refused")
    undone: list[str] = []
    compensations = {"payment": raises(AirflowTaskTimeout("Timeout, PID: 1")),
                     "inventory": lambda ctx: undone.append(ctx.step)}
    with pytest.raises(AirflowTaskTimeout):
        compensate(log, SAGA, compensations, final=True)
    assert undone == []  # reverse order: payment first; the task's time was up before inventory
    assert log.saga(SAGA)["status"] == "compensation_failed"
    # a person clears the teardown: it resumes with what is still owed, payment then inventory
    op = operator(InlineCompensationOperator, log, compensations={**compensations, "payment": lambda ctx: "voided"})
    assert op.execute(ti(RETRIES + 2, max_tries=2 * RETRIES + 1))["status"] == "compensated"
    assert undone == ["inventory"]


@pytest.mark.parametrize("refused", [False, True])
def test_a_compensation_repeats_first_an_action_whose_task_died_in_its_call(log, refused):
    """An action killed in the middle of its call (no outcome logged) is repeated with its key
    before it is undone, and its compensation gets the answer; refused (a business rejection),
    there is nothing to undo. A step whose action logged its outcome is never repeated."""
    from conduit.exceptions import BusinessRejection

    for seq, step in enumerate(("inventory", "payment"), start=1):
        log.begin_step(SAGA, step, seq=seq, compensable=True)
        log.action_started(SAGA, step)
    log.action_succeeded(SAGA, "inventory", {"reservation_id": "res-1"})  # payment's task died in its call
    repeated: list[str] = []

    def action(ctx):
        repeated.append(ctx.key())
        if refused:
            raise BusinessRejection("payment POST /payment/authorizations refused (402): declined")
        return {"authorization_id": "auth-1"}

    actions = {"inventory": action, "payment": action}
    compensations = {"payment": lambda ctx: {"voided": ctx.result}, "inventory": lambda ctx: {"released": ctx.result}}
    saga, failed = compensate(log, SAGA, compensations, final=True, actions=actions)

    assert (saga["status"], failed, repeated) == ("compensated", {}, [f"{SAGA}:payment"])
    undone = {s["step"]: s["compensation_result"] for s in log.steps(SAGA)}
    assert undone == {"inventory": {"released": {"reservation_id": "res-1"}},
                      "payment": {"voided": None if refused else {"authorization_id": "auth-1"}}}
    (note,) = [e["detail"] for e in log.events(SAGA) if e["event"] == "action_repeated"]
    assert ("refused" in note) if refused else note == {"result": {"authorization_id": "auth-1"}}

    # the task-per-step compensation does the same (a cleared one, on a saga already compensated, does not)
    op = operator(SagaCompensationOperator, log, step="payment", compensation=compensations["payment"], action=action)
    with pytest.raises(AirflowSkipException, match="already_done"):
        op.execute(ti(1))
    assert repeated == [f"{SAGA}:payment"]


def test_a_task_per_step_compensation_repeats_first_an_action_whose_task_died_in_its_call(log):
    log.begin_step(SAGA, "payment", seq=1, compensable=True)
    log.action_started(SAGA, "payment")
    calls: list[str] = []
    op = operator(SagaCompensationOperator, log, step="payment",
                  action=lambda ctx: calls.append("authorize") or {"authorization_id": "auth-1"},
                  compensation=lambda ctx: calls.append("void") or {"voided": ctx.result["authorization_id"]})
    assert op.execute(ti(1)) == {"voided": "auth-1"}
    assert calls == ["authorize", "void"]
    assert log.saga(SAGA)["status"] == "compensated"
