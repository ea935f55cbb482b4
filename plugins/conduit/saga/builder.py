"""Declare a saga in a DAG; get plain Airflow tasks whose compensations survive failures,
timeouts and a run marked failed.

Each compensable step is a task group ``<step>`` of three tasks: ``begin`` (a setup that registers
the step in the saga log before anything happens), ``action``, and ``compensate`` (a teardown of
``begin``). ``saga.end(after=...)`` adds ``commit`` after the last forward task, chains the
compensations after it in reverse declaration order, and ends with ``finalize``, a teardown of
``start`` that fails the run unless the saga committed. Teardowns are the one kind of Airflow task
that still runs when a run is marked failed (``../shared/reference/orchestration-patterns.md``
§0), and a teardown waits for every task between its setup and itself, so a compensation never
runs while its own action or a later one is still in flight. A compensation is given its action
too: an action killed in the middle of its call is repeated with its key before it is undone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, TaskGroup
from airflow.sdk.definitions._internal.mixins import DependencyMixin

from conduit.retries import Backoff, FullJitterRetryPolicy
from conduit.saga.operators import (
    SagaAbortOperator,
    SagaActionOperator,
    SagaBeginOperator,
    SagaCommitOperator,
    SagaCompensationOperator,
    SagaFinalizeOperator,
    SagaStartOperator,
    StepContext,
    record_cause_on_failure,
)

# Full jitter, drawn per failure: Airflow's own exponential backoff hashes dag, task, logical date
# and try number but not the map index, so a batch's mapped sagas failing together in an outage
# would all come back at the same instant (conduit.retries.FullJitterRetryPolicy). retry_delay and
# max_retry_delay stay for what reads them (the UI); the policy decides the wait.
FORWARD_RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=5), "retry_exponential_backoff": 2.0,
                   "max_retry_delay": timedelta(minutes=10), "execution_timeout": timedelta(minutes=2),
                   "retry_policy": FullJitterRetryPolicy(Backoff(base=5.0, cap=600.0))}
# Compensations keep trying for longer: giving up leaves money or stock stuck.
COMPENSATION_RETRIES = {"retries": 8, "retry_delay": timedelta(seconds=5), "retry_exponential_backoff": 2.0,
                        "max_retry_delay": timedelta(hours=1), "execution_timeout": timedelta(minutes=2),
                        "retry_policy": FullJitterRetryPolicy(Backoff(base=5.0, cap=3600.0))}


class SagaStep(DependencyMixin):
    """The tasks of one declared step. In ``>>``/``<<`` it is entered at ``begin`` (or, for a
    read-only step, at its action) and left from its action, so dependencies never attach to the
    compensation."""

    def __init__(self, name: str, action: BaseOperator, begin: BaseOperator | None = None,
                 compensate: BaseOperator | None = None) -> None:
        self.name, self.action, self.begin, self.compensate = name, action, begin, compensate

    @property
    def entry(self) -> BaseOperator:
        return self.begin or self.action

    @property
    def roots(self) -> list[BaseOperator]:
        return [self.entry]

    @property
    def leaves(self) -> list[BaseOperator]:
        return [self.action]

    def set_upstream(self, other, edge_modifier=None) -> None:
        self.entry.set_upstream(other, edge_modifier=edge_modifier)

    def set_downstream(self, other, edge_modifier=None) -> None:
        self.action.set_downstream(other, edge_modifier=edge_modifier)


class Saga:
    """Builds a saga's tasks in the current DAG. ``saga_id`` is templated and must name the
    business transaction (``order-{{ params.order_id }}``): it seeds every idempotency key, so a
    retried task or a second run for the same order never acts twice. ``payload`` (templated) is
    stored with the saga and given to every action and compensation. ``supersedes`` (templated)
    names the saga this one tries again under a new id (see :meth:`SagaLog.start`).

    Example::

        saga = Saga(saga_id="order-{{ params.order_id }}", payload="{{ params.order }}")
        reserve = saga.step("inventory", action=reserve_stock, compensation=release_stock)
        charge = saga.step("payment", action=authorize, compensation=void)
        saga.start >> reserve >> charge
        saga.end(after=charge)
    """

    def __init__(self, *, saga_id: str, payload: Any = None, log_conn_id: str = "conduit_saga_default",
                 forward_retries: dict | None = None, compensation_retries: dict | None = None,
                 notify: Sequence[Any] = (), supersedes: str | None = None) -> None:
        self.saga_id, self.log_conn_id, self.notify = saga_id, log_conn_id, list(notify)
        self.forward = {**FORWARD_RETRIES, **(forward_retries or {})}
        self.compensation = {**COMPENSATION_RETRIES, **(compensation_retries or {})}
        self.steps: list[SagaStep] = []
        self.start = SagaStartOperator(task_id="start", payload=payload, supersedes=supersedes, retries=3,
                                       **self._common()).as_setup()
        self.finalize: BaseOperator | None = None

    def _common(self) -> dict[str, Any]:
        return {"saga_id": self.saga_id, "log_conn_id": self.log_conn_id}

    def step(self, name: str, *, action: Callable[[StepContext], Any],
             compensation: Callable[[StepContext], Any] | None = None, **task_kwargs: Any) -> SagaStep:
        """Declare a step. ``action(ctx)`` returns a small JSON-able result (logged, and given to
        later steps and to the compensation); ``compensation(ctx)`` undoes it and must treat "the
        action never took effect" as done. ``task_kwargs`` override the action task's settings
        (``execution_timeout``, ``retries``, ...)."""
        seq = len(self.steps) + 1
        forward = {**self.forward, **task_kwargs}
        if compensation is None:
            step = SagaStep(name, SagaActionOperator(task_id=name, step=name, seq=seq, action=action,
                                                     compensable=False, **forward, **self._common()))
        else:
            with TaskGroup(name, tooltip=f"saga step {name}: begin, action, compensate"):
                begin = SagaBeginOperator(task_id="begin", step=name, seq=seq, retries=3,
                                          **self._common()).as_setup()
                act = SagaActionOperator(task_id="action", step=name, seq=seq, action=action, compensable=True,
                                         **forward, **self._common())
                undo = SagaCompensationOperator(task_id="compensate", step=name, compensation=compensation,
                                                action=action, task_display_name=f"↩ {name}", **self.compensation,
                                                **self._common())
                begin >> act
                undo.as_teardown(setups=begin)
            step = SagaStep(name, act, begin, undo)
        self.steps.append(step)
        return step

    def abort(self, task_id: str, **kwargs: Any) -> BaseOperator:
        """A task that ends the saga on purpose (e.g. the rules' reject path)."""
        return SagaAbortOperator(task_id=task_id, retries=0, **kwargs, **self._common())

    def cause_on_failure(self, cause: str):
        """An ``on_failure_callback`` that makes a task's failure the saga's cause."""
        return record_cause_on_failure(self.saga_id, self.log_conn_id, cause)

    def end(self, *, after: Any) -> BaseOperator:
        """``commit`` after the last forward task(s), the compensations in reverse order, then
        ``finalize``. Returns ``finalize``."""
        commit = SagaCommitOperator(task_id="commit", retries=3, **self._common())
        after >> commit
        last: BaseOperator = commit
        for step in reversed([s for s in self.steps if s.compensate is not None]):
            last >> step.compensate
            last = step.compensate
        # notify: Airflow notifiers (or callables) told when the saga ends without committing; the
        # exception in their context carries the cause
        self.finalize = SagaFinalizeOperator(task_id="finalize", retries=3, on_failure_callback=self.notify or None,
                                             **self._common())
        last >> self.finalize
        self.finalize.as_teardown(setups=self.start, on_failure_fail_dagrun=True)
        return self.finalize
