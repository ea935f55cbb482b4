"""Operators of a sync: extract -> transform -> quality gate -> load -> reconcile.

They only wire: hooks come from cached properties, the work is in ``conduit.pipeline``, data
moves through staged Parquet files, and XCom carries small summaries (paths, counts, watermark).
Nothing heavy is imported at module level: DAG files import this at parse time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BranchMixIn
from airflow.sdk import BaseOperator

from conduit.crash import crash_point
from conduit.operators.base import LineageReporting, SyncHooks, as_bool
from conduit.pipeline.staging import RunStaging

if TYPE_CHECKING:
    from airflow.sdk import Context

    from conduit.specs.model import SyncSpec


class SyncStepOperator(SyncHooks, LineageReporting, BaseOperator):
    """Common wiring of the sync's operators: the spec, the run's staging area, the ERP hook."""

    template_fields: Sequence[str] = ("full_refresh", "dry_run")
    ui_color = "#e8f4fd"

    def __init__(self, *, spec: SyncSpec, full_refresh: Any = False, dry_run: Any = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.full_refresh = full_refresh
        self.dry_run = dry_run

    def dataset(self, which: str):
        """The OpenLineage dataset of the CRM object, a staged stage, or the ERP table."""
        from conduit.lineage import openlineage as ol
        from conduit.pipeline.staging import staging_host, staging_root

        if which == "crm":
            return self.source.dataset()
        if which in ("raw", "mapped"):
            return ol.staged_dataset(staging_host(), str(staging_root()), self.spec, which)
        return ol.erp_dataset(self.erp_hook.describe(), *self.spec.target.location)

    def staging(self, context: Context) -> RunStaging:
        return RunStaging.for_run(self.dag_id, context["run_id"])

    def deletes_missing(self) -> bool:
        """Whether this run's load deletes what it did not read: a full refresh, or the periodic
        full read ``plan_extract`` decided on (operators that take ``extract_plan``)."""
        return as_bool(self.full_refresh) or bool(self.extract_plan[0].get("delete_missing", False))



class CrmExtractPlanOperator(SyncStepOperator):
    """Decides what this run reads: the changed records since the ERP's watermark (minus an overlap)
    or, without a watermark / on full refresh, everything — split into id ranges read in parallel —
    plus the archived listing. Returns the work items the mapped ``extract`` tasks run."""

    ui_color = "#ffe8cc"

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from conduit.pipeline import steps
        from conduit.pipeline.run_plan import plan_run, watermark_to_go_by

        crash_point("plan_extract.start")
        target = self.erp_hook.get_target()
        target.ensure_ready(self.spec)
        dag_run = context["dag_run"]
        run = plan_run(self.spec, stored_watermark_ms=watermark_to_go_by(target, self.spec, self.log),
                       run_start_ms=int(time.time() * 1000), full_refresh=as_bool(self.full_refresh),
                       scheduled_run_after=dag_run.run_after if dag_run.run_type == "scheduled" else None)
        staging = self.staging(context)
        staging.reset("raw")
        staging.reset("archived")
        self._sweep_stale_runs(staging)
        # the items carry delete_missing: the load deletes what a full refresh or the periodic full read did not see
        items = steps.plan_extract(self.source, run, parallelism=self.spec.source.parallelism,
                                   object_ids=steps.webhook_object_ids(context.get("triggering_asset_events")))
        self.log.info("extract plan (%s): %s", run.reason, items)
        crash_point("plan_extract.end")
        return items


    def _sweep_stale_runs(self, staging: RunStaging) -> None:
        from conduit.pipeline.staging import staging_retention_s, sweep_stale_runs

        retention = staging_retention_s()
        if retention is None:
            return
        removed = sweep_stale_runs(staging.root.parent, keep=staging.root.name, older_than_s=retention,
                                   now=time.time())
        if removed:
            self.log.info("removed the staged CRM records of %d runs unwritten for %.0f days: %s",
                          len(removed), retention / 86_400, ", ".join(removed))


class CrmExtractOperator(SyncStepOperator):
    """Runs one extract work item (a window, an id range, or the archived listing) into staged
    Parquet parts; mapped over the plan's items, so ranges are read in parallel."""

    template_fields: Sequence[str] = (*SyncStepOperator.template_fields, "item")
    ui_color = "#ffe8cc"

    def __init__(self, *, item: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.item = item

    def lineage(self, summary):
        from conduit.lineage.openlineage import extract_lineage

        return extract_lineage(self.spec, self.dataset("crm"), self.dataset("raw"), row_count=summary.get("rows"))

    def execute(self, context: Context) -> dict[str, Any]:
        from conduit.pipeline import steps

        crash_point("extract.start")
        self.summary = steps.extract_item(self.source, self.staging(context), self.item, logger=self.log)
        self.log.info("extracted %s", self.summary)
        crash_point("extract.end")
        return self.summary


class MappingTransformOperator(SyncStepOperator):
    """Maps raw CRM records to ERP columns (pure pandas transforms from the spec)."""

    ui_color = "#fff3bf"

    def lineage(self, summary):
        from conduit.lineage.openlineage import transform_lineage

        return transform_lineage(self.spec, self.dataset("raw"), self.dataset("mapped"),
                                 row_count=summary.get("mapped"))

    def execute(self, context: Context) -> dict[str, int]:
        from conduit.pipeline import steps

        crash_point("transform.start")
        self.summary = steps.transform(self.spec, self.staging(context))
        self.log.info("mapped %s", self.summary)
        crash_point("transform.end")
        return self.summary


class ErpPlanOperator(SyncStepOperator, BranchMixIn):
    """Computes what the load would change (:func:`conduit.pipeline.steps.plan`: the load, run and
    rolled back) and shows it: the log as a table, XCom ``plan`` (counts, samples, the ERP
    checksum), and ``plan.json`` beside the staged files. Then branches: nowhere with
    ``plan_only``; to ``approve_plan`` when the spec's thresholds are exceeded (not in a dry run,
    which commits nothing); else to ``load``."""

    template_fields: Sequence[str] = (*SyncStepOperator.template_fields, "extract_plan", "plan_only")
    inherits_from_skipmixin = True
    ui_color = "#fff0f6"

    def __init__(self, *, extract_plan: Any, plan_only: Any = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.extract_plan = extract_plan
        self.plan_only = plan_only

    def execute(self, context: Context) -> Any:
        import json

        from conduit.pipeline import steps
        from conduit.pipeline.plan import approval_markdown, approval_reason, plan_lines, plan_summary

        crash_point("plan.start")
        staging = self.staging(context)
        approval = self.spec.approval
        plan = steps.plan(self.erp_hook.get_target(), self.spec, staging, run_id=context["run_id"],
                          full_refresh=self.deletes_missing(),
                          sample_rows=approval.sample_rows if approval else 5)
        reason = approval_reason(plan, approval)
        summary = plan_summary(plan, reason)
        if reason:
            summary["approval_markdown"] = approval_markdown(plan, reason, self.spec.target.key)
        self.log.info("%s", "\n".join(plan_lines(plan, rejected=steps.read_rejected(staging).records)))
        (staging.root / "plan.json").write_text(json.dumps(summary, indent=2, default=str))
        context["ti"].xcom_push(key="plan", value=summary)
        self.summary = summary
        crash_point("plan.end")
        if as_bool(self.plan_only):
            self.log.info("plan_only: nothing is loaded")
            return self.do_branch(context, None)
        if reason and as_bool(self.dry_run):
            # a dry run commits nothing, so there is nothing to approve: asking would only block it
            self.log.warning("the plan would need a person's approval (%s); a dry run asks nobody", reason)
            return self.do_branch(context, "load")
        if reason:
            self.log.warning("the plan needs a person's approval: %s", reason)
        return self.do_branch(context, "approve_plan" if reason else "load")


class PlanRejectedOperator(SyncStepOperator):
    """The approval said no (or nobody answered in time): nothing was loaded, the watermark stays,
    the next run plans again."""

    ui_color = "#ffc9c9"

    def execute(self, context: Context) -> None:
        from conduit.exceptions import PlanRejected

        raise PlanRejected(f"{self.spec.name}: the plan was rejected (or not approved within "
                           f"{self.spec.approval.timeout}); nothing changed, the watermark stays")


class ErpUpsertOperator(SyncStepOperator):
    """Upserts mapped rows, applies deletes and moves the watermark, all in one ERP transaction."""

    template_fields: Sequence[str] = (*SyncStepOperator.template_fields, "extract_plan", "load_plan")
    ui_color = "#d3f9d8"

    def __init__(self, *, extract_plan: Any, load_plan: Any = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.extract_plan = extract_plan
        self.load_plan = load_plan

    def execute(self, context: Context) -> dict[str, Any]:
        from dataclasses import asdict

        from conduit.pipeline import steps
        from conduit.targets.base import LoadPlan

        crash_point("load.start")
        # an approved plan is applied exactly or not at all; an unattended one only informs
        approved = self.load_plan if isinstance(self.load_plan, dict) and self.load_plan.get("needs_approval") else None
        result = steps.load(
            self.erp_hook.get_target(), self.spec, self.staging(context), run_id=context["run_id"],
            watermark_ms=self.extract_plan[0]["watermark_ms"],
            full_refresh=self.deletes_missing(),
            dry_run=as_bool(self.dry_run), expected=LoadPlan.from_dict(approved) if approved else None,
        )
        summary = {**asdict(result), "dry_run": as_bool(self.dry_run),
                   "watermark_ms": self.extract_plan[0]["watermark_ms"]}
        self.log.info("loaded %s", summary)
        changed = result.changed
        if not changed and not summary["dry_run"] and context["ti"].try_number > 1:
            # A try killed after its load committed leaves the retry nothing to change, yet the
            # table did change in this run: downstream DAGs must still hear of it (once more is harmless).
            target = self.erp_hook.get_target()
            if target.state.last_load_run_id(self.spec) == context["run_id"]:
                summary["committed_by_an_earlier_try"] = changed = True
        if changed and not summary["dry_run"]:
            from conduit.lineage.assets import erp_changes_alias, erp_table_asset

            context["outlet_events"][erp_changes_alias(self.spec)].add(
                erp_table_asset(self.spec), extra={**summary, "sync": self.spec.name, "run_id": context["run_id"]})
        self.summary = summary
        crash_point("load.end")
        return summary

    def lineage(self, summary):
        from conduit.lineage.openlineage import load_lineage
        from conduit.targets.sql_render import BOOKKEEPING_COLUMNS

        written = summary.get("inserted", 0) + summary.get("updated", 0) if summary else None
        if summary and summary.get("dry_run"):
            written = 0  # rolled back: its counts say what a real load would write, not what this one wrote
        return load_lineage(self.spec, self.dataset("crm"), self.dataset("mapped"), self.dataset("erp"),
                            audit_columns={c.name: c.dtype for c in BOOKKEEPING_COLUMNS}, row_count=written)


class QualityGateOperator(SyncStepOperator):
    """Runs the spec's expectation suite on the mapped rows. Under ``block`` any failure stops the
    run; under ``quarantine`` failing rows are parked with their reasons and the rest loads (unless
    too many fail); ``warn`` only reports. A failed gate raises ``QualityGateFailed`` (no retry).
    With ``dry_run`` or ``plan_only`` it decides and reports but parks nothing and records no defect."""

    template_fields: Sequence[str] = (*SyncStepOperator.template_fields, "extract_plan", "plan_only")
    ui_color = "#ffd8d8"

    def __init__(self, *, extract_plan: Any, suite_path: str, plan_only: Any = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.extract_plan = extract_plan
        self.suite_path = suite_path
        self.plan_only = plan_only

    def execute(self, context: Context) -> dict[str, Any]:
        from conduit.exceptions import QualityGateFailed
        from conduit.pipeline import steps
        from conduit.quality.summary import summary_lines, to_ol_assertions

        crash_point("quality_gate.start")
        report, decision, summary = steps.gate(
            self.erp_hook.get_target(), self.spec, self.staging(context), self.suite_path,
            run_id=context["run_id"], full_extract=self.extract_plan[0]["mode"] == "full",
            dry_run=as_bool(self.dry_run) or as_bool(self.plan_only),  # either changes nothing, quarantine included
            deletes_missing=self.deletes_missing(),
        )
        self.log.info("quality gate %s\n%s", self.spec.quality.suite, "\n".join(summary_lines(report)))
        # per expectation (a dozen small entries): lineage's assertions and the sync health page read them
        self.summary = {**summary, "assertions": to_ol_assertions(report)}
        if not decision.load:
            raise QualityGateFailed(f"{decision.reason}\n" + "\n".join(summary_lines(report)))
        crash_point("quality_gate.end")
        return self.summary

    def lineage(self, summary):
        from conduit.lineage.openlineage import gate_lineage

        return gate_lineage(self.dataset("mapped"), summary.get("assertions"))


class DataDocsOperator(SyncStepOperator):
    """Great Expectations' own validation and Data Docs for the run. GX takes ~6-10 s and ~110 MiB
    to import, so this runs beside the gate, only when there is something to show (a failed
    expectation, rejected rows, defects: ``steps.data_docs``), and a run that changed no rows
    returns before any import; it reports and never blocks (the gate decides): a site it cannot
    write is a warning and an ``error`` in its summary, and reconcile still checks the load."""

    ui_color = "#f3f0ff"

    def __init__(self, *, suite_path: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.suite_path = suite_path

    def execute(self, context: Context) -> dict[str, Any]:
        import logging

        from conduit.pipeline import steps
        from conduit.pipeline.staging import data_docs_root

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        out_dir = data_docs_root() / self.dag_id / RunStaging.for_run(self.dag_id, context["run_id"]).root.name
        try:
            report, validation = steps.data_docs(self.spec, self.staging(context), self.suite_path, out_dir,
                                                 run_name=context["run_id"])
        except Exception as exc:  # noqa: BLE001 - a report: failing here would keep reconcile from checking the load
            self.log.warning("Data Docs not written (the gate decided; the run goes on): %s", exc, exc_info=True)
            return {"data_docs": None, "rows_validated": 0, "error": f"{type(exc).__name__}: {exc}",
                    "reason": "Data Docs could not be written"}
        if validation is None:
            reason = ("no rows changed in this run" if report is None else
                      f"nothing to show: {report.row_count} rows broke no expectation and no defect rule")
            return {"data_docs": None, "rows_validated": 0, "reason": reason}
        summary = {"data_docs": str(validation.index_html), "success": bool(validation.result.success),
                   "rows_validated": validation.rows_validated, "sampled": validation.sampled}
        self.log.info("Data Docs: %s", summary)
        return summary


class ReconcileOperator(SyncStepOperator):
    """Checks the ERP against what was loaded and against the CRM's counts; fails loudly on a gap.
    Removes the run's staged files once the ERP is confirmed (dry runs reconcile nothing)."""

    template_fields: Sequence[str] = (*SyncStepOperator.template_fields, "extract_plan")
    ui_color = "#e6fcf5"

    def __init__(self, *, extract_plan: Any, keep_staging: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.extract_plan = extract_plan
        self.keep_staging = keep_staging

    def lineage(self, summary):
        from conduit.lineage.openlineage import reconcile_lineage

        checks = [{"assertion": name, "success": summary.get(name) == 0}
                  for name in ("staged_mismatched", "missing_in_erp") if name in summary]
        if "key_checksum_match" in summary:
            checks.append({"assertion": "key_checksum_match", "success": bool(summary["key_checksum_match"])})
        return reconcile_lineage(self.dataset("mapped"), self.dataset("erp"), checks or None)

    def execute(self, context: Context) -> dict[str, Any]:
        from conduit.pipeline import steps

        crash_point("reconcile.start")
        staging = self.staging(context)
        # gone: an earlier try checked the load and removed them (killed before it could report):
        # the CRM and ERP counts are checked again, the staged rows cannot be
        staged = staging.root.is_dir()
        if as_bool(self.dry_run):
            summary = {"skipped": "dry run: the load was rolled back"}
        else:
            summary = steps.reconcile(self.source, self.erp_hook.get_target(), self.spec, staging,
                                      upper_ms=self.extract_plan[0]["watermark_ms"],
                                      full_read=self.extract_plan[0]["mode"] == "full" and staged)
            if not staged:
                summary["staged_files"] = "gone (an earlier try removed them): only the counts were checked"
        self.log.info("reconciled %s", summary)
        self.summary = summary
        crash_point("reconcile.before_staging_removal")
        if not self.keep_staging:
            staging.remove()
        crash_point("reconcile.end")
        return summary
