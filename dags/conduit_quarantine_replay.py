"""Conduit quarantine replay: re-read, re-validate and load a sync's quarantined records once the CRM
data or the mapping is fixed (see conduit.pipeline.replay). Triggered by hand, never scheduled."""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from conduit.factory import include_dir
from conduit.lineage.assets import erp_changes_alias
from conduit.operators.replay import QuarantineReplayOperator
from conduit.specs.model import load_specs

SYNCS_DIR = include_dir(__file__) / "syncs"
SPECS = load_specs(SYNCS_DIR)  # a broken spec fails this file too, naming file and field

if SPECS:
    names = sorted(spec.name for spec in SPECS)
    with DAG(
        dag_id="conduit_quarantine_replay",
        description="Replay quarantined CRM records of a sync once the data or the mapping is fixed",
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,  # two replays of one sync never race for the same entries
        default_args={
            "owner": "conduit",
            "retries": 2,
            "retry_delay": timedelta(minutes=1),
            "retry_exponential_backoff": 2.0,
        },
        params={
            "sync": Param(names[0], type="string", enum=names, title="Sync",
                          description="The sync whose open quarantine entries are replayed."),
            "dry_run": Param(False, type="boolean", title="Dry run",
                             description="Re-read, re-validate and load, then roll the ERP transaction back."),
        },
        render_template_as_native_obj=True,
        tags=["conduit", "quality", "quarantine"],
        doc_md=__doc__ + """

Reads the open entries of the chosen sync's `conduit_quarantine` table, re-reads those records from
the CRM by id (archived or deleted ones are reported and stay), maps them with the **current** spec,
re-validates them with its suite and loads those that now pass. Loading and marking the entries
`replayed_at` / `replayed_by_run` is one transaction: a rerun replays nothing twice. Records that
still fail stay in the quarantine; the task's summary and log say why. The sync's watermark does
not move.

While a run of the sync is in flight (waiting for its plan's approval, say), the replay fails at
once naming that run and is not retried: committing now would make the run's approved plan stale.
Trigger it again after the run has ended. A dry run is never refused.
""",
    ) as dag:
        QuarantineReplayOperator(
            task_id="replay",
            sync="{{ params.sync }}",
            dry_run="{{ params.dry_run }}",
            syncs_dir=str(SYNCS_DIR),
            expectations_dir=str(include_dir(__file__) / "expectations"),
            outlets=[erp_changes_alias(spec) for spec in SPECS],
        )
