"""Issue 12 on a real deployment: a sync whose plan would deactivate 40% of the customers waits
in ``approve_plan`` (Airflow's HITL, shown under Required Actions), is approved through the REST
API and then loads exactly the plan. The deployment's include folder is a copy whose flagship spec
sets the circuit breaker. The Required Actions page is saved as
test-artifacts/e2e/plan-approval.png (the README's picture)."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest
import yaml

from e2e import topology
from e2e.conftest import running_stack
from e2e.harness import AirflowStack, wait_until
from e2e.ui import SHOTS, log_in, shot

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(600)]

DAG_ID = "crm_to_erp_customer_sync"
SPEC = Path("syncs") / f"{DAG_ID}.yaml"


@pytest.fixture(scope="module")
def approval_stack(request, pg_server_dsn, redis_url, e2e_artifacts, tmp_path_factory):
    include = tmp_path_factory.mktemp("approval") / "include"
    shutil.copytree(topology.REPO / "include", include)
    spec = yaml.safe_load((include / SPEC).read_text())
    spec["approval"] = {"max_update_ratio": 0.2, "max_delete_ratio": 0.05, "timeout": "1h"}
    (include / SPEC).write_text(yaml.safe_dump(spec))
    # Without cron scheduling: unpausing would otherwise start tonight's slot at once, a second
    # full sync the first run then queues behind (max_active_runs=1) that proves nothing here.
    yield from running_stack(request, pg_server_dsn, redis_url, e2e_artifacts,
                             extra_env={"CONDUIT_INCLUDE_DIR": str(include),
                                        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"})


def active_customers(stack: AirflowStack) -> int:
    with psycopg.connect(stack.erp_dsn()) as conn:
        return conn.execute(f"SELECT count(*) FILTER (WHERE active) FROM public.{topology.ERP_TABLE}").fetchone()[0]


def idle(stack: AirflowStack) -> bool:
    runs = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", expect=200).json()["dag_runs"]
    return bool(runs) and all(r["state"] in ("success", "failed") for r in runs)


def test_a_drastic_plan_waits_for_approval_in_the_ui_and_then_loads_exactly(approval_stack, browser):
    from conduit.standin.testing import AdminClient

    stack = approval_stack
    stack.wait_for_dag(DAG_ID)
    stack.unpause(DAG_ID)
    first = stack.trigger(DAG_ID, {})
    assert stack.wait_for_run(DAG_ID, first["dag_run_id"], timeout=300)["state"] == "success"
    wait_until(lambda: idle(stack), timeout=300, what="no sync run left running")
    customers = active_customers(stack)
    assert customers == stack.standin_contacts

    admin = AdminClient(stack.standin_url)
    with psycopg.connect(stack.erp_dsn()) as conn:
        crm_ids = [r[0] for r in conn.execute(f"SELECT crm_id FROM public.{topology.ERP_TABLE} ORDER BY crm_id")]
    archived = crm_ids[: customers * 2 // 5]  # 40%: a broken CRM filter, say
    for crm_id in archived:
        admin.archive(crm_id)
    run_id = stack.trigger(DAG_ID, {})["dag_run_id"]
    hitl = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/approve_plan/-1/hitlDetails"

    def waiting() -> dict | None:
        tis = {t["task_id"]: t["state"] for t in stack.task_instances(DAG_ID, run_id)}
        assert tis.get("plan") not in ("failed", "upstream_failed"), stack.run_summary(DAG_ID, run_id)
        return stack.api("GET", hitl, expect=200).json() if tis.get("approve_plan") == "awaiting_input" else None

    request = wait_until(waiting, timeout=300, what="approve_plan to wait for a person")
    assert f"{len(archived)} of {customers}" in request["body"] and request["defaults"] == ["Reject"]
    assert active_customers(stack) == customers  # nothing changes while it waits

    page = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
    page.set_default_timeout(60_000)
    log_in(page, stack)
    page.goto(f"{stack.base_url}/dags/{DAG_ID}/runs/{run_id}/tasks/approve_plan/required_actions")
    page.get_by_text(f"Apply the plan of {DAG_ID}?").first.wait_for()
    page.get_by_text("Sample deletes").first.wait_for()
    shot(page, "plan-approval")
    assert (SHOTS / "plan-approval.png").stat().st_size > 20_000

    stack.api("PATCH", hitl, json={"chosen_options": ["Approve"], "params_input": {}}, expect=200)
    final = stack.wait_for_run(DAG_ID, run_id, timeout=300)
    assert final["state"] == "success", stack.run_summary(DAG_ID, run_id)
    assert active_customers(stack) == customers - len(archived)
    load = stack.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/load/xcomEntries/return_value",
                     expect=200).json()["value"]
    assert load["deleted"] == len(archived) and load["inserted"] == 0
