"""The saga's pure bookkeeping (conduit.saga.model): every branch, no database, no Airflow."""

from __future__ import annotations

import itertools

import pytest

from conduit.saga.model import (
    ActionStatus,
    CompensationDecision,
    CompensationStatus,
    SagaStatus,
    compensation_decision,
    compensation_order,
    idempotency_key,
    may_run_forward,
    status_after_compensations,
)

S, A, C, D = SagaStatus, ActionStatus, CompensationStatus, CompensationDecision


def test_persisted_vocabulary():
    """The values are what the saga log stores and the operators compare against: renaming one
    would strand every saga already in a log."""
    assert [s.value for s in S] == ["running", "committed", "compensating", "compensated", "compensation_failed"]
    assert [s.value for s in A] == ["pending", "running", "succeeded", "failed"]
    assert [s.value for s in C] == ["none", "running", "done", "not_needed", "failed"]
    assert [s.value for s in D] == ["compensate", "saga_committed", "already_done", "never_started",
                                    "no_compensation"]


# --- compensation_decision ------------------------------------------------------------------------

# The rules in the order they apply: (why, applies to (saga, action, compensation, compensable), decision).
RULES = [
    ("a read-only step has nothing to undo, whatever happened",
     lambda s, a, c, k: not k, D.NO_COMPENSATION),
    ("the saga committed: teardowns run on success too and must undo nothing",
     lambda s, a, c, k: s == S.COMMITTED, D.SAGA_COMMITTED),
    ("the compensation already took effect (done) or was found unneeded: a rerun never undoes twice",
     lambda s, a, c, k: c in (C.DONE, C.NOT_NEEDED), D.ALREADY_DONE),
    ("the action never started: no call was made, so nothing can have happened",
     lambda s, a, c, k: a == A.PENDING, D.NEVER_STARTED),
    ("the action started (running, failed: maybe a lost response) or succeeded: undo it, also after a "
     "killed or failed compensation attempt",
     lambda s, a, c, k: True, D.COMPENSATE),
]


def expected_decision(saga, action, compensation, compensable) -> tuple[CompensationDecision, str]:
    for why, applies, decision in RULES:
        if applies(saga, action, compensation, compensable):
            return decision, why
    raise AssertionError("the rules cover every combination")


ALL_COMBINATIONS = list(itertools.product(S, A, C, [True, False]))


@pytest.mark.parametrize(("saga", "action", "compensation", "compensable"), ALL_COMBINATIONS,
                         ids=[f"{s}-{a}-{c}-{'compensable' if k else 'read_only'}"
                              for s, a, c, k in ALL_COMBINATIONS])
def test_compensation_decision_all_combinations(saga, action, compensation, compensable):
    decision, why = expected_decision(saga, action, compensation, compensable)
    assert compensation_decision(saga, action, compensation, compensable) == decision, why


def test_the_table_reaches_every_decision():
    reached = {expected_decision(*combo)[0] for combo in ALL_COMBINATIONS}
    assert reached == set(D)
    assert len(ALL_COMBINATIONS) == 5 * 4 * 5 * 2


@pytest.mark.parametrize(("saga", "action", "compensation", "decision", "why"), [
    (S.COMPENSATING, A.FAILED, C.NONE, D.COMPENSATE, "a failed call may have taken effect (lost response)"),
    (S.RUNNING, A.RUNNING, C.NONE, D.COMPENSATE, "a killed action may have taken effect"),
    (S.RUNNING, A.SUCCEEDED, C.NONE, D.COMPENSATE, "a later step failed: undo the effect"),
    (S.COMPENSATING, A.SUCCEEDED, C.RUNNING, D.COMPENSATE, "the compensation's attempt was killed: retry it"),
    (S.COMPENSATION_FAILED, A.SUCCEEDED, C.FAILED, D.COMPENSATE,
     "a person cleared the failed compensation: try again"),
    (S.COMPENSATED, A.SUCCEEDED, C.DONE, D.ALREADY_DONE, "a cleared compensation of a compensated saga"),
    (S.COMPENSATING, A.FAILED, C.NOT_NEEDED, D.ALREADY_DONE, "found unneeded before"),
    (S.RUNNING, A.PENDING, C.NONE, D.NEVER_STARTED, "begun, action never started"),
    (S.COMPENSATING, A.PENDING, C.RUNNING, D.NEVER_STARTED, "pending wins over a running compensation"),
    (S.COMMITTED, A.SUCCEEDED, C.NONE, D.SAGA_COMMITTED, "the saga committed"),
    (S.COMMITTED, A.FAILED, C.FAILED, D.SAGA_COMMITTED, "committed wins over any step state"),
])
def test_compensation_decision_named_cases(saga, action, compensation, decision, why):
    assert compensation_decision(saga, action, compensation, True) == decision, why
    assert compensation_decision(saga, action, compensation, False) == D.NO_COMPENSATION


