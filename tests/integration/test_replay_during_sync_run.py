"""A quarantine replay triggered while a run of its sync is in flight must not commit into the sync's
table: the run's plan (here one that needs approval) was made against the ERP as it was, and its
load applies exactly that plan or nothing (``StalePlanError``, no retry). A replay that committed
while the run waited for its approval made the run fail; the replay now refuses at once, naming the
run (``SyncRunInFlight``, not retried), and loads the records when triggered after the run.

Real parts: the sync DAG runs with ``dag.test()`` in this process and waits in ``approve_plan``
(Airflow's HITL); meanwhile the replay DAG runs with ``dag.test()`` in a separate Python process,
as a replay triggered from the UI runs on another worker, against the same metadata DB (SQLite),
the stand-in CRM over HTTP and the ERP schema on PostgreSQL. Then a person approves through
Airflow's REST API."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sync_helpers import bad_email_ids, crm_ids, crm_source, quarantine_table, run_ok, xcom
from test_plan_approval import ARCHIVED, hitl, run_with, states, xcom_of_latest
from test_replay import REPLAY_DAG_ID, active, run_replay

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]

REPLAY_IN_ANOTHER_PROCESS = """
import json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
assert bag.import_errors == {}, bag.import_errors
dag_run = bag.dags[sys.argv[2]].test(run_conf={"sync": sys.argv[3], "dry_run": sys.argv[4] == "dry"})
tis = {ti.task_id: {"state": ti.state, "try_number": ti.try_number} for ti in dag_run.get_task_instances()}
print("REPLAY-RESULT " + json.dumps({"run_id": dag_run.run_id, "state": dag_run.state, "tis": tis}))
"""


def replay_in_another_process(env, *, dry_run: bool = False) -> dict:
    """The replay DAG's run, in its own Python process: its state, its task's state and tries,
    and what the process printed (the task's log)."""
    proc = subprocess.run(
        [sys.executable, "-c", REPLAY_IN_ANOTHER_PROCESS, str(REPO / "dags"), REPLAY_DAG_ID, env.spec().name,
         "dry" if dry_run else "real"],
        capture_output=True, text=True, timeout=300, env=os.environ.copy())
    output = proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPLAY-RESULT ")]
    assert proc.returncode == 0 and lines, output[-5000:]
    return {**json.loads(lines[-1].removeprefix("REPLAY-RESULT ")), "output": output}


@pytest.fixture
def fixed_record_and_a_plan_to_approve(sync_env, monkeypatch):
    """One record parked by the gate and since fixed in the CRM (before the sync's watermark: only
    a replay loads it), and 40% of the customers archived so that the next run's plan waits for
    approval."""
    env = sync_env
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    env.edit_spec(mapping__email__transforms=[{"type": "email"}],  # a bad address rejects its record
                  approval={"max_update_ratio": 0.2, "max_delete_ratio": 0.05, "timeout": "1h"})
    crm = env.crm
    crm.admin.reset(bad_emails=1)
    spec = env.spec()
    (bad,) = bad_email_ids(spec, 1)
    first_ms = crm.admin.clock_ms() - 3_600_000  # older than anything the next run's window reads
    run_ok(env)  # the first load into an empty ERP: no approval needed
    assert list(quarantine_table(env)["crm_id"]) == [bad]
    assert env.target().count(spec) == 599
    crm.admin.modify(bad, {"email": f"fixed.{bad}@example.com"}, lastmodifieddate_ms=first_ms)
    for record_id in [i for i in crm_ids(spec) if i != bad][:ARCHIVED]:  # a broken CRM filter, say
        crm.admin.archive(record_id)
    return env, bad


def test_a_replay_while_a_sync_run_waits_for_approval_leaves_the_run_alone(fixed_record_and_a_plan_to_approve):
    env, bad = fixed_record_and_a_plan_to_approve
    spec = env.spec()
    customer = f"HS-C-{bad}"

    def replay_then_approve(run_id, seen):
        seen["run_id"] = run_id
        seen["plan"] = xcom_of_latest(env, "plan")
        seen["dry"] = replay_in_another_process(env, dry_run=True)
        seen["replay"] = replay_in_another_process(env)
        seen["checksum_before_approval"] = env.target().key_checksum(spec)
        hitl("PATCH", run_id, chosen_options=["Approve"], params_input={})

    sync_run, person = run_with(env, replay_then_approve)
    seen = person.seen

    # the sync run loads exactly its approved plan
    assert sync_run.state == "success", states(sync_run)
    plan, load = seen["plan"], xcom(sync_run, "load")
    assert (plan["needs_approval"], plan["deleted"]) == (True, ARCHIVED)
    assert {k: load[k] for k in ("inserted", "updated", "deleted")} == {
        k: plan[k] for k in ("inserted", "updated", "deleted")}
    assert str(seen["checksum_before_approval"]) == plan["erp_checksum"]  # the replay changed nothing

    # the replay refused at once, naming the run, without retrying
    replay = seen["replay"]
    assert replay["state"] == "failed"
    assert replay["tis"]["replay"] == {"state": "failed", "try_number": 1}
    refusal = [line for line in replay["output"].splitlines() if "SyncRunInFlight" in line]
    assert refusal, replay["output"][-5000:]
    assert f"{spec.name} has a run in flight ({seen['run_id']})" in refusal[-1], refusal
    assert f"trigger it again after {seen['run_id']} has ended" in refusal[-1], refusal
    # a dry run commits nothing: it may run meanwhile
    assert seen["dry"]["state"] == "success" and seen["dry"]["tis"]["replay"]["state"] == "success"
    assert quarantine_table(env)["replayed_at"].isna().all()  # neither replay closed the entry
    assert customer not in active(env).index

    # once the run has ended, the replay loads the fixed record
    replay_run, summary = run_replay(env)
    assert (summary["replayed_records"], summary["inserted"]) == (1, 1)
    rows = active(env)
    assert rows.loc[customer, "email"] == f"fixed.{bad}@example.com"
    assert rows.loc[customer, "last_run_id"] == replay_run.run_id
    assert quarantine_table(env).set_index("crm_id").loc[bad, "replayed_by_run"] == replay_run.run_id


def test_a_sync_run_started_while_the_replay_reads_the_crm_stops_it_before_any_write(
        fixed_record_and_a_plan_to_approve):
    """The replay asks again just before its first write: a run that started while the replay read
    and re-validated the records (here: Airflow answers "none" the first time, then names a run)
    sees no commit. The replay pipeline on the real CRM and ERP; Airflow's answers are scripted."""
    from conduit.exceptions import SyncRunInFlight
    from conduit.pipeline.replay import replay

    env, bad = fixed_record_and_a_plan_to_approve
    spec, target = env.spec(), env.target()
    started = "scheduled__2026-12-08T02:00:00+00:00"
    answers = [[], [started]]
    checksum = target.key_checksum(spec)

    with pytest.raises(SyncRunInFlight, match=rf"has a run in flight \({re.escape(started)}\)"
                                              rf".*after {re.escape(started)} has ended"):
        replay(crm_source(spec), target, spec, env.include / "expectations" / spec.quality.suite,
               run_id="manual__replay-meanwhile", runs_in_flight=lambda: answers.pop(0))

    assert answers == []  # asked twice: before reading, before writing
    assert target.key_checksum(spec) == checksum
    assert quarantine_table(env)["replayed_at"].isna().all()
    assert f"HS-C-{bad}" not in active(env).index
