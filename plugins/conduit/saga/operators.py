"""The tasks a saga is made of. :class:`conduit.saga.Saga` wires them; they only talk to the saga
log and call the step's action or compensation (plain functions over a :class:`StepContext`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, AirflowTaskTimeout

from conduit.saga.model import outcome_unknown

if TYPE_CHECKING:
    from airflow.sdk import Context

    from conduit.saga.log import SagaLog


@dataclass(frozen=True)
class StepContext:
    """What an action or a compensation gets: the saga's business data, its step's idempotency
    key, the results of the steps before it (from the saga log, not XCom), for a compensation its
    own action's result (None when the action's answer was lost) and, for an action, when its
    first attempt started (epoch seconds: a deadline that survives the task's retries)."""

    saga_id: str
    step: str
    idempotency_key: str
    payload: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    context: Any = None
    started_at: float | None = None

    def key(self, purpose: str | None = None) -> str:
        return f"{self.idempotency_key}:{purpose}" if purpose else self.idempotency_key


def is_last_try(ti: Any, retries: int) -> bool:
    """Whether Airflow will not retry a failure of this try, decided as the Execution API decides
    (``_is_eligible_to_retry``: ``max_tries != 0 and try_number <= max_tries``). Clearing a task
    sets ``max_tries = try_number + retries``, so a cleared task has all its retries again: counting
    against ``retries`` alone would call every try after a clear the last one."""
    max_tries = getattr(ti, "max_tries", None)
    if max_tries is None:  # not a runtime task instance: the operator's own count
        max_tries = retries
    return max_tries == 0 or ti.try_number > max_tries


def result_to_undo(log: SagaLog, action: Callable[[StepContext], Any] | None, ctx: StepContext,
                   row: dict[str, Any]) -> Any:
    """What a compensation undoes: the action's logged result; or, when ``action`` is given, for an
    action whose outcome is unknown (:func:`~conduit.saga.model.outcome_unknown`: a task died in
    the middle of its call, or any of its tries failed on a 429/5xx or an unanswered request, also
    when a later try never reached the service), the outcome of repeating it with its idempotency
    key. That call may still land (its request waiting in the service) after the compensation found
    nothing, and nothing would undo it; the service answers the repeat with the first call's
    outcome or does it now, so the lost call, arriving later, is a repeat that does nothing. None
    when the service refuses it for a business reason: that refusal is the key's answer, which the
    lost call, the same request, gets too, so it does nothing either. A repeat that gets no answer
    for the key (a 429/5xx, a key still in use by a request being processed: ``ServiceOutcomeUnknown``)
    fails the compensation's try, which is retried. Logged as ``action_repeated``."""
    from conduit.exceptions import BusinessRejection

    if action is None or not outcome_unknown(row["action_status"], row.get("error"),
                                             log.action_tries(ctx.saga_id, ctx.step)):
        return row["result"]
    try:
        result = action(replace(ctx, started_at=row["started_at"]))
    except BusinessRejection as exc:
        log.note(ctx.saga_id, ctx.step, "action_repeated", {"refused": str(exc)})
        return None
    log.note(ctx.saga_id, ctx.step, "action_repeated", {"result": result})
    return result


class SagaTaskOperator(BaseOperator):
    template_fields: Sequence[str] = ("saga_id",)

    def __init__(self, *, saga_id: str, log_conn_id: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.saga_id = saga_id
        self.log_conn_id = log_conn_id

    @cached_property
    def saga_log(self) -> SagaLog:
        from conduit.hooks.saga_log import SagaLogHook

        return SagaLogHook(saga_conn_id=self.log_conn_id).get_conn()

    def step_context(self, step: str, key: str, context: Context, result: Any = None,
                     started_at: float | None = None) -> StepContext:
        saga = self.saga_log.saga(self.saga_id)
        results = {s["step"]: s["result"] for s in self.saga_log.steps(self.saga_id) if s["result"] is not None}
        return StepContext(self.saga_id, step, key, saga["payload"] or {}, results, result, context, started_at)

    def is_final_try(self, context: Context, exc: BaseException) -> bool:
        return isinstance(exc, AirflowFailException) or is_last_try(context["ti"], self.retries)


class SagaStartOperator(SagaTaskOperator):
    """Opens the saga for this run with its business data (a setup: ``finalize`` is its teardown).
    ``supersedes`` (templated; empty: none) names an earlier saga of the same business transaction
    that this one tries again: it must have ended compensated."""

    template_fields: Sequence[str] = ("saga_id", "payload", "supersedes")
    ui_color = "#e7f5ff"

    def __init__(self, *, payload: Any = None, supersedes: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.payload = payload
        self.supersedes = supersedes

    def execute(self, context: Context) -> dict[str, Any]:
        saga = self.saga_log.start(self.saga_id, dag_id=self.dag_id, run_id=context["run_id"],
                                   payload=self.payload, supersedes=self.supersedes or None)
        return {"saga_id": self.saga_id, "status": saga["status"]}


class SagaBeginOperator(SagaTaskOperator):
    """Registers a compensable step before its action runs (a setup: the compensation is its
    teardown), so an action that dies half-way is still compensated."""

    ui_color = "#e7f5ff"

    def __init__(self, *, step: str, seq: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.step, self.seq = step, seq

    def execute(self, context: Context) -> str:
        return self.saga_log.begin_step(self.saga_id, self.step, seq=self.seq, compensable=True)


class SagaActionOperator(SagaTaskOperator):
    """Runs a step's action once in effect: a step that already succeeded (a cleared task) returns
    its logged result; a saga no longer running refuses; the outcome is logged either way."""

    ui_color = "#d3f9d8"

    def __init__(self, *, step: str, seq: int, action: Callable[[StepContext], Any], compensable: bool,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.step, self.seq, self.action, self.compensable = step, seq, action, compensable

    def execute(self, context: Context) -> Any:
        log = self.saga_log
        if not self.compensable:  # read-only steps have no begin task of their own
            log.begin_step(self.saga_id, self.step, seq=self.seq, compensable=False)
        row = log.action_started(self.saga_id, self.step)
        if row["action_status"] == "succeeded":
            self.log.info("step %s already succeeded in saga %s: %s", self.step, self.saga_id, row["result"])
            return row["result"]
        try:
            result = self.action(self.step_context(self.step, row["idempotency_key"], context,
                                                   started_at=row["started_at"]))
        except (Exception, AirflowTaskTimeout) as exc:
            log.action_failed(self.saga_id, self.step, f"{type(exc).__name__}: {exc}",
                              final=self.is_final_try(context, exc))
            raise
        log.action_succeeded(self.saga_id, self.step, result)
        return result


class SagaCompensationOperator(SagaTaskOperator):
    """Undoes a step's effect when the saga did not commit (a teardown of the step's begin task:
    it runs after a failure, a timeout, or a run marked failed). Skipped when there is nothing to
    undo; each attempt is logged; after its last retry the saga is left ``compensation_failed``.

    Given the step's ``action``, an action whose task died in the middle of its call (killed, its
    worker lost, the run marked failed) or that failed with its outcome unknown (a 429/5xx, an
    unanswered request) is repeated with its key first (:func:`result_to_undo`), so an effect of
    the lost call that lands late is undone too."""

    ui_color = "#ffe3e3"

    def __init__(self, *, step: str, compensation: Callable[[StepContext], Any],
                 action: Callable[[StepContext], Any] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.step, self.compensation, self.action = step, compensation, action

    def execute(self, context: Context) -> Any:
        log = self.saga_log
        decision, row = log.claim_compensation(self.saga_id, self.step)
        if decision != "compensate":
            raise AirflowSkipException(f"no compensation for {self.step}: {decision.value}")
        try:
            ctx = self.step_context(self.step, row["idempotency_key"], context)
            result = self.compensation(replace(ctx, result=result_to_undo(log, self.action, ctx, row)))
        except (Exception, AirflowTaskTimeout) as exc:  # a timeout is a BaseException: log it like any failure
            final = self.is_final_try(context, exc)
            log.compensation_failed(self.saga_id, self.step, f"{type(exc).__name__}: {exc}", final=final)
            if final:
                self.log.error("COMPENSATION FAILED for step %s of saga %s after %d tries: %s. The saga is left "
                               "compensation_failed; fix the cause and clear this task to resume.",
                               self.step, self.saga_id, context["ti"].try_number, exc)
            raise
        log.compensation_done(self.saga_id, self.step, result)
        return result


class SagaCommitOperator(SagaTaskOperator):
    """Every forward step succeeded: from here on nothing is compensated."""

    ui_color = "#b2f2bb"

    def execute(self, context: Context) -> dict[str, Any]:
        return {"saga_id": self.saga_id, "status": self.saga_log.commit(self.saga_id)["status"]}


class SagaFinalizeOperator(SagaTaskOperator):
    """The saga's verdict (a teardown that fails the run): success only when it committed;
    otherwise it fails with the original cause, after the compensations ran."""

    ui_color = "#f1f3f5"

    def execute(self, context: Context) -> dict[str, Any]:
        from conduit.exceptions import SagaAborted, SagaCompensationFailed

        saga = self.saga_log.finish(self.saga_id)
        summary = {"saga_id": self.saga_id, "status": saga["status"], "cause": saga["cause"]}
        self.log.info("saga %s", summary)
        if saga["status"] == "committed":
            return summary
        if saga["status"] == "compensation_failed":
            raise SagaCompensationFailed(f"saga {self.saga_id} could not be fully compensated "
                                         f"(cause: {saga['cause']}); see the failed compensation task")
        cause = saga["cause"] or ("the run stopped before the saga committed (marked failed, or a task "
                                  "outside the saga's steps failed)")
        raise SagaAborted(f"saga {self.saga_id} {saga['status']}: {cause}")


class SagaAbortOperator(SagaTaskOperator):
    """A path that ends the saga on purpose (a rule rejected the order): fails with the cause the
    saga log holds, so the compensations run and the run fails for that reason."""

    template_fields: Sequence[str] = ("saga_id", "cause")
    ui_color = "#ffc9c9"

    def __init__(self, *, cause: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.cause = cause

    def execute(self, context: Context) -> None:
        from conduit.exceptions import SagaAborted

        if self.cause:
            self.saga_log.set_cause(self.saga_id, self.cause, step=self.task_id)
        cause = self.saga_log.saga(self.saga_id)["cause"] or f"{self.task_id} was chosen"
        raise SagaAborted(f"saga {self.saga_id}: {cause}")


def record_cause_on_failure(saga_id: str, log_conn_id: str, cause: str) -> Callable[[Any], None]:
    """An ``on_failure_callback`` for tasks that are not saga steps (a sensor, a person's review):
    their failure becomes the saga's cause. Best effort: a callback never runs when a run is
    marked failed, and the finalize step still reports a generic cause then."""

    def callback(context: Any) -> None:
        from conduit.hooks.saga_log import SagaLogHook

        task = context["task"]
        rendered = task.render_template(saga_id, context)
        error = context.get("exception")
        SagaLogHook(saga_conn_id=log_conn_id).get_conn().set_cause(
            rendered, f"{cause}: {error}" if error else cause, step=task.task_id)

    return callback


class InlineSagaOperator(SagaTaskOperator):
    """Runs a whole saga flow in this task (:mod:`conduit.saga.inline`): ``flow(saga)`` calls
    ``saga.step(...)`` for each step and ``saga.commit()`` at the end. Returns the saga's state."""

    ui_color = "#d3f9d8"

    def __init__(self, *, flow: Callable[[Any], Any], **kwargs) -> None:
        super().__init__(**kwargs)
        self.flow = flow

    def execute(self, context: Context) -> dict[str, Any]:
        from conduit.saga.inline import InlineSaga

        saga = InlineSaga(self.saga_log, self.saga_id, context=context,
                          final=lambda exc: self.is_final_try(context, exc))
        self.flow(saga)
        return {"saga_id": self.saga_id, "status": self.saga_log.saga(self.saga_id)["status"]}


class InlineCompensationOperator(SagaTaskOperator):
    """The teardown of an inline saga: runs what it still owes in reverse order, then reports its
    outcome (committed, compensated). Retries what failed; after the last try the saga is left
    ``compensation_failed`` and the task fails loudly. With ``fail_on_abort`` a compensated saga
    fails the task too (one saga per run); a batch reports it instead. ``actions`` (step -> action)
    are repeated first where their outcome is unknown (:func:`result_to_undo`)."""

    ui_color = "#ffe3e3"

    def __init__(self, *, compensations: dict[str, Callable[[StepContext], Any]], fail_on_abort: bool = False,
                 actions: dict[str, Callable[[StepContext], Any]] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.compensations, self.fail_on_abort, self.actions = compensations, fail_on_abort, actions

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowException

        from conduit.exceptions import SagaAborted, SagaCompensationFailed
        from conduit.saga.inline import compensate

        final = is_last_try(context["ti"], self.retries)
        saga, failed = compensate(self.saga_log, self.saga_id, self.compensations, final=final, context=context,
                                  actions=self.actions)
        summary = {"saga_id": self.saga_id, "status": saga["status"], "cause": saga["cause"]}
        if failed and not final:
            raise AirflowException(f"saga {self.saga_id}: compensations failed, retrying: {failed}")
        if failed:
            self.log.error("COMPENSATION FAILED for saga %s: %s. The saga is left compensation_failed; fix the "
                           "cause and clear this task to resume.", self.saga_id, failed)
            raise SagaCompensationFailed(f"saga {self.saga_id}: {failed}")
        if self.fail_on_abort and saga["status"] != "committed":
            raise SagaAborted(f"saga {self.saga_id} {saga['status']}: {saga['cause']}")
        return summary
