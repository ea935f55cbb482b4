"""Builds one Airflow DAG per sync spec. Runs at DAG-parse time: keep it light (no pandas, GX or
network; the spec model and the operator classes only)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, TaskGroup

from conduit.lineage.assets import erp_changes_alias, erp_table_asset
from conduit.operators.sync import (
    CrmExtractOperator,
    CrmExtractPlanOperator,
    DataDocsOperator,
    ErpPlanOperator,
    ErpUpsertOperator,
    MappingTransformOperator,
    PlanRejectedOperator,
    QualityGateOperator,
    ReconcileOperator,
)
from conduit.operators.target_checks import ErpColumnCheckOperator, ErpTableCheckOperator
from conduit.specs.model import SyncSpec, load_specs


def include_dir(dag_file: str | Path | None = None) -> Path:
    """``CONDUIT_INCLUDE_DIR``, else the ``include/`` beside the DAGs folder (the repo / image layout)."""
    configured = os.environ.get("CONDUIT_INCLUDE_DIR")
    if configured:
        return Path(configured)
    return Path(dag_file).resolve().parent.parent / "include" if dag_file else Path.cwd() / "include"


def doc_md(spec: SyncSpec) -> str:
    rows = "\n".join(
        f"| `{column}` | {', '.join(f'`{p}`' for p in field.source_properties()) or '—'} | "
        f"{' → '.join(step.type for step in field.transforms) or 'as is'} |"
        for column, field in spec.mapping.items()
    )
    quality = (f"`{spec.quality.suite}`, policy **{spec.quality.policy}**" if spec.quality else "none")
    return f"""### {spec.name}

{spec.description}

* **Source:** HubSpot `{spec.source.object}` (connection `{spec.source.conn_id}`), incremental on
  `{spec.source.cursor.property}` (lag {spec.source.cursor.lag_seconds}s, overlap {spec.source.cursor.overlap_seconds}s)
* **Target:** `{'.'.join(spec.target.location)}` keyed by `{spec.target.key}`
  (connection `{spec.target.conn_id}`, {spec.target.delete_mode} deletes)
* **Quality gate:** {quality}
* **Schedule:** `{spec.schedule.cron}` in {spec.schedule.timezone}

Trigger with **full_refresh** to re-read every record (rows missing from the CRM are then deleted in
the ERP), or **dry_run** to do everything and roll the ERP transaction back.

| ERP column | CRM properties | transforms |
|---|---|---|
{rows}
"""


def schedule(spec: SyncSpec):
    """The spec's cron; with ``webhook_trigger`` also an AssetWatcher on the webhook event stream."""
    cron = CronTriggerTimetable(spec.schedule.cron, timezone=spec.schedule.timezone)
    if not spec.webhook_trigger:
        return cron
    from conduit.triggers.redis_events import crm_changes_asset

    # redis_url None: the triggerer reads CONDUIT_REDIS_URL, so no password lands in the DAG
    return AssetOrTimeSchedule(timetable=cron, assets=crm_changes_asset(spec.name))


def build_sync_dag(spec: SyncSpec, expectations_dir: str | Path | None = None) -> DAG:
    """The sync's DAG. Files the operators read (the quality suite) are resolved here, under
    ``expectations_dir`` (default: ``include/expectations``)."""
    tz = spec.schedule.timezone
    expectations = Path(expectations_dir) if expectations_dir else include_dir() / "expectations"
    with DAG(
        dag_id=spec.name,
        description=(spec.description.strip().splitlines() or [spec.name])[0][:200],
        schedule=schedule(spec),
        start_date=pendulum.datetime(2025, 1, 1, tz=tz),
        catchup=False,
        max_active_runs=1,  # runs of one sync queue up instead of racing for the same rows
        # no backfills: a backfill's runs count apart from max_active_runs (they would race), and a
        # sync reads the CRM as it is now whatever the logical date
        allowed_run_types=["scheduled", "manual", "asset_triggered", "operator_triggered"],
        default_args={
            "owner": spec.owner,
            "retries": spec.retries,
            "retry_delay": timedelta(minutes=1),
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": timedelta(minutes=30),
        },
        params={
            "full_refresh": Param(False, type="boolean", title="Full refresh",
                                  description="Re-read every CRM record and rebuild the ERP table safely."),
            "dry_run": Param(False, type="boolean", title="Dry run",
                             description="Run every step, then roll the ERP transaction back."),
            "plan_only": Param(False, type="boolean", title="Plan only",
                               description="Stop after the plan: show what the load would change, change nothing."),
        },
        render_template_as_native_obj=True,
        tags=sorted({"conduit", *spec.tags}),
        doc_md=doc_md(spec),
    ) as dag:
        common = {"spec": spec, "full_refresh": "{{ params.full_refresh }}", "dry_run": "{{ params.dry_run }}"}
        plan_extract = CrmExtractPlanOperator(task_id="plan_extract", **common)
        # one mapped task per work item: the window or the id ranges, and the archived listing
        extract = CrmExtractOperator.partial(task_id="extract", **common).expand(item=plan_extract.output)
        transform = MappingTransformOperator(task_id="transform", **common)
        plan = ErpPlanOperator(task_id="plan", extract_plan=plan_extract.output, plan_only="{{ params.plan_only }}",
                               **common)
        load = ErpUpsertOperator(task_id="load", extract_plan=plan_extract.output,
                                 load_plan="{{ ti.xcom_pull(task_ids='plan', key='plan') }}",
                                 trigger_rule="none_failed_min_one_success",  # after the plan, or its approval
                                 outlets=[erp_changes_alias(spec)], **common)
        plan >> load
        if spec.approval:
            approve_plan = HITLBranchOperator(
                task_id="approve_plan", subject=f"Apply the plan of {spec.name}?",
                body="{{ ti.xcom_pull(task_ids='plan', key='plan')['approval_markdown'] }}",
                options=["Approve", "Reject"], options_mapping={"Approve": "load", "Reject": "plan_rejected"},
                defaults=["Reject"], response_timeout=spec.approval.timeout, retries=0,
            )
            plan >> approve_plan >> [load, PlanRejectedOperator(task_id="plan_rejected", retries=0, **common)]
        # reconcile reads the table; declaring it registers the asset the load's events land on
        reconcile = ReconcileOperator(task_id="reconcile", extract_plan=plan_extract.output,
                                      inlets=[erp_table_asset(spec)], **common)
        extract >> transform
        if spec.quality:
            suite = str(expectations / spec.quality.suite)
            quality_gate = QualityGateOperator(task_id="quality_gate", extract_plan=plan_extract.output,
                                               suite_path=suite, plan_only="{{ params.plan_only }}", **common)
            data_docs = DataDocsOperator(task_id="data_docs", suite_path=suite, **common)
            transform >> [quality_gate, data_docs]
            quality_gate >> plan
            data_docs >> reconcile  # reconcile removes the staged files Data Docs read
        else:
            transform >> plan
        load >> reconcile
        if spec.target.type == "sql":
            with TaskGroup("target_checks", tooltip="common-sql column and table checks on the ERP table (PostgreSQL)"):
                load >> [ErpColumnCheckOperator(task_id="columns", spec=spec),
                         ErpTableCheckOperator(task_id="table", spec=spec)]
    return dag


def build_sync_dags(syncs_dir: str | Path) -> dict[str, DAG]:
    """Every spec in the folder. One broken spec fails the whole file loudly (an import error that
    names file and field) rather than silently dropping a sync from the schedule."""
    expectations = Path(syncs_dir).parent / "expectations"
    return {spec.name: build_sync_dag(spec, expectations) for spec in load_specs(syncs_dir)}
