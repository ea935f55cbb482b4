"""The saga log (conduit.saga.log.SagaLog) on the real PostgreSQL, in a fresh schema per test: the
same bookkeeping as tests/unit/saga/test_log.py (JSON, booleans and floats round-tripping through
PostgreSQL types), and what its ``SELECT ... FOR UPDATE`` on the saga row guarantees when a retried
task overlaps a dying one."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import sqlalchemy
from sqlalchemy import event

from conduit.exceptions import SagaConflict, SagaNotRunning
from conduit.saga.log import SagaLog
from conduit.saga.model import CompensationDecision as D
from conduit.saga.model import compensation_order

pytestmark = pytest.mark.postgres

SAGA = "order-42"


@pytest.fixture
def engine(pg_server_dsn: str, pg_schema: str):
    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(pg_server_dsn, options=f"-csearch_path={pg_schema}"))
    yield engine
    engine.dispose()  # before pg_schema drops the schema


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


def failed_step(log: SagaLog, step: str = "payment", seq: int = 1) -> None:
    log.begin_step(SAGA, step, seq=seq, compensable=True)
    log.action_started(SAGA, step)
    log.action_failed(SAGA, step, "Timeout: no answer", final=True)


class LockRendezvous:
    """Lets each armed thread, right after its first ``SELECT ... FOR UPDATE`` returned (so while
    it holds the saga row's lock), wait up to ``timeout`` for the other thread to get there too.
    Both get there only if the lock does not exclude them; when it does, the holder's wait times
    out (the 'sleep inside the lock'), it commits, and only then does the other one get the row."""

    def __init__(self, engine, timeout: float = 0.5) -> None:
        self.barrier = threading.Barrier(2, timeout=timeout)
        self.timeout = timeout
        self.got_lock_at: list[float] = []
        self.met: list[bool] = []
        self._armed = threading.local()
        event.listen(engine, "after_cursor_execute", self._after)

    def arm(self) -> None:
        self._armed.on = True

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if not getattr(self._armed, "on", False) or "FOR UPDATE" not in statement:
            return
        self._armed.on = False
        self.got_lock_at.append(time.monotonic())
        try:
            self.barrier.wait()
            self.met.append(True)
        except threading.BrokenBarrierError:
            self.met.append(False)


def race(fn, *args_per_thread):
    """Runs ``fn(*args)`` for each argument tuple in its own thread, all released at once; returns
    each call's result or the exception it raised."""
    go = threading.Barrier(len(args_per_thread), timeout=10)

    def call(args):
        go.wait()
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            return exc

    with ThreadPoolExecutor(len(args_per_thread)) as pool:
        return list(pool.map(call, args_per_thread))


# --- the same bookkeeping on PostgreSQL ------------------------------------------------------------------

def test_tables_live_in_the_test_schema(log, engine, pg_schema):
    tables = set(sqlalchemy.inspect(engine).get_table_names(schema=pg_schema))
    assert {"conduit_saga", "conduit_saga_step", "conduit_saga_event"} <= tables
    log.ensure_schema()  # a second call (every hook's first use) is harmless


def test_start_idempotent_conflict_and_payload(log, clock):
    payload = {"order_id": 42, "amount": 12.5, "items": [{"sku": "A-1", "qty": 2}], "note": "grüße", "gift": False}
    first = log.start(SAGA, dag_id="order_fulfilment", run_id="manual__1", payload=payload)
    assert (first["status"], first["payload"], first["created_at"], first["cause"]) == \
        ("running", payload, 1_000.0, None)
    clock.tick()
    assert log.start(SAGA, dag_id="order_fulfilment", run_id="manual__1", payload={"x": 1}) == first
    with pytest.raises(SagaConflict, match="order_fulfilment/manual__1"):
        log.start(SAGA, dag_id="order_fulfilment", run_id="manual__2")
    assert log.saga(SAGA) == first
    assert [(e["event"], e["detail"]) for e in log.events(SAGA)] == [
        ("started", {"dag_id": "order_fulfilment", "run_id": "manual__1"})]


def test_forward_steps(started, clock):
    key = started.begin_step(SAGA, "payment", seq=1, compensable=True)
    assert started.begin_step(SAGA, "payment", seq=1, compensable=True) == key == "order-42:payment"
    assert len(started.steps(SAGA)) == 1
    assert [e["event"] for e in started.events(SAGA)].count("began") == 1
    row = step_row(started, "payment")
    assert row["compensable"] is True and row["action_status"] == "pending"

    assert started.action_started(SAGA, "payment")["action_attempts"] == 1
    started.action_failed(SAGA, "payment", "ConnectionError", final=False)
    assert started.saga(SAGA)["cause"] is None
    assert started.action_started(SAGA, "payment")["action_attempts"] == 2
    started.action_succeeded(SAGA, "payment", {"authorization_id": "auth-7", "amount": 12.5})
    replay = started.action_started(SAGA, "payment")
    assert (replay["action_status"], replay["action_attempts"], replay["result"]) == \
        ("succeeded", 2, {"authorization_id": "auth-7", "amount": 12.5})

    started.begin_step(SAGA, "shipping", seq=2, compensable=True)
    started.action_started(SAGA, "shipping")
    started.action_failed(SAGA, "shipping", "Timeout", final=True)
    started.set_cause(SAGA, "a later cause", step="review")
    assert started.saga(SAGA)["cause"] == "shipping: Timeout"
    assert started.claim_compensation(SAGA, "shipping")[0] == D.COMPENSATE
    started.begin_step(SAGA, "invoice", seq=3, compensable=False)
    with pytest.raises(SagaNotRunning, match="is compensating"):
        started.action_started(SAGA, "invoice")
    assert step_row(started, "invoice")["action_attempts"] == 0


def test_claim_decisions(started, clock):
    failed_step(started, "payment", 1)
    started.begin_step(SAGA, "shipping", seq=2, compensable=True)

    assert started.claim_compensation(SAGA, "invoice") == (D.NEVER_STARTED, None)
    decision, row = started.claim_compensation(SAGA, "shipping")
    assert (decision, row["compensation_status"]) == (D.NEVER_STARTED, "not_needed")
    assert started.saga(SAGA)["status"] == "compensating"  # payment is still owed

    decision, first = started.claim_compensation(SAGA, "payment")
    assert (decision, first["compensation_attempts"]) == (D.COMPENSATE, 1)
    assert started.saga(SAGA)["status"] == "compensating"
    decision, second = started.claim_compensation(SAGA, "payment")  # after a killed attempt
    assert (decision, second["compensation_attempts"], second["idempotency_key"]) == \
        (D.COMPENSATE, 2, first["idempotency_key"])
    clock.tick()
    started.compensation_done(SAGA, "payment", {"voided": True})
    assert started.saga(SAGA)["status"] == "compensated"
    decision, row = started.claim_compensation(SAGA, "payment")
    assert (decision, row["compensation_attempts"], row["compensation_result"], row["compensated_at"]) == \
        (D.ALREADY_DONE, 2, {"voided": True}, 1_001.0)
    assert started.finish(SAGA)["status"] == "compensated"


def test_claim_on_a_committed_saga(started):
    started.begin_step(SAGA, "payment", seq=1, compensable=True)
    started.action_started(SAGA, "payment")
    started.action_succeeded(SAGA, "payment", {"authorization_id": "auth-7"})
    started.commit(SAGA)
    before = step_row(started, "payment")
    assert started.claim_compensation(SAGA, "payment") == (D.SAGA_COMMITTED, before)
    assert step_row(started, "payment") == before
    assert started.finish(SAGA)["status"] == "committed"


def test_final_compensation_failure(started):
    failed_step(started)
    started.claim_compensation(SAGA, "payment")
    started.compensation_failed(SAGA, "payment", "HTTPError: 503", final=False)
    assert started.saga(SAGA)["status"] == "compensating"
    started.claim_compensation(SAGA, "payment")
    started.compensation_failed(SAGA, "payment", "HTTPError: 503", final=True)
    assert started.saga(SAGA)["status"] == "compensation_failed"
    assert started.finish(SAGA)["status"] == "compensation_failed"
    decision, row = started.claim_compensation(SAGA, "payment")  # cleared by a person
    assert (decision, row["compensation_attempts"]) == (D.COMPENSATE, 3)


def test_cleared_compensation_that_succeeds_compensates_the_saga(started):
    failed_step(started)
    started.claim_compensation(SAGA, "payment")
    started.compensation_failed(SAGA, "payment", "HTTPError: 503", final=True)
    started.claim_compensation(SAGA, "payment")
    started.compensation_done(SAGA, "payment", {"voided": True})
    assert started.finish(SAGA)["status"] == "compensated"


def test_finish(log):
    # only a read-only step, never committed: nothing to undo
    log.start("order-1", dag_id="d", run_id="r1")
    log.begin_step("order-1", "fraud", seq=1, compensable=False)
    log.action_started("order-1", "fraud")
    log.action_failed("order-1", "fraud", "Down", final=True)
    assert log.finish("order-1")["status"] == "compensated"
    # a begun compensable step whose compensation never ran
    log.start("order-2", dag_id="d", run_id="r2")
    for seq, step in enumerate(["inventory", "payment"], start=1):
        log.begin_step("order-2", step, seq=seq, compensable=True)
        log.action_started("order-2", step)
        log.action_succeeded("order-2", step, {"id": step})
    log.claim_compensation("order-2", "payment")
    log.compensation_done("order-2", "payment", None)
    assert log.finish("order-2")["status"] == "compensating"


def test_a_multi_step_saga_failing_at_its_third_step(log, clock):
    log.start(SAGA, dag_id="order_fulfilment", run_id="manual__1", payload={"order_id": 42})
    declared = [("inventory", 1, True), ("fraud", 2, False), ("payment", 3, True), ("shipping", 4, True)]
    for name, seq, compensable in declared[:2]:
        log.begin_step(SAGA, name, seq=seq, compensable=compensable)
        log.action_started(SAGA, name)
        log.action_succeeded(SAGA, name, {"done": name})
    failed_step(log, "payment", 3)

    decisions = {}
    for step in compensation_order([(n, s) for n, s, c in declared if c]):
        clock.tick()
        decision, row = log.claim_compensation(SAGA, step)
        decisions[step] = decision
        if decision == D.COMPENSATE:
            log.compensation_done(SAGA, step, {"undone": row["idempotency_key"]})
    assert decisions == {"shipping": D.NEVER_STARTED, "payment": D.COMPENSATE, "inventory": D.COMPENSATE}
    assert log.claim_compensation(SAGA, "fraud")[0] == D.NO_COMPENSATION
    saga = log.finish(SAGA)
    assert (saga["status"], saga["cause"]) == ("compensated", "payment: Timeout: no answer")
    assert [(s["step"], s["compensation_status"]) for s in log.steps(SAGA)] == \
        [("inventory", "done"), ("fraud", "none"), ("payment", "done")]
    events = log.events(SAGA)
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert [(e["step"], e["event"], e["detail"], e["at"]) for e in events][-6:] == [
        ("payment", "compensation_compensate", {"attempt": 1}, 1_002.0),
        ("payment", "compensated", {"result": {"undone": "order-42:payment"}}, 1_002.0),
        ("inventory", "compensation_compensate", {"attempt": 1}, 1_003.0),
        ("inventory", "compensated", {"result": {"undone": "order-42:inventory"}}, 1_003.0),
        (None, "compensated", None, 1_003.0),
        ("fraud", "compensation_no_compensation", None, 1_003.0),
    ]


# --- concurrent callers -------------------------------------------------------------------------------------

def test_overlapping_claims_are_serialised(started, engine):
    """A retried compensation task overlapping its dying first attempt: both claim at once.

    The row lock serialises the two claims; it does not make one of them lose. The second one sees
    the compensation ``running`` (the first holder has not reported) and, by
    ``compensation_decision``, compensates as well: the log cannot tell a live attempt from a dead
    one. What the lock guarantees is that the claims never decide on the same state: they are
    counted as attempts 1 and 2, never a lost update. Executing the compensation twice is safe
    because both attempts send the same compensation idempotency key (``order-42:payment`` plus
    its purpose, e.g. ``:void``), and the service answers a repeated key with its first answer."""
    failed_step(started)
    lock = LockRendezvous(engine, timeout=0.3)

    def claim():
        lock.arm()
        return started.claim_compensation(SAGA, "payment")

    results = race(claim, (), ())
    assert not any(isinstance(r, Exception) for r in results), results
    assert lock.met == [False, False]  # never both inside the lock
    first, second = sorted(lock.got_lock_at)
    assert second - first >= 0.3 * 0.9  # the second waited for the first holder to commit
    assert [d for d, _ in results] == [D.COMPENSATE, D.COMPENSATE]
    assert sorted(row["compensation_attempts"] for _, row in results) == [1, 2]
    assert {row["idempotency_key"] for _, row in results} == {"order-42:payment"}
    assert step_row(started, "payment")["compensation_attempts"] == 2
    assert [e["detail"] for e in started.events(SAGA) if e["event"] == "compensation_compensate"] == \
        [{"attempt": 1}, {"attempt": 2}]

    started.compensation_done(SAGA, "payment", {"voided": True})
    assert race(started.claim_compensation, (SAGA, "payment"), (SAGA, "payment"))[0][0] == D.ALREADY_DONE
    assert step_row(started, "payment")["compensation_attempts"] == 2
    assert started.saga(SAGA)["status"] == "compensated"


def test_racing_claims_never_lose_an_attempt(log):
    """20 rounds (one saga each) of two simultaneous claims, without an injected delay."""
    for n in range(20):
        saga_id = f"order-{n}"
        log.start(saga_id, dag_id="order_fulfilment", run_id=f"manual__{n}")
        log.begin_step(saga_id, "payment", seq=1, compensable=True)
        log.action_started(saga_id, "payment")
        log.action_failed(saga_id, "payment", "Timeout", final=True)
        results = race(log.claim_compensation, (saga_id, "payment"), (saga_id, "payment"))
        assert not any(isinstance(r, Exception) for r in results), results
        assert [d for d, _ in results] == [D.COMPENSATE, D.COMPENSATE]
        assert sorted(row["compensation_attempts"] for _, row in results) == [1, 2]
        log.compensation_done(saga_id, "payment", {"n": n})
        results = race(log.claim_compensation, (saga_id, "payment"), (saga_id, "payment"))
        assert [d for d, _ in results] == [D.ALREADY_DONE, D.ALREADY_DONE]
        (row,) = log.steps(saga_id)
        assert (row["compensation_status"], row["compensation_attempts"]) == ("done", 2)
        assert log.saga(saga_id)["status"] == "compensated"


def test_a_claim_arriving_while_done_is_recorded_does_not_compensate_again(started, engine, pg_server_dsn):
    """The first attempt is writing ``done`` (holding the saga row's lock) when the retry claims:
    the retry waits for it and then finds the compensation done."""
    failed_step(started)
    started.claim_compensation(SAGA, "payment")
    holder_pid: list[int] = []
    holding, release = threading.Event(), threading.Event()
    armed = threading.local()

    @event.listens_for(engine, "after_cursor_execute")
    def hold_the_lock(conn, cursor, statement, parameters, context, executemany):
        if getattr(armed, "on", False) and "FOR UPDATE" in statement:
            armed.on = False
            holder_pid.append(cursor.connection.info.backend_pid)
            holding.set()
            release.wait(timeout=10)

    def done():
        armed.on = True
        started.compensation_done(SAGA, "payment", {"voided": True})

    with ThreadPoolExecutor(2) as pool, psycopg.connect(pg_server_dsn, autocommit=True) as monitor:
        finishing = pool.submit(done)
        assert holding.wait(timeout=10)
        claim = pool.submit(started.claim_compensation, SAGA, "payment")
        deadline = time.monotonic() + 10
        while not monitor.execute("SELECT 1 FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                                  holder_pid).fetchone():
            assert time.monotonic() < deadline, "the claim never waited for the saga row's lock"
            time.sleep(0.01)
        assert not claim.done()
        release.set()
        finishing.result(timeout=10)
        decision, row = claim.result(timeout=10)
    assert decision == D.ALREADY_DONE
    assert (row["compensation_status"], row["compensation_attempts"]) == ("done", 1)
    assert started.saga(SAGA)["status"] == "compensated"


@pytest.mark.parametrize("second_run", ["manual__2", "manual__1"], ids=["another_run", "same_run_retry"])
def test_racing_first_starts(log, engine, second_run):
    """Two first starts at once: with a lock that holds, only one of them is ever inside it."""
    lock = LockRendezvous(engine, timeout=2)

    def start(run_id):
        lock.arm()
        return log.start(SAGA, dag_id="order_fulfilment", run_id=run_id, payload={"run": run_id})

    results = race(start, ("manual__1",), (second_run,))
    saga = log.saga(SAGA)
    assert [e["event"] for e in log.events(SAGA)] == ["started"]
    if second_run == "manual__1":  # a retry overlapping the first attempt finds the saga open
        assert results == [saga, saga]
    else:  # another run is refused, exactly once
        assert sum(isinstance(r, SagaConflict) for r in results) == 1
        assert [r for r in results if not isinstance(r, Exception)] == [saga]
        assert saga["run_id"] in ("manual__1", "manual__2")


def test_starts_racing_an_open_saga(started):
    """Once the saga row exists the lock holds: every other run is refused, the owner's retry
    finds its saga."""
    results = race(lambda run: started.start(SAGA, dag_id="order_fulfilment", run_id=run),
                   ("manual__2",), ("manual__3",), ("manual__1",))
    assert [type(r).__name__ for r in results] == ["SagaConflict", "SagaConflict", "dict"]
    assert results[2]["run_id"] == "manual__1"
