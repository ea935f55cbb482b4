"""The quarantine replay operator: wires the hooks of the chosen sync to
:func:`conduit.pipeline.replay.replay`. Nothing heavy at module level (DAG files import this)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from conduit.operators.base import LineageReporting, SyncHooks, as_bool

if TYPE_CHECKING:
    from airflow.sdk import Context

    from conduit.specs.model import SyncSpec


class QuarantineReplayOperator(SyncHooks, LineageReporting, BaseOperator):
    """Re-reads the CRM records behind a sync's open quarantine entries, re-maps and re-validates
    them with the sync's current spec and suite, and loads those that now pass; loading and
    closing their entries is one ERP transaction, so nothing is replayed twice. The sync's
    watermark stays where it is. ``sync`` names the spec (read from ``syncs_dir`` when the task
    runs, so a fixed mapping is used); ``dry_run`` rolls the load back."""

    template_fields: Sequence[str] = ("sync", "dry_run")
    ui_color = "#ffe3e3"

    def __init__(self, *, sync: str, syncs_dir: str, expectations_dir: str | None = None, dry_run: Any = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.sync = sync
        self.syncs_dir = syncs_dir
        self.expectations_dir = expectations_dir or str(Path(syncs_dir).parent / "expectations")
        self.dry_run = dry_run

    @cached_property
    def spec(self) -> SyncSpec:
        from airflow.sdk.exceptions import AirflowFailException

        from conduit.exceptions import SpecError
        from conduit.pipeline.replay import select_spec
        from conduit.specs.model import load_specs

        try:
            return select_spec(load_specs(self.syncs_dir), str(self.sync))
        except SpecError as exc:  # retrying cannot fix a spec
            raise AirflowFailException(str(exc)) from exc

    def execute(self, context: Context) -> dict[str, Any]:
        from conduit.pipeline.replay import replay

        spec, target = self.spec, self.erp_hook.get_target()
        summary = replay(self.source, target, spec,
                         Path(self.expectations_dir) / spec.quality.suite if spec.quality else None,
                         run_id=context["run_id"],
                         dry_run=as_bool(self.dry_run), logger=self.log)
        changed = bool(summary["inserted"] + summary["updated"])
        if not changed and not summary["dry_run"] and context["ti"].try_number > 1:
            # A try killed after its load committed closed its entries in that transaction: the retry
            # finds nothing to replay, yet the table did change in this run and downstream DAGs must
            # still hear of it (once more is harmless), as after the sync's load.
            if target.replayed_by(spec, context["run_id"]):
                summary["committed_by_an_earlier_try"] = changed = True
        if changed and not summary["dry_run"]:
            from conduit.lineage.assets import erp_changes_alias, erp_table_asset

            context["outlet_events"][erp_changes_alias(spec)].add(
                erp_table_asset(spec), extra={"sync": spec.name, "run_id": context["run_id"], "replay": True,
                                              "inserted": summary["inserted"], "updated": summary["updated"],
                                              "committed_by_an_earlier_try": "committed_by_an_earlier_try" in summary})
        self.summary = summary
        return summary

    def lineage(self, summary):
        """CRM object -> ERP table, with the column lineage of the spec (what a replay writes)."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        from conduit.lineage import openlineage as ol
        from conduit.targets.sql_render import BOOKKEEPING_COLUMNS

        spec = self.spec
        crm = self.source.dataset()
        erp = ol.erp_dataset(self.erp_hook.describe(), *spec.target.location)
        audit = {c.name: c.dtype for c in BOOKKEEPING_COLUMNS}
        written = summary.get("inserted", 0) + summary.get("updated", 0) if summary else None
        return OperatorLineage(
            inputs=[ol.input_dataset(crm, {"schema": ol.crm_schema_facet(spec)})],
            outputs=[ol.output_dataset(erp, {"schema": ol.erp_schema_facet(spec, audit),
                                             "columnLineage": ol.column_lineage_facet(spec, crm)},
                                       row_count=written)],
        )
