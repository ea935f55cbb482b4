"""Operators of the revenue ETL. They only wire: the ERP hook comes from a cached property, the
work is in :mod:`conduit.etl.steps` / :mod:`conduit.etl.store`, XCom carries a small summary.
Nothing heavy is imported at module level: the DAG file imports this at parse time.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from conduit.operators.base import LineageReporting, as_bool

if TYPE_CHECKING:
    from datetime import datetime

    from airflow.sdk import Context

    from conduit.etl.hooks import ErpReportingHook
    from conduit.etl.store import RevenueStore
    from conduit.specs.model import SyncSpec


class RevenueStepOperator(LineageReporting, BaseOperator):
    """Common wiring: the sync spec (where the ERP tables are), the ERP hook and store, lineage."""

    ui_color = "#fff0f6"

    def __init__(self, *, spec: SyncSpec, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    @cached_property
    def erp_hook(self) -> ErpReportingHook:
        from conduit.etl.hooks import ErpReportingHook

        return ErpReportingHook(erp_conn_id=self.spec.target.conn_id)

    @cached_property
    def store(self) -> RevenueStore:
        schema, customers = self.spec.target.location
        return self.erp_hook.get_store(schema=schema, customers_table=customers)

    @staticmethod
    def as_of(context: Context) -> datetime:
        """What the run reports as of: its ``run_after`` (set for every run type, fixed per run)."""
        return context["dag_run"].run_after

    def dataset(self, table: str):
        from conduit.lineage import openlineage as ol

        return ol.erp_dataset(self.erp_hook.describe(), self.spec.target.location[0], table)


class SeedOrdersOperator(RevenueStepOperator):
    """Creates the ETL's tables if missing; with ``enabled`` also seeds realistic orders for every
    ERP customer that has none yet (deterministic per ``seed``; existing orders are kept)."""

    template_fields: Sequence[str] = ("enabled", "seed")
    ui_color = "#f8f0fc"

    def __init__(self, *, enabled: Any = False, seed: Any = 7, **kwargs) -> None:
        super().__init__(**kwargs)
        self.enabled = enabled
        self.seed = seed

    def execute(self, context: Context) -> dict[str, Any]:
        enabled = as_bool(self.enabled)
        self.store.ensure_tables()
        summary = {"seeded": False}
        if enabled:
            summary = {"seeded": True, "seed": int(self.seed),
                       **self.store.seed_orders(seed=int(self.seed), as_of=self.as_of(context))}
        self.log.info("orders: %s", summary)
        self.summary = summary
        return summary

    def lineage(self, summary):
        from conduit.etl.lineage import seed_lineage
        from conduit.etl.store import ORDERS_TABLE

        if not summary.get("seeded", as_bool(self.enabled)):  # START: rendered, so known before the work
            return None
        return seed_lineage(self.dataset(self.spec.target.location[1]), self.dataset(ORDERS_TABLE),
                            row_count=summary.get("inserted"))


class CustomerRevenueOperator(RevenueStepOperator):
    """Reads the triggering sync's asset events, joins active ERP customers with their orders,
    computes revenue, order count, first/last order date and segment, gates the rows with the
    expectation suite and replaces the report in one transaction (idempotent per run)."""

    template_fields: Sequence[str] = ("suite",)

    def __init__(self, *, suite: str = "customer_revenue.yaml", **kwargs) -> None:
        super().__init__(**kwargs)
        self.suite = suite

    def execute(self, context: Context) -> dict[str, Any]:
        from conduit.etl.steps import run_revenue_etl
        from conduit.factory import include_dir
        from conduit.lineage.assets import erp_table_asset

        events = [
            {"source_dag_id": e.source_dag_id, "source_run_id": e.source_run_id,
             "timestamp": e.timestamp.isoformat(), "extra": dict(e.extra or {})}
            for e in context["triggering_asset_events"].get(erp_table_asset(self.spec), [])
        ]
        summary = run_revenue_etl(self.store, include_dir() / "expectations" / self.suite,
                                  run_id=context["run_id"], as_of=self.as_of(context), events=events,
                                  logger=self.log)
        self.log.info("customer revenue %s", summary)
        self.summary = summary
        return summary

    def lineage(self, summary):
        from conduit.etl.lineage import revenue_lineage
        from conduit.etl.store import ORDERS_TABLE, REPORT_TABLE

        return revenue_lineage(self.dataset(self.spec.target.location[1]), self.dataset(ORDERS_TABLE),
                               self.dataset(REPORT_TABLE), row_count=summary.get("written"))
