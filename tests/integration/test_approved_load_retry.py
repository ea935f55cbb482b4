"""An approved load whose try committed and was then killed (crash point ``load.end``: "the committed
load; no XCom, no event") is retried by Airflow. The retry must recognise its own committed load,
as the unattended path does (``committed_by_an_earlier_try``, and the asset event the first try
never sent), instead of calling the ERP "changed since the plan" and failing the run. Yet a retry
that would change anything beyond that (the ERP moved by someone else since) still refuses.

The load operator runs on the real steps, staged files, stand-in CRM over HTTP and PostgreSQL; its
first try dies at ``load.end`` (an exception there: the in-process stand-in for the SIGKILL of the
crash matrix), the retry is a second ``execute`` with ``try_number`` 2, as Airflow runs it."""

from __future__ import annotations

from types import SimpleNamespace

import psycopg
import pytest
from sync_helpers import crm_hook, crm_ids, extract_and_transform, load, staging_dir

from conduit.exceptions import StalePlanError
from conduit.pipeline import steps
from conduit.pipeline.plan import approval_reason, plan_summary

pytestmark = pytest.mark.postgres

ARCHIVED = 240  # of 600: 40% deactivated, above the spec's 5%


class Killed(BaseException):
    """The worker dies: nothing after this point of ``execute`` happens."""


class OutletEvents(dict):
    """``context["outlet_events"]``: records the asset events a try adds."""

    def __missing__(self, alias):
        added = self[alias] = SimpleNamespace(events=[])
        added.add = lambda asset, extra=None: added.events.append((asset, extra))
        return added


@pytest.fixture
def approved(sync_env, tmp_path, monkeypatch):
    """A second run whose plan (deactivating 40% of the customers) was approved, and its load operator."""
    from conduit.operators.sync import ErpUpsertOperator

    env = sync_env
    env.edit_spec(approval={"max_update_ratio": 0.2, "max_delete_ratio": 0.05, "timeout": "1h"})
    spec, target, hook = env.spec(), env.target(), crm_hook()
    first = staging_dir(tmp_path, "first")
    load(target, spec, first, extract_and_transform(hook, target, spec, first, full=True), run_id="first")
    for record_id in crm_ids(spec)[:ARCHIVED]:
        env.crm.admin.archive(record_id)

    staging = staging_dir(tmp_path, "second")
    summary = extract_and_transform(hook, target, spec, staging)
    plan = steps.plan(target, spec, staging, run_id="second")
    reason = approval_reason(plan, spec.approval)
    assert reason is not None
    op = ErpUpsertOperator(task_id="load", spec=spec, extract_plan=[{**summary, "delete_missing": False}],
                           load_plan=plan_summary(plan, reason))  # the plan XCom the load pulls once approved
    monkeypatch.setattr(ErpUpsertOperator, "staging", lambda self, context: staging)
    return SimpleNamespace(env=env, spec=spec, target=target, op=op)


def context(try_number: int) -> dict:
    return {"run_id": "second", "ti": SimpleNamespace(try_number=try_number), "outlet_events": OutletEvents()}


def killed_at_load_end(monkeypatch):
    """Arm ``load.end`` once, as ``CONDUIT_CRASH_ONCE`` does: the first try dies there, the retry passes."""
    import conduit.operators.sync as sync

    passed: set[str] = set()

    def crash_point(name: str) -> None:
        if name == "load.end" and name not in passed:
            passed.add(name)
            raise Killed(name)

    monkeypatch.setattr(sync, "crash_point", crash_point)


def test_the_retry_of_a_committed_approved_load_reports_it_and_sends_its_event(approved, monkeypatch):
    from conduit.lineage.assets import erp_changes_alias, erp_table_asset

    a = approved
    killed_at_load_end(monkeypatch)
    with pytest.raises(Killed):
        a.op.execute(context(1))  # committed, then the worker died: no XCom, no event sent
    assert a.target.count(a.spec) == 600 - ARCHIVED and a.target.last_load_run_id(a.spec) == "second"
    after_first = a.target.key_checksum(a.spec)

    retry = context(2)
    summary = a.op.execute(retry)

    assert summary["committed_by_an_earlier_try"] is True
    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (0, 0, 0)
    assert a.target.key_checksum(a.spec) == after_first  # the retry changed nothing
    ((asset, extra),) = retry["outlet_events"][erp_changes_alias(a.spec)].events
    assert asset == erp_table_asset(a.spec)
    assert extra["run_id"] == "second" and extra["committed_by_an_earlier_try"] is True


def test_the_retry_still_refuses_a_change_nobody_approved(approved, monkeypatch):
    """After the first try committed, a customer it deactivated is switched back on behind the
    sync's back: the retry would deactivate it again, a change outside the approved plan."""
    a = approved
    killed_at_load_end(monkeypatch)
    with pytest.raises(Killed):
        a.op.execute(context(1))
    table = f'"{a.env.schema}".erp_customers'
    with psycopg.connect(a.target._dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {table} SET active = true, deleted_at = NULL WHERE customer_number = "
                     f"(SELECT min(customer_number) FROM {table} WHERE NOT active)")
    moved = a.target.key_checksum(a.spec)

    with pytest.raises(StalePlanError, match="earlier try of this run applied the approved plan"):
        a.op.execute(context(2))
    assert a.target.key_checksum(a.spec) == moved  # nothing changed


def test_another_runs_approved_plan_is_still_stale_after_this_load(approved):
    """The state store names the run whose load committed last: a plan of another run, made before
    this one's load, is stale as before."""
    a = approved
    a.op.execute(context(1))  # the run "second" loads its plan
    with pytest.raises(StalePlanError, match="changed since the plan"):
        a.op.execute({**context(1), "run_id": "third"})
