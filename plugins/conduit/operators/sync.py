"""Operators of a sync: extract -> transform -> quality gate -> load -> reconcile.

They only wire: hooks come from cached properties, the work is in ``conduit.pipeline``, data
moves through staged Parquet files, and XCom carries small summaries (paths, counts, watermark).
Nothing heavy is imported at module level: DAG files import this at parse time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from conduit.pipeline.staging import RunStaging

if TYPE_CHECKING:
    from airflow.sdk import Context

    from conduit.hooks.erp import ErpHook
    from conduit.hooks.hubspot import HubSpotHook
    from conduit.specs.model import SyncSpec


class SyncStepOperator(BaseOperator):
    """Common wiring of the sync's operators: the spec, the run's staging area, the ERP hook."""

    template_fields: Sequence[str] = ("full_refresh", "dry_run")
    ui_color = "#e8f4fd"

    def __init__(self, *, spec: SyncSpec, full_refresh: Any = False, dry_run: Any = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.full_refresh = full_refresh
        self.dry_run = dry_run

    @cached_property
    def erp_hook(self) -> ErpHook:
        from conduit.hooks.erp import ErpHook

        return ErpHook(erp_conn_id=self.spec.target.conn_id)

    def staging(self, context: Context) -> RunStaging:
        return RunStaging.for_run(self.dag_id, context["run_id"])

    @staticmethod
    def flag(value: Any) -> bool:
        """Params arrive as booleans with native rendering, or as text from older run confs."""
        return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes", "on")


class CrmExtractOperator(SyncStepOperator):
    """Reads changed (or, without a watermark / on full refresh, all) CRM records into raw Parquet parts."""

    ui_color = "#ffe8cc"

    @cached_property
    def crm_hook(self) -> HubSpotHook:
        from conduit.hooks.hubspot import HubSpotHook

        return HubSpotHook(hubspot_conn_id=self.spec.source.conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        from conduit.pipeline import steps
        from conduit.pipeline.cursor import incremental_window

        cursor = self.spec.source.cursor
        target = self.erp_hook.get_target()
        target.ensure_ready(self.spec)
        watermark = None if self.flag(self.full_refresh) else target.read_watermark(self.spec.name)
        run_start_ms = int(time.time() * 1000)
        window = incremental_window(watermark.ts_ms if watermark else None, run_start_ms,
                                    lag_seconds=cursor.lag_seconds, overlap_seconds=cursor.overlap_seconds)
        staging = self.staging(context)
        summary = steps.extract(self.crm_hook, self.spec, staging, window=window, logger=self.log)
        summary["watermark_ms"] = window.upper_ms if window else run_start_ms - cursor.lag_seconds * 1000
        summary["staging"] = str(staging.root)
        self.log.info("extracted %s", summary)
        return summary


class MappingTransformOperator(SyncStepOperator):
    """Maps raw CRM records to ERP columns (pure pandas transforms from the spec)."""

    ui_color = "#fff3bf"

    def execute(self, context: Context) -> dict[str, int]:
        from conduit.pipeline import steps

        counts = steps.transform(self.spec, self.staging(context))
        self.log.info("mapped %s", counts)
        return counts


class ErpUpsertOperator(SyncStepOperator):
    """Upserts mapped rows, applies deletes and moves the watermark, all in one ERP transaction."""

    template_fields: Sequence[str] = (*SyncStepOperator.template_fields, "extract_summary", "gate_summary")
    ui_color = "#d3f9d8"

    def __init__(self, *, extract_summary: Any, gate_summary: Any = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.extract_summary = extract_summary
        self.gate_summary = gate_summary

    def execute(self, context: Context) -> dict[str, Any]:
        from conduit.pipeline import steps

        rejected = frozenset((self.gate_summary or {}).get("rejected_keys", ()))
        result = steps.load(
            self.erp_hook.get_target(), self.spec, self.staging(context), run_id=context["run_id"],
            watermark_ms=self.extract_summary["watermark_ms"], full_refresh=self.flag(self.full_refresh),
            dry_run=self.flag(self.dry_run), rejected_keys=rejected,
        )
        summary = {**result.as_dict(), "dry_run": self.flag(self.dry_run), "rejected": len(rejected),
                   "watermark_ms": self.extract_summary["watermark_ms"]}
        self.log.info("loaded %s", summary)
        return summary
