"""The saga's bookkeeping as pure functions over plain values (no Airflow, no database).

A saga is a run of ordered steps; each step has an action and, if it changes something that can
be undone, a compensation. Airflow runs tasks at least once (retries, clears, a killed task
retried), so "exactly once" is an exactly-once *effect*: every call carries an idempotency key
derived from the saga and the step (never from a try or a task-instance id), the services answer
a repeated key with the first answer, and the saga log decides whether a compensation is still
owed. These functions are those decisions.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class SagaStatus(StrEnum):
    RUNNING = "running"
    COMMITTED = "committed"  # every forward step succeeded: nothing will be compensated
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"  # a compensation ran out of retries: a person must act


class ActionStatus(StrEnum):
    PENDING = "pending"  # the step began (its compensation is registered); the action has not started
    RUNNING = "running"  # the action started: its effect may or may not have happened
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the action raised; an effect may still have happened (a lost response)


# failures after which the action's request may have been done, or may still be: a call whose
# tries ran out with an answer that is no proof nothing was done (a 429/5xx, a try sent and never
# answered: conduit.exceptions.ServiceOutcomeUnknown), or the task's timeout in the middle of the
# call. Not among them: a business refusal or another 4xx (the service said no), a call that never
# reached the service (ServiceRetryableError), an error of the action's own code.
_OUTCOME_UNKNOWN_ERRORS = ("ServiceOutcomeUnknown", "AirflowTaskTimeout")


def outcome_unknown(status: str, error: str | None, tries: Iterable[tuple[str, str | None]] = ()) -> bool:
    """Whether a step's action may have had an effect nobody saw, or may still have one: it was
    running when its task died, or any of its tries failed in a way that leaves its requests
    possibly done or still to be done (the saga log's ``error`` begins with the exception's class
    name). ``status`` and ``error`` are the step's row (its last try); ``tries`` are its action
    events from the saga log, oldest first (:func:`tries_outcome_unknown`): a last try that never
    reached the service proves nothing about an earlier one that did. Its compensation repeats it
    with its key first (``conduit.saga.operators.result_to_undo``)."""
    if status == ActionStatus.RUNNING:
        return True
    if status != ActionStatus.FAILED:  # succeeded: its outcome is the logged result; pending: never started
        return False
    return error_outcome_unknown(error) or tries_outcome_unknown(tries)


def error_outcome_unknown(error: str | None) -> bool:
    """Whether a logged failure (``"<exception class>: <message>"``) leaves the try's requests
    possibly done or still to be done."""
    return (error or "").split(":", 1)[0] in _OUTCOME_UNKNOWN_ERRORS


def tries_outcome_unknown(tries: Iterable[tuple[str, str | None]]) -> bool:
    """Whether any try of an action may have been done: ``tries`` are its ``action_started``,
    ``action_failed`` (with the error) and ``action_succeeded`` events, oldest first. A try that
    failed with an unknown outcome counts, and so does a try that started and never ended (its
    task killed in the middle of its call, a later try started after it)."""
    open_tries = 0
    for event, error in tries:
        if event == "action_started":
            open_tries += 1
        elif event in ("action_failed", "action_succeeded"):
            open_tries = max(0, open_tries - 1)
            if event == "action_failed" and error_outcome_unknown(error):
                return True
    return open_tries > 0


class CompensationStatus(StrEnum):
    NONE = "none"
    RUNNING = "running"
    DONE = "done"
    NOT_NEEDED = "not_needed"
    FAILED = "failed"


class CompensationDecision(StrEnum):
    COMPENSATE = "compensate"
    SAGA_COMMITTED = "saga_committed"  # teardowns run on success too: nothing to undo
    ALREADY_DONE = "already_done"  # a rerun or a cleared task: the effect was undone before
    NEVER_STARTED = "never_started"  # the action never started: there is nothing to undo
    NO_COMPENSATION = "no_compensation"  # a read-only step


def idempotency_key(saga_id: str, step: str, purpose: str | None = None) -> str:
    """The key every call of a step sends: stable across retries, clears and reruns of the run."""
    return f"{saga_id}:{step}" + (f":{purpose}" if purpose else "")


def compensation_decision(saga: SagaStatus, action: ActionStatus, compensation: CompensationStatus,
                          compensable: bool) -> CompensationDecision:
    """Whether a step's compensation must run now. A FAILED or RUNNING action is compensated: the
    call may have taken effect before the response was lost, and the compensation resolves that
    by looking the action up by its idempotency key."""
    if not compensable:
        return CompensationDecision.NO_COMPENSATION
    if saga == SagaStatus.COMMITTED:
        return CompensationDecision.SAGA_COMMITTED
    if compensation in (CompensationStatus.DONE, CompensationStatus.NOT_NEEDED):
        return CompensationDecision.ALREADY_DONE
    if action == ActionStatus.PENDING:
        return CompensationDecision.NEVER_STARTED
    return CompensationDecision.COMPENSATE


def may_run_forward(saga: SagaStatus) -> bool:
    """Forward steps only run while the saga runs: a cleared and rerun step of a compensated saga
    must not reserve or charge again (start a new saga instead)."""
    return saga == SagaStatus.RUNNING


def status_after_compensations(compensations: list[CompensationStatus]) -> SagaStatus:
    """The saga's state once its compensations have run (statuses of the compensable steps)."""
    if any(c == CompensationStatus.FAILED for c in compensations):
        return SagaStatus.COMPENSATION_FAILED
    if all(c in (CompensationStatus.DONE, CompensationStatus.NOT_NEEDED) for c in compensations):
        return SagaStatus.COMPENSATED
    return SagaStatus.COMPENSATING


def compensation_order(steps: list[tuple[str, int]]) -> list[str]:
    """Compensable steps (name, sequence) in the order their compensations run: the reverse of
    the order the steps were declared in."""
    return [name for name, _ in sorted(steps, key=lambda s: s[1], reverse=True)]
