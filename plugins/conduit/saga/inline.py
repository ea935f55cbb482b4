"""A saga run inside one task: the same saga log, idempotency keys and compensations as the
task-per-step form, for batches where a task per step would cost more than the work (a nightly
run over hundreds of orders). The flow is plain code (like a Temporal workflow): each
``saga.step(...)`` is logged before and after, replays its logged result when the task is retried,
and is refused once the saga stopped running. Compensations run in a separate teardown task
(:func:`compensate`), so they still run when the flow's task fails, times out or is marked failed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowTaskTimeout

from conduit.crash import crash_point
from conduit.saga.model import CompensationDecision, compensation_order
from conduit.saga.operators import StepContext, result_to_undo

if TYPE_CHECKING:
    from conduit.saga.log import SagaLog


class InlineSaga:
    """The flow's handle on its saga. ``final`` says whether a failure now is the last try (then
    the failure becomes the saga's cause)."""

    def __init__(self, log: SagaLog, saga_id: str, *, context: Any = None, final: Callable[[BaseException], bool]):
        self.log, self.saga_id, self.context, self._final = log, saga_id, context, final
        saga = log.saga(saga_id)
        self.payload: dict[str, Any] = saga["payload"] or {}
        self.results = {s["step"]: s["result"] for s in log.steps(saga_id) if s["result"] is not None}
        self._seq = 0

    def step(self, name: str, action: Callable[[StepContext], Any], *, compensable: bool = False) -> Any:
        """Run one step once in effect; its result is logged, kept in ``results`` and returned."""
        self._seq += 1
        key = self.log.begin_step(self.saga_id, name, seq=self._seq, compensable=compensable)
        row = self.log.action_started(self.saga_id, name)
        if row["action_status"] == "succeeded":
            self.results[name] = row["result"]
            return row["result"]
        try:
            result = action(StepContext(self.saga_id, name, key, self.payload, dict(self.results), None, self.context,
                                        row["started_at"]))
        except (Exception, AirflowTaskTimeout) as exc:  # a timeout is a BaseException: log it like any failure
            self.log.action_failed(self.saga_id, name, f"{type(exc).__name__}: {exc}", final=self._final(exc))
            raise
        crash_point("saga.action_done")
        self.log.action_succeeded(self.saga_id, name, result)
        self.results[name] = result
        return result

    def abort(self, cause: str) -> None:
        """End the saga on purpose (a rule rejected it): its compensations follow."""
        from conduit.exceptions import SagaAborted

        self.log.set_cause(self.saga_id, cause)
        raise SagaAborted(f"saga {self.saga_id}: {cause}")

    def commit(self) -> dict:
        return self.log.commit(self.saga_id)


def compensate(log: SagaLog, saga_id: str, compensations: Mapping[str, Callable[[StepContext], Any]], *,
               final: bool, context: Any = None,
               actions: Mapping[str, Callable[[StepContext], Any]] | None = None) -> tuple[dict, dict[str, str]]:
    """Run the compensations the saga still owes, in reverse step order, each at most once in
    effect (the log decides). Returns the saga's row and the compensations that raised (step ->
    error); the others still ran. On the ``final`` try a failure leaves the saga
    ``compensation_failed``; before it, the next try resumes the failed ones. A step's action in
    ``actions`` whose outcome is unknown (the flow's task died in its call, or it failed on a
    429/5xx or an unanswered request) is repeated with its key first
    (:func:`~conduit.saga.operators.result_to_undo`)."""
    steps = {s["step"]: s for s in log.steps(saga_id)}
    results = {name: s["result"] for name, s in steps.items() if s["result"] is not None}
    payload = log.saga(saga_id)["payload"] or {}
    failed: dict[str, str] = {}
    for name in compensation_order([(s["step"], s["seq"]) for s in steps.values() if s["compensable"]]):
        decision, row = log.claim_compensation(saga_id, name)
        if decision != CompensationDecision.COMPENSATE:
            continue
        ctx = StepContext(saga_id, name, row["idempotency_key"], payload, results, row["result"], context)
        try:
            ctx = replace(ctx, result=result_to_undo(log, (actions or {}).get(name), ctx, row))
            log.compensation_done(saga_id, name, compensations[name](ctx))
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
            log.compensation_failed(saga_id, name, failed[name], final=final)
        except AirflowTaskTimeout as exc:  # the task's time is up: log this one, leave the rest to the next try
            log.compensation_failed(saga_id, name, f"{type(exc).__name__}: {exc}", final=final)
            raise
    return log.finish(saga_id), failed
