"""Issue 12, the plan and the circuit breaker, on real Airflow and PostgreSQL: the sync DAG runs
with ``dag.test()`` in a thread while this test acts as the person, through Airflow's own REST API
(``PATCH .../hitlDetails``, the FastAPI app on the same metadata DB), or lets the scheduler's own
timeout sweep answer for nobody. The ERP is compared with the plan the run showed."""

from __future__ import annotations

import threading
import time

import pytest
from airflow.sdk import DagRunState
from sync_helpers import DAG_ID, crm_ids, run_ok, xcom

pytestmark = pytest.mark.postgres

ARCHIVED = 240  # of 600: 40% of the customers would be deactivated


@pytest.fixture
def approval_env(sync_env, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    sync_env.edit_spec(approval={"max_update_ratio": 0.2, "max_delete_ratio": 0.05, "timeout": "1h"})
    run_ok(sync_env)  # the first load into an empty ERP: no approval needed
    spec = sync_env.spec()
    assert xcom_of_latest(sync_env, "plan")["needs_approval"] is False
    for record_id in crm_ids(spec)[:ARCHIVED]:  # a broken CRM filter, say
        sync_env.crm.admin.archive(record_id)
    return sync_env


def xcom_of_latest(env, task_id: str, key: str = "plan"):
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=DAG_ID).order_by(DagRun.id.desc()).first()
        row = session.query(XComModel).filter_by(dag_id=DAG_ID, run_id=run.run_id, task_id=task_id, key=key).one()
        return XComModel.deserialize_value(row)


class Person:
    """Acts in a thread while ``dag.test()`` runs in the test's own thread (task timeouts need
    the main thread) and waits for HITL answers in the metadata DB: ``act(run_id)`` is called once
    ``approve_plan`` awaits input, with a dict to note what it saw."""

    def __init__(self, act):
        self.seen: dict = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(act,), daemon=True)
        self.thread.start()

    def _run(self, act):
        try:
            act(awaiting_approval(), self.seen)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread by done()
            import traceback

            traceback.print_exc()
            self.error = exc
            fail_waiting_runs()  # or dag.test() would wait for an answer forever

    def done(self):
        self.thread.join(30)
        if self.error is not None:
            raise self.error


def fail_waiting_runs() -> None:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        for ti in session.query(TaskInstance).filter_by(dag_id=DAG_ID, state="awaiting_input"):
            ti.state = "failed"
        for run in session.query(DagRun).filter_by(dag_id=DAG_ID, state="running"):
            run.state = "failed"


def run_with(env, act, **conf):
    person = Person(act)
    dag_run = env.dag().test(run_conf={"full_refresh": False, "dry_run": False, **conf})
    person.done()
    return dag_run, person


def awaiting_approval(timeout: float = 180) -> str:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with create_session() as session:
            ti = session.query(TaskInstance).filter_by(dag_id=DAG_ID, task_id="approve_plan",
                                                       state="awaiting_input").one_or_none()
            if ti is not None:
                return ti.run_id
        time.sleep(0.5)
    raise AssertionError("approve_plan never waited for input")


def hitl(method: str, run_id: str, **body):
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    with TestClient(create_app("core")) as client:
        response = client.request(method, f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve_plan/-1/"
                                          "hitlDetails", json=body or None)
    assert response.status_code == 200, response.text
    return response.json()


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def active_keys(env) -> set[str]:
    rows = env.target().fetch_rows(env.spec())
    return set(rows.loc[rows["active"].astype(bool), "customer_number"])


def test_a_plan_that_deactivates_40_percent_waits_and_an_approval_applies_exactly_it(approval_env):
    env = approval_env
    before = active_keys(env)

    def approve(run_id, seen):
        seen["plan"] = xcom_of_latest(env, "plan")
        seen["request"] = hitl("GET", run_id)
        seen["count_while_waiting"] = env.target().count(env.spec())
        hitl("PATCH", run_id, chosen_options=["Approve"], params_input={})

    dag_run, person = run_with(env, approve)
    plan, request = person.seen["plan"], person.seen["request"]

    assert dag_run.state == DagRunState.SUCCESS, states(dag_run)
    assert (plan["deleted"], plan["active_before"], plan["needs_approval"]) == (ARCHIVED, 600, True)
    assert f"{ARCHIVED} of 600" in request["body"] and "40.0%" in request["body"]
    assert person.seen["count_while_waiting"] == 600  # nothing happens while it waits
    load = xcom(dag_run, "load")
    assert {k: load[k] for k in ("inserted", "updated", "deleted", "unchanged")} == {
        k: plan[k] for k in ("inserted", "updated", "deleted", "unchanged")}
    after = active_keys(env)
    assert len(after) == 600 - ARCHIVED and after < before
    assert {s["customer_number"] for s in plan["samples"]["delete"]} <= before - after


