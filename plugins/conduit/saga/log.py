"""The saga log: what every saga and step did, kept in a database the saga's tasks share
(PostgreSQL in production, SQLite embedded), never in XCom (cleared with a task) or Airflow's own
metadata schema.

Compensations read this log, not task states: a task marked success may have been killed, a
failed one may have taken effect before its response was lost. Every state change locks the
saga's row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite writers are serialised anyway), so a
retried task overlapping a dying one cannot decide twice. Each change also appends an event row:
the saga's timeline, with timings and causes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from conduit.exceptions import SagaConflict, SagaNotRunning
from conduit.saga.model import (
    ActionStatus,
    CompensationDecision,
    CompensationStatus,
    SagaStatus,
    compensation_decision,
    idempotency_key,
    may_run_forward,
    status_after_compensations,
)

metadata = MetaData()
sagas = Table(
    "conduit_saga", metadata,
    Column("saga_id", String(200), primary_key=True),
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("status", String(30), nullable=False),
    Column("cause", Text),
    Column("payload", JSON),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
steps = Table(
    "conduit_saga_step", metadata,
    Column("saga_id", String(200), primary_key=True),
    Column("step", String(100), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("compensable", Boolean, nullable=False),
    Column("idempotency_key", String(400), nullable=False, unique=True),
    Column("action_status", String(20), nullable=False),
    Column("action_attempts", Integer, nullable=False, default=0),
    Column("result", JSON),
    Column("error", Text),
    Column("compensation_status", String(20), nullable=False),
    Column("compensation_attempts", Integer, nullable=False, default=0),
    Column("compensation_result", JSON),
    Column("compensation_error", Text),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("compensated_at", Float),
)
events = Table(
    "conduit_saga_event", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("saga_id", String(200), nullable=False, index=True),
    Column("step", String(100)),
    Column("event", String(40), nullable=False),
    Column("detail", JSON),
    Column("at", Float, nullable=False),
)
_ACTION_EVENTS = ("action_started", "action_failed", "action_succeeded")


def _serialise_sqlite_writers(engine: Engine) -> None:
    """SQLite ignores ``FOR UPDATE`` and its driver opens a transaction only at the first write, so
    two overlapping decisions could both read the same state. ``BEGIN IMMEDIATE`` takes the write
    lock when the transaction starts (SQLAlchemy's recipe for SQLite transactions)."""
    if getattr(engine, "_conduit_immediate", False):
        return

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine._conduit_immediate = True


class SagaLog:
    """The log over one SQLAlchemy engine. ``ensure_schema()`` creates the tables when missing."""

    def __init__(self, engine: Engine, *, clock=time.time):
        self.engine = engine
        self.clock = clock
        if engine.dialect.name == "sqlite":
            _serialise_sqlite_writers(engine)

    def ensure_schema(self) -> None:
        """Create the log's tables if missing. Several order runs start at once: on PostgreSQL two
        ``CREATE TABLE IF NOT EXISTS`` can still collide (a duplicate ``pg_type`` row), so creators
        take turns under a transaction advisory lock."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('conduit:saga:schema'))")
            metadata.create_all(conn, checkfirst=True)

    # --- the saga ------------------------------------------------------------------------------

    def start(self, saga_id: str, *, dag_id: str, run_id: str, payload: dict[str, Any] | None = None,
              supersedes: str | None = None) -> dict:
        """Open the saga for this run; a retry or a rerun of the same run finds it open. Another
        run of the same saga (the same order triggered twice) is refused. A saga that
        ``supersedes`` another (the same order tried again, under a new id and so new idempotency
        keys) opens only once that one is compensated: ended, holding nothing."""
        try:
            with self._locked(saga_id, missing_ok=True) as (conn, row):
                if row is None:
                    if supersedes:
                        self._require_compensated(conn, supersedes, saga_id)
                    now = self.clock()
                    conn.execute(insert(sagas).values(saga_id=saga_id, dag_id=dag_id, run_id=run_id, payload=payload,
                                                      status=SagaStatus.RUNNING, created_at=now, updated_at=now))
                    self._event(conn, saga_id, None, "started", {"dag_id": dag_id, "run_id": run_id})
                    return self._saga(conn, saga_id)
        except IntegrityError:
            pass  # another start inserted it first (there was no row to lock): judge that one below
        with self._locked(saga_id) as (conn, row):
            if (row["dag_id"], row["run_id"]) != (dag_id, run_id):
                raise SagaConflict(f"saga {saga_id!r} belongs to run {row['dag_id']}/{row['run_id']} "
                                   f"({row['status']}); a second run must not act on it again")
            return row

    def _require_compensated(self, conn: Connection, earlier: str, saga_id: str) -> None:
        row = self._saga(conn, earlier)
        if row is None or row["status"] != SagaStatus.COMPENSATED:
            state = "was never started" if row is None else f"is {row['status']} ({row['cause'] or 'no cause'})"
            raise SagaConflict(f"saga {saga_id!r} would try again what saga {earlier!r} did, which {state}; "
                               f"only a compensated saga may be tried again")

    def saga(self, saga_id: str) -> dict | None:
        with self.engine.connect() as conn:
            return self._saga(conn, saga_id)

    def steps(self, saga_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(steps).where(steps.c.saga_id == saga_id).order_by(steps.c.seq))
            return [dict(r._mapping) for r in rows]

    def events(self, saga_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(events).where(events.c.saga_id == saga_id).order_by(events.c.id))
            return [dict(r._mapping) for r in rows]

    def action_tries(self, saga_id: str, step: str) -> list[tuple[str, str | None]]:
        """Every try of a step's action as the log saw it, oldest first: ``(event, error)`` for its
        ``action_started``, ``action_failed`` and ``action_succeeded`` events (the step's row keeps
        only the last try's error)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(events.c.event, events.c.detail).where(
                events.c.saga_id == saga_id, events.c.step == step, events.c.event.in_(_ACTION_EVENTS),
            ).order_by(events.c.id))
            return [(event, (detail or {}).get("error")) for event, detail in rows]

    def set_cause(self, saga_id: str, cause: str, *, step: str | None = None) -> None:
        """Record why the saga will not commit (the first cause wins: later ones are consequences)."""
        with self._locked(saga_id) as (conn, row):
            if not row["cause"]:
                self._set_saga(conn, saga_id, cause=cause)
            self._event(conn, saga_id, step, "cause", {"cause": cause})

    def note(self, saga_id: str, step: str | None, event: str, detail: Any = None) -> None:
        """Append an event to the saga's timeline (a rule that fired, a person's answer)."""
        with self._locked(saga_id) as (conn, _):
            self._event(conn, saga_id, step, event, detail)

    def commit(self, saga_id: str) -> dict:
        with self._locked(saga_id) as (conn, row):
            if row["status"] == SagaStatus.COMMITTED:
                return row
            if not may_run_forward(SagaStatus(row["status"])):
                raise SagaNotRunning(f"saga {saga_id!r} is {row['status']}: it cannot commit")
            self._set_saga(conn, saga_id, status=SagaStatus.COMMITTED)
            self._event(conn, saga_id, None, "committed", None)
            return self._saga(conn, saga_id)

    def finish(self, saga_id: str) -> dict:
        """The saga's final state once its run is over: a saga that neither committed nor has a
        compensation left to run is compensated (also when nothing needed undoing). A step that
        began but whose action never started owes nothing, also when its compensation never ran to
        say so: its begin task failed after registering it (killed after its commit, the run marked
        failed), and a teardown whose setup failed is never run (``upstream_failed``)."""
        with self._locked(saga_id) as (conn, saga):
            if saga["status"] != SagaStatus.COMMITTED:
                never_started = conn.execute(select(steps.c.step).where(
                    steps.c.saga_id == saga_id, steps.c.compensable, steps.c.action_status == ActionStatus.PENDING,
                    steps.c.compensation_status == CompensationStatus.NONE)).scalars().all()
                for step in never_started:
                    self._set_step(conn, saga_id, step, compensation_status=CompensationStatus.NOT_NEEDED)
                    self._event(conn, saga_id, step, "compensation_" + CompensationDecision.NEVER_STARTED.value, None)
            self._settle(conn, saga_id, saga)
            return self._saga(conn, saga_id)

    # --- forward steps ---------------------------------------------------------------------------

    def begin_step(self, saga_id: str, step: str, *, seq: int, compensable: bool) -> str:
        """Register the step (and so its compensation) before its action runs; returns its key."""
        key = idempotency_key(saga_id, step)
        with self._locked(saga_id) as (conn, _):
            if self._step(conn, saga_id, step) is None:
                conn.execute(insert(steps).values(
                    saga_id=saga_id, step=step, seq=seq, compensable=compensable, idempotency_key=key,
                    action_status=ActionStatus.PENDING, action_attempts=0,
                    compensation_status=CompensationStatus.NONE, compensation_attempts=0))
                self._event(conn, saga_id, step, "began", {"idempotency_key": key})
        return key

    def action_started(self, saga_id: str, step: str) -> dict:
        """Mark the action running (another attempt). Refused unless the saga runs. A step that
        already succeeded (a cleared task) comes back with ``action_status`` succeeded: its stored
        result is the answer, the call is not made again."""
        with self._locked(saga_id) as (conn, saga):
            row = self._required_step(conn, saga_id, step)
            if row["action_status"] == ActionStatus.SUCCEEDED:
                return row
            if not may_run_forward(SagaStatus(saga["status"])):
                raise SagaNotRunning(f"saga {saga_id!r} is {saga['status']} ({saga['cause'] or 'no cause'}): "
                                     f"step {step!r} will not run again; start a new saga")
            # started_at is the first attempt's: a step's deadline must not restart with each retry
            self._set_step(conn, saga_id, step, action_status=ActionStatus.RUNNING,
                           started_at=row["started_at"] or self.clock(),
                           action_attempts=row["action_attempts"] + 1, error=None)
            self._event(conn, saga_id, step, "action_started", {"attempt": row["action_attempts"] + 1})
            return self._step(conn, saga_id, step)

    def action_succeeded(self, saga_id: str, step: str, result: Any) -> None:
        with self._locked(saga_id) as (conn, _):
            self._set_step(conn, saga_id, step, action_status=ActionStatus.SUCCEEDED, result=result,
                           finished_at=self.clock())
            self._event(conn, saga_id, step, "action_succeeded", {"result": result})

    def action_failed(self, saga_id: str, step: str, error: str, *, final: bool) -> None:
        """A failed attempt; ``final`` when no retry follows (the saga then has its cause)."""
        with self._locked(saga_id) as (conn, saga):
            self._set_step(conn, saga_id, step, action_status=ActionStatus.FAILED, error=error,
                           finished_at=self.clock())
            if final and not saga["cause"]:
                self._set_saga(conn, saga_id, cause=f"{step}: {error}")
            self._event(conn, saga_id, step, "action_failed", {"error": error, "final": final})

    # --- compensations ---------------------------------------------------------------------------

    def claim_compensation(self, saga_id: str, step: str) -> tuple[CompensationDecision, dict | None]:
        """Decide whether the step's compensation runs now, and if so mark it running (one more
        attempt). A step that never began (its turn never came) has nothing to compensate."""
        with self._locked(saga_id) as (conn, saga):
            row = self._step(conn, saga_id, step)
            if row is None:
                return CompensationDecision.NEVER_STARTED, None
            decision = compensation_decision(SagaStatus(saga["status"]), ActionStatus(row["action_status"]),
                                             CompensationStatus(row["compensation_status"]), row["compensable"])
            if decision == CompensationDecision.COMPENSATE:
                if saga["status"] in (SagaStatus.RUNNING, SagaStatus.COMPENSATION_FAILED):  # the latter: resumed
                    self._set_saga(conn, saga_id, status=SagaStatus.COMPENSATING)
                self._set_step(conn, saga_id, step, compensation_status=CompensationStatus.RUNNING,
                               compensation_attempts=row["compensation_attempts"] + 1)
            elif decision == CompensationDecision.NEVER_STARTED:
                self._set_step(conn, saga_id, step, compensation_status=CompensationStatus.NOT_NEEDED)
                self._settle(conn, saga_id, saga)
            self._event(conn, saga_id, step, "compensation_" + decision.value,
                        {"attempt": row["compensation_attempts"] + 1} if decision == "compensate" else None)
            return decision, self._step(conn, saga_id, step)

    def compensation_done(self, saga_id: str, step: str, result: Any) -> None:
        with self._locked(saga_id) as (conn, saga):
            self._set_step(conn, saga_id, step, compensation_status=CompensationStatus.DONE,
                           compensation_result=result, compensated_at=self.clock())
            self._event(conn, saga_id, step, "compensated", {"result": result})
            self._settle(conn, saga_id, saga)

    def compensation_failed(self, saga_id: str, step: str, error: str, *, final: bool) -> None:
        """A failed attempt; when ``final`` the saga is left ``compensation_failed`` for a person
        (clearing the compensation task resumes it)."""
        with self._locked(saga_id) as (conn, saga):
            if final:
                self._set_step(conn, saga_id, step, compensation_status=CompensationStatus.FAILED,
                               compensation_error=error)
                self._set_saga(conn, saga_id, status=SagaStatus.COMPENSATION_FAILED)
            self._event(conn, saga_id, step, "compensation_failed", {"error": error, "final": final})

    # --- internals -------------------------------------------------------------------------------

    @contextmanager
    def _locked(self, saga_id: str, missing_ok: bool = False) -> Iterator[tuple[Connection, dict | None]]:
        with self.engine.begin() as conn:
            row = conn.execute(select(sagas).where(sagas.c.saga_id == saga_id).with_for_update()).first()
            if row is None and not missing_ok:
                raise SagaNotRunning(f"saga {saga_id!r} was never started")
            yield conn, dict(row._mapping) if row is not None else None

    def _saga(self, conn: Connection, saga_id: str) -> dict | None:
        row = conn.execute(select(sagas).where(sagas.c.saga_id == saga_id)).first()
        return dict(row._mapping) if row is not None else None

    def _step(self, conn: Connection, saga_id: str, step: str) -> dict | None:
        row = conn.execute(select(steps).where(steps.c.saga_id == saga_id, steps.c.step == step)).first()
        return dict(row._mapping) if row is not None else None

    def _required_step(self, conn: Connection, saga_id: str, step: str) -> dict:
        row = self._step(conn, saga_id, step)
        if row is None:
            raise SagaNotRunning(f"step {step!r} of saga {saga_id!r} never began")
        return row

    def _set_saga(self, conn: Connection, saga_id: str, **values: Any) -> None:
        conn.execute(update(sagas).where(sagas.c.saga_id == saga_id).values(updated_at=self.clock(), **values))

    def _set_step(self, conn: Connection, saga_id: str, step: str, **values: Any) -> None:
        conn.execute(update(steps).where(steps.c.saga_id == saga_id, steps.c.step == step).values(**values))

    def _settle(self, conn: Connection, saga_id: str, saga: dict) -> None:
        """After a compensation: compensated once every begun compensable step is undone."""
        current = self._saga(conn, saga_id)["status"]
        if current not in (SagaStatus.RUNNING, SagaStatus.COMPENSATING, SagaStatus.COMPENSATION_FAILED):
            return
        states = [CompensationStatus(s) for (s,) in conn.execute(
            select(steps.c.compensation_status).where(steps.c.saga_id == saga_id, steps.c.compensable))]
        status = status_after_compensations(states)
        if status != current:
            self._set_saga(conn, saga_id, status=status)
            self._event(conn, saga_id, None, status.value, None)

    def _event(self, conn: Connection, saga_id: str, step: str | None, event: str, detail: Any) -> None:
        conn.execute(insert(events).values(saga_id=saga_id, step=step, event=event, at=self.clock(),
                                           detail=json.loads(json.dumps(detail, default=str))))
