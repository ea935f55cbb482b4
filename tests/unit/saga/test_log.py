"""The saga log (conduit.saga.log.SagaLog) on a SQLite file, with an injected clock: the
exactly-once bookkeeping a saga relies on when Airflow runs its tasks at least once (retries,
clears, killed attempts, reruns). The same log on PostgreSQL, with concurrent callers, is in
tests/integration/test_saga_log_postgres.py."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import sqlalchemy
from sqlalchemy import event

from conduit.exceptions import SagaConflict, SagaNotRunning
from conduit.saga.log import SagaLog
from conduit.saga.model import CompensationDecision as D
from conduit.saga.model import compensation_order

SAGA = "order-42"


@pytest.fixture
def engine(tmp_path):
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'saga.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def log(engine, clock) -> SagaLog:
    log = SagaLog(engine, clock=clock)
    log.ensure_schema()
    return log


@pytest.fixture
def started(log) -> SagaLog:
    log.start(SAGA, dag_id="order_fulfilment", run_id="manual__1", payload={"order_id": 42})
    return log


def step_row(log: SagaLog, step: str) -> dict:
    return next(s for s in log.steps(SAGA) if s["step"] == step)


def timeline(log: SagaLog, saga_id: str = SAGA) -> list[tuple]:
    return [(e["step"], e["event"], e["detail"]) for e in log.events(saga_id)]


def failed_step(log: SagaLog, step: str = "payment", seq: int = 1) -> None:
    log.begin_step(SAGA, step, seq=seq, compensable=True)
    log.action_started(SAGA, step)
    log.action_failed(SAGA, step, "Timeout: no answer", final=True)


def succeeded_step(log: SagaLog, step: str, seq: int, result=None, compensable: bool = True) -> None:
    log.begin_step(SAGA, step, seq=seq, compensable=compensable)
    log.action_started(SAGA, step)
    log.action_succeeded(SAGA, step, result if result is not None else {"id": f"{step}-1"})


# --- start -------------------------------------------------------------------------------------------

def test_start_opens_a_running_saga_with_its_payload(log, clock):
    payload = {"order_id": 42, "items": [{"sku": "A-1", "qty": 2}], "note": "grüße"}
    saga = log.start(SAGA, dag_id="order_fulfilment", run_id="manual__1", payload=payload)
    assert saga == {"saga_id": SAGA, "dag_id": "order_fulfilment", "run_id": "manual__1", "status": "running",
                    "cause": None, "payload": payload, "created_at": 1_000.0, "updated_at": 1_000.0}
    assert log.saga(SAGA) == saga
    assert log.events(SAGA) == [{"id": 1, "saga_id": SAGA, "step": None, "event": "started",
                                 "detail": {"dag_id": "order_fulfilment", "run_id": "manual__1"},
                                 "at": 1_000.0}]


def test_start_is_idempotent_for_the_same_run(log, clock):
    first = log.start(SAGA, dag_id="order_fulfilment", run_id="manual__1", payload={"order_id": 42})
    clock.tick()
    again = log.start(SAGA, dag_id="order_fulfilment", run_id="manual__1", payload={"order_id": 99})
    assert again == first  # the retried start finds the saga open, payload and timestamps untouched
    assert log.saga(SAGA)["payload"] == {"order_id": 42}
    assert [e["event"] for e in log.events(SAGA)] == ["started"]


def test_start_of_the_same_run_returns_the_saga_as_it_is_now(started, clock):
    failed_step(started)
    started.claim_compensation(SAGA, "payment")
    assert started.start(SAGA, dag_id="order_fulfilment", run_id="manual__1")["status"] == "compensating"


@pytest.mark.parametrize(("dag_id", "run_id"), [("order_fulfilment", "manual__2"),
                                                ("other_dag", "manual__1")])
def test_start_refuses_another_run(started, clock, dag_id, run_id):
    before, events_before = started.saga(SAGA), started.events(SAGA)
    clock.tick()
    with pytest.raises(SagaConflict, match="order_fulfilment/manual__1"):
        started.start(SAGA, dag_id=dag_id, run_id=run_id, payload={"order_id": 43})
    assert started.saga(SAGA) == before
    assert started.events(SAGA) == events_before


def test_unknown_saga(log):
    assert log.saga("nope") is None
    assert log.steps("nope") == [] and log.events("nope") == []
    with pytest.raises(SagaNotRunning, match="never started"):
        log.begin_step("nope", "payment", seq=1, compensable=True)
    with pytest.raises(SagaNotRunning, match="never started"):
        log.claim_compensation("nope", "payment")


# --- forward steps -------------------------------------------------------------------------------------

def test_begin_step_registers_the_step_once(started, clock):
    key = started.begin_step(SAGA, "payment", seq=2, compensable=True)
    assert key == "order-42:payment"
    clock.tick()
    assert started.begin_step(SAGA, "payment", seq=5, compensable=False) == key  # a retried begin
    assert started.steps(SAGA) == [{
        "saga_id": SAGA, "step": "payment", "seq": 2, "compensable": True, "idempotency_key": key,
        "action_status": "pending", "action_attempts": 0, "result": None, "error": None,
        "compensation_status": "none", "compensation_attempts": 0, "compensation_result": None,
        "compensation_error": None,
        "started_at": None, "finished_at": None, "compensated_at": None}]
    assert timeline(started)[1:] == [("payment", "began", {"idempotency_key": key})]


def test_steps_are_listed_in_sequence(started):
    started.begin_step(SAGA, "shipping", seq=3, compensable=True)
    started.begin_step(SAGA, "inventory", seq=1, compensable=True)
    started.begin_step(SAGA, "fraud", seq=2, compensable=False)
    assert [s["step"] for s in started.steps(SAGA)] == ["inventory", "fraud", "shipping"]


def test_action_started_counts_attempts(started, clock):
    started.begin_step(SAGA, "payment", seq=1, compensable=True)
    clock.tick()
    row = started.action_started(SAGA, "payment")
    assert (row["action_status"], row["action_attempts"], row["started_at"]) == ("running", 1, 1_001.0)
    clock.tick()
    started.action_failed(SAGA, "payment", "ConnectionError: reset", final=False)
    row = step_row(started, "payment")
    assert (row["action_status"], row["error"], row["finished_at"]) == ("failed", "ConnectionError: reset", 1_002.0)
    clock.tick()
    row = started.action_started(SAGA, "payment")  # the retry: started_at stays the first attempt's (deadlines)
    assert (row["action_status"], row["action_attempts"], row["started_at"], row["error"]) == \
        ("running", 2, 1_001.0, None)
    assert [(e["event"], e["detail"]) for e in started.events(SAGA) if e["step"] == "payment"][1:] == [
        ("action_started", {"attempt": 1}),
        ("action_failed", {"error": "ConnectionError: reset", "final": False}),
        ("action_started", {"attempt": 2})]


def test_action_tries_lists_every_try_of_the_step_the_row_keeps_only_the_last(started):
    """The step's row forgets an earlier try's error (a retry clears it); the events keep them."""
    started.begin_step(SAGA, "payment", seq=1, compensable=True)
    started.begin_step(SAGA, "shipping", seq=2, compensable=True)
    started.action_started(SAGA, "payment")
    started.action_failed(SAGA, "payment", "ServiceOutcomeUnknown: 503", final=False)
    started.action_started(SAGA, "shipping")
    started.action_started(SAGA, "payment")
    started.action_failed(SAGA, "payment", "ServiceRetryableError: refused", final=True)
    started.note(SAGA, "payment", "action_repeated", {"result": None})
    assert step_row(started, "payment")["error"] == "ServiceRetryableError: refused"
    assert started.action_tries(SAGA, "payment") == [
        ("action_started", None), ("action_failed", "ServiceOutcomeUnknown: 503"),
        ("action_started", None), ("action_failed", "ServiceRetryableError: refused")]
    assert started.action_tries(SAGA, "shipping") == [("action_started", None)]


def test_a_succeeded_step_replays_its_result(started, clock):
    started.begin_step(SAGA, "payment", seq=1, compensable=True)
    started.action_started(SAGA, "payment")
    clock.tick()
    started.action_succeeded(SAGA, "payment", {"authorization_id": "auth-7", "amount": 12.5})
    events_before = started.events(SAGA)
    clock.tick()
    row = started.action_started(SAGA, "payment")  # a cleared task: the caller must not call again
    assert row["action_status"] == "succeeded"
    assert row["result"] == {"authorization_id": "auth-7", "amount": 12.5}
    assert (row["action_attempts"], row["finished_at"]) == (1, 1_001.0)
    assert started.events(SAGA) == events_before


def test_a_succeeded_step_replays_even_after_the_saga_committed(started):
    succeeded_step(started, "payment", 1, {"authorization_id": "auth-7"})
    started.commit(SAGA)
    row = started.action_started(SAGA, "payment")
    assert (row["action_status"], row["result"]) == ("succeeded", {"authorization_id": "auth-7"})


@pytest.mark.parametrize("status", ["compensating", "compensated", "compensation_failed", "committed"])
def test_a_forward_step_is_refused_once_the_saga_stopped_running(started, status):
    started.begin_step(SAGA, "shipping", seq=2, compensable=True)
    if status == "committed":
        started.commit(SAGA)
    else:
        failed_step(started, "payment", 1)
        started.claim_compensation(SAGA, "payment")
        if status == "compensation_failed":
            started.compensation_failed(SAGA, "payment", "HTTPError: 503", final=True)
        elif status == "compensated":
            started.claim_compensation(SAGA, "shipping")  # pending: not needed
            started.compensation_done(SAGA, "payment", {"voided": True})
    assert started.saga(SAGA)["status"] == status
    events_before = started.events(SAGA)
    shipping_before = step_row(started, "shipping")
    with pytest.raises(SagaNotRunning, match=f"is {status}.*start a new saga"):
        started.action_started(SAGA, "shipping")
    assert step_row(started, "shipping") == shipping_before
    assert started.events(SAGA) == events_before


def test_action_started_on_a_step_that_never_began(started):
    with pytest.raises(SagaNotRunning, match="never began"):
        started.action_started(SAGA, "payment")


def test_commit(started, clock):
    succeeded_step(started, "payment", 1)
    clock.tick()
    assert started.commit(SAGA)["status"] == "committed"
    assert started.saga(SAGA)["updated_at"] == 1_001.0
    clock.tick()
    assert started.commit(SAGA)["updated_at"] == 1_001.0  # a retried commit changes nothing
    assert [e["event"] for e in started.events(SAGA)].count("committed") == 1


def test_commit_refused_after_compensation_began(started):
    failed_step(started)
    started.claim_compensation(SAGA, "payment")
    with pytest.raises(SagaNotRunning, match="cannot commit"):
        started.commit(SAGA)
    assert started.saga(SAGA)["status"] == "compensating"


# --- causes --------------------------------------------------------------------------------------------

def test_a_non_final_failure_keeps_no_cause(started):
    started.begin_step(SAGA, "payment", seq=1, compensable=True)
    started.action_started(SAGA, "payment")
    started.action_failed(SAGA, "payment", "ConnectionError: reset", final=False)
    assert started.saga(SAGA)["cause"] is None
    assert started.saga(SAGA)["status"] == "running"  # a retry follows


def test_a_final_failure_sets_the_cause_and_the_first_cause_wins(started, clock):
    failed_step(started, "inventory", 1)
    assert started.saga(SAGA)["cause"] == "inventory: Timeout: no answer"
    assert started.saga(SAGA)["status"] == "running"  # the compensations decide the status
    started.begin_step(SAGA, "payment", seq=2, compensable=True)
    started.action_started(SAGA, "payment")
    started.action_failed(SAGA, "payment", "Declined", final=True)
    started.set_cause(SAGA, "a person rejected it", step="review")
    assert started.saga(SAGA)["cause"] == "inventory: Timeout: no answer"
    assert timeline(started)[-2:] == [("payment", "action_failed", {"error": "Declined", "final": True}),
                                      ("review", "cause", {"cause": "a person rejected it"})]


def test_set_cause_first_then_a_failure_keeps_it(started):
    started.set_cause(SAGA, "rules: amount over limit", step="rules")
    failed_step(started)
    assert started.saga(SAGA)["cause"] == "rules: amount over limit"


def test_note_appends_json_safe_details(started, clock):
    clock.tick()
    started.note(SAGA, "review", "answered", {"by": "ana", "at": datetime(2024, 1, 2, tzinfo=UTC)})
    assert started.events(SAGA)[-1] == {"id": 2, "saga_id": SAGA, "step": "review", "event": "answered",
                                        "detail": {"by": "ana", "at": "2024-01-02 00:00:00+00:00"},
                                        "at": 1_001.0}


# --- claiming compensations ------------------------------------------------------------------------------

def test_claim_on_a_committed_saga_changes_nothing(started):
    succeeded_step(started, "payment", 1, {"authorization_id": "auth-7"})
    started.commit(SAGA)
    saga_before, step_before = started.saga(SAGA), step_row(started, "payment")
    decision, row = started.claim_compensation(SAGA, "payment")
    assert decision == D.SAGA_COMMITTED
    assert row == step_before
    assert started.saga(SAGA) == saga_before
    assert step_row(started, "payment") == step_before
    assert timeline(started)[-1] == ("payment", "compensation_saga_committed", None)


def test_claim_for_a_step_that_never_began(started):
    saga_before, events_before = started.saga(SAGA), started.events(SAGA)
    assert started.claim_compensation(SAGA, "shipping") == (D.NEVER_STARTED, None)
    assert started.saga(SAGA) == saga_before
    assert started.steps(SAGA) == []
    assert started.events(SAGA) == events_before


def test_claim_for_a_pending_action_is_not_needed(started):
    started.begin_step(SAGA, "payment", seq=1, compensable=True)
    started.begin_step(SAGA, "shipping", seq=2, compensable=True)
    decision, row = started.claim_compensation(SAGA, "shipping")
    assert decision == D.NEVER_STARTED
    assert (row["compensation_status"], row["compensation_attempts"]) == ("not_needed", 0)
    # no longer going forward; payment may still be owed a compensation
    assert started.saga(SAGA)["status"] == "compensating"
    assert timeline(started)[-1] == ("shipping", "compensation_never_started", None)


def test_claim_for_the_only_pending_step_settles_the_saga(started):
    started.begin_step(SAGA, "payment", seq=1, compensable=True)
    assert started.claim_compensation(SAGA, "payment")[0] == D.NEVER_STARTED
    assert started.saga(SAGA)["status"] == "compensated"
    # both rows of the one transaction (log.py writes the saga's before the step's)
    assert set(timeline(started)[-2:]) == {("payment", "compensation_never_started", None),
                                           (None, "compensated", None)}


def test_claim_for_a_read_only_step(started):
    succeeded_step(started, "fraud", 1, {"score": 3}, compensable=False)
    saga_before, step_before = started.saga(SAGA), step_row(started, "fraud")
    decision, row = started.claim_compensation(SAGA, "fraud")
    assert decision == D.NO_COMPENSATION and row == step_before
    assert started.saga(SAGA) == saga_before


@pytest.mark.parametrize("outcome", ["failed", "running", "succeeded"])
def test_claim_compensates_a_started_action(started, clock, outcome):
    started.begin_step(SAGA, "payment", seq=1, compensable=True)
    started.action_started(SAGA, "payment")
    if outcome == "failed":
        started.action_failed(SAGA, "payment", "ReadTimeout", final=True)
    elif outcome == "succeeded":
        started.action_succeeded(SAGA, "payment", {"authorization_id": "auth-7"})
    clock.tick()
    decision, row = started.claim_compensation(SAGA, "payment")
    assert decision == D.COMPENSATE
    assert row["action_status"] == outcome
    assert (row["compensation_status"], row["compensation_attempts"]) == ("running", 1)
    assert row["idempotency_key"] == "order-42:payment"
    assert row["result"] == ({"authorization_id": "auth-7"} if outcome == "succeeded" else None)
    saga = started.saga(SAGA)
    assert (saga["status"], saga["updated_at"]) == ("compensating", 1_001.0)
    assert timeline(started)[-1] == ("payment", "compensation_compensate", {"attempt": 1})


def test_a_done_compensation_is_never_claimed_again(started, clock):
    failed_step(started)
    started.claim_compensation(SAGA, "payment")
    clock.tick()
    started.compensation_done(SAGA, "payment", {"voided": True})
    done = step_row(started, "payment")
    assert (done["compensation_status"], done["compensation_result"], done["compensated_at"]) == \
        ("done", {"voided": True}, 1_001.0)
    assert started.saga(SAGA)["status"] == "compensated"
    for _ in range(2):  # a rerun, a cleared compensation task
        clock.tick()
        decision, row = started.claim_compensation(SAGA, "payment")
        assert decision == D.ALREADY_DONE
        assert row == done
    assert started.saga(SAGA)["status"] == "compensated"
    assert [e["event"] for e in started.events(SAGA)][-2:] == ["compensation_already_done"] * 2


def test_a_killed_compensation_is_claimed_again_with_the_same_key(started):
    """Claimed, then killed before it reported: the retry compensates again. That is safe because
    the call carries the same idempotency key, so the service answers it with the first answer."""
    failed_step(started)
    _, first = started.claim_compensation(SAGA, "payment")
    decision, second = started.claim_compensation(SAGA, "payment")
    assert decision == D.COMPENSATE
    assert (second["compensation_status"], second["compensation_attempts"]) == ("running", 2)
    assert second["idempotency_key"] == first["idempotency_key"] == "order-42:payment"
    assert started.saga(SAGA)["status"] == "compensating"
    assert [e["detail"] for e in started.events(SAGA) if e["event"] == "compensation_compensate"] == \
        [{"attempt": 1}, {"attempt": 2}]


# --- failed compensations ---------------------------------------------------------------------------------

def test_a_non_final_compensation_failure_changes_no_status(started):
    failed_step(started)
    started.claim_compensation(SAGA, "payment")
    started.compensation_failed(SAGA, "payment", "HTTPError: 503", final=False)
    row = step_row(started, "payment")
    assert (row["compensation_status"], row["error"]) == ("running", "Timeout: no answer")
    assert started.saga(SAGA)["status"] == "compensating"
    decision, row = started.claim_compensation(SAGA, "payment")  # the retry
    assert (decision, row["compensation_attempts"]) == (D.COMPENSATE, 2)


def test_a_final_compensation_failure_leaves_the_saga_for_a_person(started):
    failed_step(started)
    started.claim_compensation(SAGA, "payment")
    started.compensation_failed(SAGA, "payment", "HTTPError: 503", final=True)
    row = step_row(started, "payment")
    assert (row["compensation_status"], row["compensation_error"]) == ("failed", "HTTPError: 503")
    saga = started.saga(SAGA)
    assert (saga["status"], saga["cause"]) == ("compensation_failed", "payment: Timeout: no answer")
    assert started.finish(SAGA)["status"] == "compensation_failed"
    assert timeline(started)[-1] == ("payment", "compensation_failed", {"error": "HTTPError: 503", "final": True})
    # a person clears the compensation task: it is claimed again
    decision, row = started.claim_compensation(SAGA, "payment")
    assert (decision, row["compensation_status"], row["compensation_attempts"]) == (D.COMPENSATE, "running", 2)


def test_a_cleared_compensation_that_succeeds_compensates_the_saga(started):
    failed_step(started)
    started.claim_compensation(SAGA, "payment")
    started.compensation_failed(SAGA, "payment", "HTTPError: 503", final=True)
    started.claim_compensation(SAGA, "payment")  # the person cleared the task after fixing the service
    started.compensation_done(SAGA, "payment", {"voided": True})
    assert step_row(started, "payment")["compensation_status"] == "done"
    assert started.finish(SAGA)["status"] == "compensated"


# --- finish -------------------------------------------------------------------------------------------------

def test_finish_when_every_begun_compensable_step_is_settled(started):
    succeeded_step(started, "inventory", 1)
    failed_step(started, "payment", 2)
    started.begin_step(SAGA, "shipping", seq=3, compensable=True)
    for step in ("shipping", "payment", "inventory"):
        decision, _ = started.claim_compensation(SAGA, step)
        if decision == D.COMPENSATE:
            assert started.saga(SAGA)["status"] == "compensating"
            started.compensation_done(SAGA, step, {"undone": step})
    assert started.saga(SAGA)["status"] == "compensated"
    assert started.finish(SAGA)["status"] == "compensated"
    assert started.finish(SAGA)["status"] == "compensated"  # a retried finalize
    assert [e["event"] for e in started.events(SAGA) if e["step"] is None].count("compensated") == 1


@pytest.mark.parametrize("with_read_only_step", [True, False])
def test_finish_of_a_saga_that_never_committed_and_has_nothing_to_undo(started, clock, with_read_only_step):
    if with_read_only_step:
        started.begin_step(SAGA, "fraud", seq=1, compensable=False)
        started.action_started(SAGA, "fraud")
        started.action_failed(SAGA, "fraud", "FraudServiceDown", final=True)
    else:
        started.set_cause(SAGA, "rules: rejected")
    clock.tick()
    saga = started.finish(SAGA)
    assert (saga["status"], saga["updated_at"]) == ("compensated", 1_001.0)
    assert saga["cause"] == ("fraud: FraudServiceDown" if with_read_only_step else "rules: rejected")
    assert timeline(started)[-1] == (None, "compensated", None)


def test_finish_while_a_compensation_is_still_owed_stays_compensating(started):
    succeeded_step(started, "inventory", 1)
    succeeded_step(started, "payment", 2)
    started.claim_compensation(SAGA, "payment")
    started.compensation_done(SAGA, "payment", {"voided": True})
    # inventory's compensation never ran (its task was killed before claiming)
    assert started.finish(SAGA)["status"] == "compensating"
    assert not any(e["event"] == "compensated" and e["step"] is None for e in started.events(SAGA))


@pytest.mark.parametrize("earlier_step", [True, False])
def test_finish_settles_a_step_that_began_but_whose_action_never_started(started, earlier_step):
    """A begin task can fail after it registered its step (killed after its commit, its retries
    unable to reach the log; the run marked failed): the action never runs, and the compensation,
    a teardown of that failed setup, never runs either (Airflow marks it upstream_failed), so
    nobody claims it. Nothing is owed for that step: the saga is compensated, not left compensating."""
    if earlier_step:
        succeeded_step(started, "inventory", 1)
    started.begin_step(SAGA, "payment", seq=2, compensable=True)
    if earlier_step:  # its compensation runs: its setup succeeded
        started.claim_compensation(SAGA, "inventory")
        started.compensation_done(SAGA, "inventory", {"released": "res-1"})
        assert started.saga(SAGA)["status"] == "compensating"
    assert started.finish(SAGA)["status"] == "compensated"
    assert step_row(started, "payment")["compensation_status"] == "not_needed"
    assert timeline(started)[-2:] == [("payment", "compensation_never_started", None), (None, "compensated", None)]
    assert started.finish(SAGA)["status"] == "compensated"  # a retried finalize
    with pytest.raises(SagaNotRunning):
        started.action_started(SAGA, "payment")  # a cleared action of the ended saga refuses


def test_finish_of_a_running_saga_with_an_owed_compensation_does_not_declare_it_compensated(started):
    succeeded_step(started, "payment", 1)
    assert started.finish(SAGA)["status"] not in ("compensated", "committed")


def test_finish_of_a_committed_saga(started):
    succeeded_step(started, "payment", 1)
    started.commit(SAGA)
    assert started.finish(SAGA)["status"] == "committed"


# --- the timeline -------------------------------------------------------------------------------------------

def test_the_event_timeline_holds_one_row_per_transition(log, clock):
    log.start(SAGA, dag_id="order_fulfilment", run_id="manual__1", payload={"order_id": 42})
    steps = [
        lambda: log.begin_step(SAGA, "payment", seq=1, compensable=True),
        lambda: log.action_started(SAGA, "payment"),
        lambda: log.action_failed(SAGA, "payment", "ReadTimeout", final=False),
        lambda: log.action_started(SAGA, "payment"),
        lambda: log.action_failed(SAGA, "payment", "ReadTimeout", final=True),
        lambda: log.claim_compensation(SAGA, "payment"),
        lambda: log.compensation_failed(SAGA, "payment", "HTTPError: 503", final=False),
        lambda: log.claim_compensation(SAGA, "payment"),
        lambda: log.compensation_done(SAGA, "payment", {"authorization": "voided"}),
        lambda: log.claim_compensation(SAGA, "payment"),
        lambda: log.finish(SAGA),
        lambda: log.note(SAGA, None, "notified", {"channel": "#orders"}),
    ]
    for call in steps:
        clock.tick()
        call()
    events = log.events(SAGA)
    assert [(e["step"], e["event"], e["detail"], e["at"]) for e in events] == [
        (None, "started", {"dag_id": "order_fulfilment", "run_id": "manual__1"}, 1_000.0),
        ("payment", "began", {"idempotency_key": "order-42:payment"}, 1_001.0),
        ("payment", "action_started", {"attempt": 1}, 1_002.0),
        ("payment", "action_failed", {"error": "ReadTimeout", "final": False}, 1_003.0),
        ("payment", "action_started", {"attempt": 2}, 1_004.0),
        ("payment", "action_failed", {"error": "ReadTimeout", "final": True}, 1_005.0),
        ("payment", "compensation_compensate", {"attempt": 1}, 1_006.0),
        ("payment", "compensation_failed", {"error": "HTTPError: 503", "final": False}, 1_007.0),
        ("payment", "compensation_compensate", {"attempt": 2}, 1_008.0),
        ("payment", "compensated", {"result": {"authorization": "voided"}}, 1_009.0),
        (None, "compensated", None, 1_009.0),  # the saga settles in the same transaction
        ("payment", "compensation_already_done", None, 1_010.0),
        (None, "notified", {"channel": "#orders"}, 1_012.0),  # finish() had nothing left to change
    ]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert {e["saga_id"] for e in events} == {SAGA}


def test_timelines_of_two_sagas_do_not_mix(log):
    log.start("order-1", dag_id="d", run_id="r1")
    log.start("order-2", dag_id="d", run_id="r2")
    log.begin_step("order-2", "payment", seq=1, compensable=True)
    assert [e["event"] for e in log.events("order-1")] == ["started"]
    assert [e["event"] for e in log.events("order-2")] == ["started", "began"]
    assert log.steps("order-1") == []


# --- a whole saga -------------------------------------------------------------------------------------------

def test_a_multi_step_saga_failing_at_its_third_step(log, clock):
    """inventory (1), fraud check (2, read-only), payment (3) fails for good, shipping (4) never
    begins. The compensations run in reverse declaration order."""
    log.start(SAGA, dag_id="order_fulfilment", run_id="manual__1", payload={"order_id": 42})
    declared = [("inventory", 1, True), ("fraud", 2, False), ("payment", 3, True), ("shipping", 4, True)]
    succeeded_step(log, "inventory", 1, {"reservation_id": "res-1"})
    succeeded_step(log, "fraud", 2, {"score": 3}, compensable=False)
    log.begin_step(SAGA, "payment", seq=3, compensable=True)
    for attempt in (1, 2):
        log.action_started(SAGA, "payment")
        log.action_failed(SAGA, "payment", "Declined", final=attempt == 2)
    assert log.saga(SAGA)["status"] == "running"

    order = compensation_order([(name, seq) for name, seq, compensable in declared if compensable])
    assert order == ["shipping", "payment", "inventory"]
    decisions = {}
    for step in order:
        clock.tick()
        decision, row = log.claim_compensation(SAGA, step)
        decisions[step] = decision
        if decision == D.COMPENSATE:
            assert log.saga(SAGA)["status"] == "compensating"
            log.compensation_done(SAGA, step, {"undone": row["idempotency_key"]})
    assert decisions == {"shipping": D.NEVER_STARTED, "payment": D.COMPENSATE, "inventory": D.COMPENSATE}
    assert log.claim_compensation(SAGA, "fraud")[0] == D.NO_COMPENSATION

    saga = log.finish(SAGA)
    assert (saga["status"], saga["cause"]) == ("compensated", "payment: Declined")
    rows = {s["step"]: s for s in log.steps(SAGA)}
    assert list(rows) == ["inventory", "fraud", "payment"]
    assert {name: (r["action_status"], r["action_attempts"], r["compensation_status"], r["compensation_attempts"])
            for name, r in rows.items()} == {
        "inventory": ("succeeded", 1, "done", 1),
        "fraud": ("succeeded", 1, "none", 0),
        "payment": ("failed", 2, "done", 1),
    }
    assert rows["payment"]["compensation_result"] == {"undone": "order-42:payment"}
    assert rows["inventory"]["compensated_at"] == 1_003.0
    assert [(e["step"], e["event"]) for e in log.events(SAGA)][-6:] == [
        ("payment", "compensation_compensate"), ("payment", "compensated"),
        ("inventory", "compensation_compensate"), ("inventory", "compensated"),
        (None, "compensated"),
        ("fraud", "compensation_no_compensation")]
    # a forward step of the compensated saga is refused; the succeeded ones replay
    with pytest.raises(SagaNotRunning):
        log.action_started(SAGA, "payment")
    assert log.action_started(SAGA, "inventory")["result"] == {"reservation_id": "res-1"}


# --- concurrency on SQLite ------------------------------------------------------------------------------------

def test_overlapping_claims_on_sqlite_are_serialised(started, engine):
    """A retry overlapping a dying compensation attempt (two processes): the two claims must be
    serialised, counting attempts 1 and 2, never both 1."""
    failed_step(started)
    both_read = threading.Barrier(2, timeout=1)
    armed = threading.local()

    @event.listens_for(engine, "after_cursor_execute")
    def meet_after_reading_the_step(conn, cursor, statement, parameters, context, executemany):
        if getattr(armed, "on", False) and statement.lstrip().startswith("SELECT conduit_saga_step."):
            armed.on = False
            try:  # a serialised log lets only one caller get here at a time: the wait times out
                both_read.wait()
            except threading.BrokenBarrierError:
                pass

    def claim():
        armed.on = True
        return started.claim_compensation(SAGA, "payment")

    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(claim) for _ in range(2)]]
    assert sorted(row["compensation_attempts"] for _, row in results) == [1, 2]
    assert step_row(started, "payment")["compensation_attempts"] == 2


# --- trying a business transaction again under a new saga ----------------------------------------


def test_a_saga_that_supersedes_a_compensated_one_starts_with_keys_of_its_own(started):
    failed_step(started)
    started.claim_compensation(SAGA, "payment")
    started.compensation_done(SAGA, "payment", {"voided": True})
    assert started.finish(SAGA)["status"] == "compensated"
    again = started.start(f"{SAGA}-attempt-2", dag_id="order_fulfilment", run_id="manual__2", supersedes=SAGA)
    assert again["status"] == "running"
    key = started.begin_step(f"{SAGA}-attempt-2", "payment", seq=1, compensable=True)
    assert key != step_row(started, "payment")["idempotency_key"]


@pytest.mark.parametrize("state", ["committed", "running", "compensation_failed", "never started"])
def test_a_saga_may_not_supersede_one_that_is_not_compensated(started, state):
    earlier = "order-41" if state == "never started" else SAGA
    if state == "committed":
        started.commit(SAGA)
    elif state == "compensation_failed":
        succeeded_step(started, "payment", 1, {"auth": "A-1"})
        started.set_cause(SAGA, "shipping refused")
        started.claim_compensation(SAGA, "payment")
        started.compensation_failed(SAGA, "payment", "503", final=True)
    with pytest.raises(SagaConflict, match=f"saga {earlier!r} did, which (is {state}|was never started)"):
        started.start(f"{SAGA}-attempt-2", dag_id="order_fulfilment", run_id="manual__2", supersedes=earlier)
    assert started.saga(f"{SAGA}-attempt-2") is None