def test_compensation_decision_accepts_the_strings_the_log_stores():
    assert compensation_decision(S("compensating"), A("failed"), C("none"), True) == "compensate"
    assert compensation_decision(S("committed"), A("failed"), C("none"), True) == "saga_committed"


# --- may_run_forward --------------------------------------------------------------------------------

@pytest.mark.parametrize("saga", list(S))
def test_may_run_forward_only_while_running(saga):
    assert may_run_forward(saga) is (saga == S.RUNNING)


# --- status_after_compensations -------------------------------------------------------------------

@pytest.mark.parametrize(("compensations", "status"), [
    ([], S.COMPENSATED),  # nothing compensable ever began: nothing to undo
    ([C.DONE], S.COMPENSATED),
    ([C.NOT_NEEDED], S.COMPENSATED),
    ([C.DONE, C.NOT_NEEDED, C.DONE], S.COMPENSATED),
    ([C.FAILED], S.COMPENSATION_FAILED),
    ([C.DONE, C.FAILED], S.COMPENSATION_FAILED),
    ([C.FAILED, C.RUNNING, C.NONE], S.COMPENSATION_FAILED),  # a failure wins over work still owed
    ([C.NONE], S.COMPENSATING),
    ([C.RUNNING], S.COMPENSATING),
    ([C.DONE, C.RUNNING], S.COMPENSATING),
    ([C.NOT_NEEDED, C.NONE], S.COMPENSATING),
])
def test_status_after_compensations(compensations, status):
    assert status_after_compensations(compensations) == status


@pytest.mark.parametrize("pair", list(itertools.product(C, repeat=2)), ids=str)
def test_status_after_compensations_every_pair(pair):
    settled = {C.DONE, C.NOT_NEEDED}
    if C.FAILED in pair:
        expected = S.COMPENSATION_FAILED
    elif set(pair) <= settled:
        expected = S.COMPENSATED
    else:
        expected = S.COMPENSATING
    assert status_after_compensations(list(pair)) == expected


# --- compensation_order -----------------------------------------------------------------------------

def test_compensation_order_is_reverse_declaration():
    assert compensation_order([("inventory", 1), ("payment", 3), ("shipping", 4)]) == \
        ["shipping", "payment", "inventory"]


def test_compensation_order_sorts_by_sequence_not_input_order():
    assert compensation_order([("payment", 3), ("inventory", 1), ("shipping", 4)]) == \
        ["shipping", "payment", "inventory"]


def test_compensation_order_ties_keep_input_order():
    steps = [("a", 1), ("b", 2), ("c", 2), ("d", 3), ("e", 2)]
    assert compensation_order(steps) == ["d", "b", "c", "e", "a"]
    assert steps == [("a", 1), ("b", 2), ("c", 2), ("d", 3), ("e", 2)]  # the input is not sorted in place


def test_compensation_order_empty_and_single():
    assert compensation_order([]) == []
    assert compensation_order([("only", 7)]) == ["only"]


# --- idempotency_key ---------------------------------------------------------------------------------

def test_idempotency_key_format():
    assert idempotency_key("order-42", "payment") == "order-42:payment"
    assert idempotency_key("order-42", "payment", "void") == "order-42:payment:void"
    assert idempotency_key("order-42", "payment", None) == "order-42:payment"


def test_idempotency_key_is_stable():
    """Derived from the saga and the step only: every retry, clear and rerun sends the same key."""
    assert {idempotency_key("order-42", "payment") for _ in range(3)} == {"order-42:payment"}
    assert {idempotency_key("order-42", "payment", "refund") for _ in range(3)} == {"order-42:payment:refund"}


def test_idempotency_keys_are_distinct_per_saga_step_and_purpose():
    keys = [idempotency_key(saga, step, purpose)
            for saga in ("order-42", "order-43")
            for step in ("inventory", "payment")
            for purpose in (None, "void", "refund", "release")]
    assert len(set(keys)) == len(keys) == 16
    # the action's key is not any compensation's key: the service must not answer one with the other
    assert idempotency_key("order-42", "payment") not in {
        idempotency_key("order-42", "payment", p) for p in ("void", "refund")}
