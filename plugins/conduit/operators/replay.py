"""The quarantine replay operator: wires the hooks of the chosen sync to
:func:`conduit.pipeline.replay.replay`. Nothing heavy at module level (DAG files import this)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from conduit.operators.base import LineageReporting, SyncHooks, as_bool

if TYPE_CHECKING:
    from airflow.sdk import Context

    from conduit.specs.model import SyncSpec


FINISHED_TI_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
NAMED_RUNS_AT_MOST = 5
"""Runs of the sync whose state is looked up to name the one in flight (the count comes first)."""


def sync_runs_in_flight(ti: Any, dag_id: str) -> list[str]:
    """The runs of the sync DAG ``dag_id`` that are running, through the Task SDK (a task reads no
    metadata DB): their run ids, or ``"N running run(s)"`` when the ids cannot be told. Only the
    count is asked for when nothing runs, the usual case."""
    running = ti.get_dr_count(dag_id=dag_id, states=["running"])
    if not running:
        return []
    # a run in flight has not finished its last task (reconcile); confirm the few candidates' state
    states = ti.get_task_states(dag_id=dag_id, task_ids=["reconcile"])
    candidates = [run_id for run_id, tasks in states.items()
                  if _value(tasks.get("reconcile")) not in FINISHED_TI_STATES][:NAMED_RUNS_AT_MOST]
    named = [run_id for run_id in candidates
             if _value(ti.get_dagrun_state(dag_id=dag_id, run_id=run_id)) == "running"]
    return named or [f"{running} running run{'s' if running > 1 else ''} of DAG {dag_id}"]


def _value(state: Any) -> Any:
    """A state as its text: the SDK hands a run's state as an Enum whose ``str()`` is its name."""
    return getattr(state, "value", state)


class QuarantineReplayOperator(SyncHooks, LineageReporting, BaseOperator):
    """Re-reads the CRM records behind a sync's open quarantine entries, re-maps and re-validates
    them with the sync's current spec and suite, and loads those that now pass; loading and
    closing their entries is one ERP transaction, so nothing is replayed twice. The sync's
    watermark stays where it is. ``sync`` names the spec (read from ``syncs_dir`` when the task
    runs, so a fixed mapping is used); ``dry_run`` rolls the load back.

    While a run of the sync is in flight (its DAG, named like the spec, has a running run), a replay
    that would commit fails at once naming that run (``SyncRunInFlight``, no retry): committing
    would make the run's approved plan stale, and the run may wait hours for its approval, too
    long to hold a worker slot. Trigger the replay again after the run."""

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
        ti = context["ti"]
        runs_in_flight = None
        if hasattr(ti, "get_dr_count"):  # Airflow's task instance asks the API server
            runs_in_flight = partial(sync_runs_in_flight, ti, spec.name)
        else:  # a partial context (a test driving execute itself) cannot tell
            self.log.warning("not checking for a run of %s in flight: the task instance cannot ask Airflow",
                             spec.name)
        summary = replay(self.source, target, spec,
                         Path(self.expectations_dir) / spec.quality.suite if spec.quality else None,
                         run_id=context["run_id"],
                         dry_run=as_bool(self.dry_run), logger=self.log, runs_in_flight=runs_in_flight)
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