def test_a_rejected_plan_changes_nothing_and_the_next_run_plans_again(approval_env):
    env = approval_env
    checksum, watermark = env.target().key_checksum(env.spec()), env.target().read_watermark(env.spec())

    def reject(run_id, seen):
        seen["plan"] = xcom_of_latest(env, "plan")
        hitl("PATCH", run_id, chosen_options=["Reject"], params_input={})

    dag_run, _ = run_with(env, reject)

    assert dag_run.state == DagRunState.FAILED
    assert (states(dag_run)["plan_rejected"], states(dag_run)["load"]) == ("failed", "skipped")
    assert env.target().key_checksum(env.spec()) == checksum
    assert env.target().read_watermark(env.spec()) == watermark

    again, person = run_with(env, reject)
    assert again.state == DagRunState.FAILED
    assert person.seen["plan"]["deleted"] == ARCHIVED  # the next run plans the same again


def test_nobody_answering_in_time_is_a_rejection(approval_env):
    from airflow.executors.local_executor import LocalExecutor
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    env = approval_env
    env.edit_spec(approval={"max_update_ratio": 0.2, "max_delete_ratio": 0.05, "timeout": "2s"})
    checksum = env.target().key_checksum(env.spec())

    def nobody(run_id, seen):
        seen["run_id"] = run_id
        time.sleep(2.5)
        SchedulerJobRunner(job=Job(), executors=[LocalExecutor()]).check_awaiting_input_timeouts()  # the sweep

    dag_run, person = run_with(env, nobody)

    assert dag_run.state == DagRunState.FAILED and states(dag_run)["plan_rejected"] == "failed"
    detail = hitl("GET", person.seen["run_id"])
    assert detail["chosen_options"] == ["Reject"] and detail["responded_by_user"] is None
    assert env.target().key_checksum(env.spec()) == checksum


def test_an_erp_changed_between_plan_and_approval_is_refused(approval_env):
    import psycopg

    env = approval_env

    def edit_then_approve(run_id, seen):
        with psycopg.connect(env.target()._dsn, autocommit=True) as conn:  # someone edits a customer meanwhile
            conn.execute(f'UPDATE "{env.schema}".erp_customers SET row_hash = \'edited\' '
                         f'WHERE customer_number = (SELECT min(customer_number) FROM "{env.schema}".erp_customers)')
        seen["edited"] = env.target().key_checksum(env.spec())
        hitl("PATCH", run_id, chosen_options=["Approve"], params_input={})

    dag_run, person = run_with(env, edit_then_approve)

    assert dag_run.state == DagRunState.FAILED and states(dag_run)["load"] == "failed"
    assert env.target().key_checksum(env.spec()) == person.seen["edited"]  # the stale plan was not applied
    assert env.target().count(env.spec()) == 600


def test_a_dry_run_whose_plan_would_need_approval_asks_nobody_and_changes_nothing(approval_env):
    """A dry run commits nothing, so a person has nothing to approve: it must not wait for one
    (with the plan's 1 h timeout, it would have hung, then failed as rejected)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    env = approval_env
    checksum, watermark = env.target().key_checksum(env.spec()), env.target().read_watermark(env.spec())
    finished, asked = threading.Event(), []

    def watch():
        while not finished.wait(0.5):
            with create_session() as session:
                waiting = session.query(TaskInstance).filter_by(dag_id=DAG_ID, task_id="approve_plan",
                                                                state="awaiting_input").count()
            if waiting:
                asked.append(waiting)
                fail_waiting_runs()  # or dag.test() would wait for the answer
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    dag_run = env.dag().test(run_conf={"full_refresh": False, "dry_run": True})
    finished.set()
    watcher.join(10)

    assert not asked, "a dry run waited for a person's approval"
    assert dag_run.state == DagRunState.SUCCESS, states(dag_run)
    assert (states(dag_run)["approve_plan"], states(dag_run)["load"]) == ("skipped", "success")
    plan, load = xcom_of_latest(env, "plan"), xcom(dag_run, "load")
    assert (plan["needs_approval"], plan["deleted"]) == (True, ARCHIVED)
    assert (load["dry_run"], load["deleted"]) == (True, ARCHIVED)  # what a real load would do, rolled back
    assert env.target().key_checksum(env.spec()) == checksum
    assert env.target().read_watermark(env.spec()) == watermark


def test_plan_only_reports_exactly_what_a_real_run_then_does_and_changes_nothing(sync_env):
    env = sync_env
    run_ok(env)
    spec = env.spec()
    ids = crm_ids(spec)
    for record_id in ids[:7]:
        env.crm.admin.archive(record_id)
    now = env.crm.admin.clock_ms()
    for record_id in ids[10:15]:
        env.crm.admin.modify(record_id, {"firstname": "Renamed"}, lastmodifieddate_ms=now - 120_000)
    checksum = env.target().key_checksum(spec)

    planned = run_ok(env, conf={"plan_only": True})
    plan = xcom_of_latest(env, "plan")
    assert states(planned)["load"] == "skipped" and env.target().key_checksum(spec) == checksum
    assert (plan["deleted"], plan["updated"], plan["inserted"]) == (7, 5, 0)
    assert plan["changed_columns"] == {"first_name": 5, "full_name": 5}

    load = xcom(run_ok(env), "load")
    assert {k: load[k] for k in ("inserted", "updated", "deleted")} == {
        k: plan[k] for k in ("inserted", "updated", "deleted")}
